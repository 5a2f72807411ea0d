"""Crashes and signals on both stores: the delivery guarantee under kill -9, SIGSTOP and shutdown.

Workers run as real ``queuectl worker start`` processes; the test reads the store in-process.
Jobs write ``PID TOKEN`` lines (their ``$$``/``$!`` and ``$QUEUECTL_CLAIM_TOKEN``) to a ``pids``
file, so that "no process of that attempt is left" can be checked by pid *and* token: a pid reused
by an unrelated process never carries the token.

Kill points inside the worker are hit with the test-only hook ``QUEUECTL_TEST_CRASH_AT`` (see
``queuectl/testing.py``); "while the job runs" needs no hook: the job runs ``kill -9 $PPID`` (the
job's shell is a direct child of the worker).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from helpers import DEADLINE, lines, pid_alive, queuectl_env, run_queuectl, wait_for

from queuectl import Queue
from queuectl.config import is_postgres_target, sqlite_path
from queuectl.models import JobState
from queuectl.worker.orphans import kill_orphans, processes_with_token
from queuectl.worker.pool import KILL_GRACE
from queuectl.worker.upkeep import WORKER_LOST

FAST = {"backoff_base": "1", "backoff_max": "0.01", "poll_interval": "0.05"}
LEASE = 1.0
CRASH_ENV = "QUEUECTL_TEST_CRASH_AT"

#: Shell snippets; ``{d}`` is the job's own directory.
RECORD = 'echo "$$ $QUEUECTL_CLAIM_TOKEN" >> {d}/pids'
BACKGROUND = 'sleep 300 & echo "$! $QUEUECTL_CLAIM_TOKEN" >> {d}/pids'
#: Run at the start of a re-run: lists in ``alive`` every process of an earlier attempt still running.
CHECK_EARLIER = (
    'while read -r p t; do if [ "$t" != "$QUEUECTL_CLAIM_TOKEN" ] && tr "\\0" "\\n" < /proc/$p/environ'
    ' 2>/dev/null | grep -qx "QUEUECTL_CLAIM_TOKEN=$t"; then echo "$p" >> {d}/alive; fi; done < {d}/pids'
)


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
async def queue(store_target: str) -> AsyncIterator[Queue]:
    """The store, opened in the test process for set-up and reads, with fast retries and polling."""
    async with await Queue.open(store_target) as opened:
        for key, value in FAST.items():
            await opened.set_setting(key, value)
        yield opened


class Processes:
    """Workers started by a test, and whatever their jobs left behind, killed at teardown."""

    def __init__(self, target: str, root: Path) -> None:
        self.target = target
        self.root = root
        self.started: list[subprocess.Popen[str]] = []

    def worker(
        self, *args: str, log: Path | None = None, crash_at: str | None = None
    ) -> subprocess.Popen[str]:
        """``queuectl worker start ARGS``; ``crash_at``: a ``QUEUECTL_TEST_CRASH_AT`` point for it."""
        env = queuectl_env(self.target)
        env.pop(CRASH_ENV, None)
        if crash_at is not None:
            env[CRASH_ENV] = crash_at
        with open(log or os.devnull, "w") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "queuectl", "worker", "start", *args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                text=True,
            )
        self.started.append(process)
        return process

    def cleanup(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait(DEADLINE)
        for pids in self.root.rglob("pids"):
            for token in {line.split()[1] for line in pids.read_text().splitlines() if " " in line}:
                kill_orphans(token)


@pytest.fixture
def processes(store_target: str, tmp_path: Path) -> Iterator[Processes]:
    started = Processes(store_target, tmp_path)
    try:
        yield started
    finally:
        started.cleanup()


async def until(check: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = DEADLINE) -> None:
    """Wait for ``check`` (sync or async) with a deadline."""

    async def ready() -> bool:
        result = check()
        return result if isinstance(result, bool) else await result

    await wait_for(ready, timeout, what)


async def exit_code(process: subprocess.Popen[str], timeout: float = DEADLINE) -> int:
    await until(lambda: process.poll() is not None, f"worker {process.pid} to exit", timeout)
    return process.returncode


def job_dir(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir()
    return path


def attempts_of(directory: Path) -> list[tuple[int, str]]:
    """The ``(pid, token)`` lines the job's attempts wrote."""
    return [(int(pid), token) for pid, token in (line.split() for line in read_lines(directory / "pids"))]


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def has_lines(path: Path, count: int) -> Callable[[], bool]:
    return lambda: len(read_lines(path)) == count


def none_left(directory: Path) -> bool:
    """No process the job recorded is alive, and none carries one of its tokens."""
    recorded = attempts_of(directory)
    return not any(pid_alive(pid) for pid, _ in recorded) and not any(
        processes_with_token(token) for token in {token for _, token in recorded}
    )


async def lapsed(queue: Queue, job_id: str) -> bool:
    return job_id in {claim.job.id for claim in await queue.store.lapsed_claims()}


# --- kill -9 at each point of a job's life ----------------------------------------------------

#: What the first attempt does after ``RECORD``, by where its worker dies.
FIRST_ATTEMPT = {
    "claimed": ":",  # never reached: the worker dies before the spawn
    "spawned": f"{BACKGROUND}; wait",  # left running, orphaned, when its worker dies
    "running": f"{BACKGROUND}; kill -9 $PPID; wait",  # the job kills its own worker
    "exited": 'sleep 300 >/dev/null 2>&1 & echo "$! $QUEUECTL_CLAIM_TOKEN" >> {d}/pids',  # exits 0
}
#: Lines the first attempt writes to ``pids`` before its worker is dead and the job left to lapse.
FIRST_PIDS = {"claimed": 0, "spawned": 2, "running": 2, "exited": 2}
#: How many attempts ran to the end (exit 0) by the time the job is completed.
RUNS = {"claimed": 1, "spawned": 1, "running": 1, "exited": 2}


def crash_command(d: Path, point: str) -> str:
    first = FIRST_ATTEMPT[point].format(d=d)
    return (
        f"{RECORD}; if [ ! -e {d}/first ]; then touch {d}/first; {first}; fi;"
        f" {CHECK_EARLIER}; echo done >> {d}/runs; echo ok"
    ).format(d=d)


async def test_kill_9_at_each_point_of_a_job_life(queue: Queue, processes: Processes, tmp_path: Path) -> None:
    """The job is never lost nor completed by the crashed attempt; it runs again after the lease,
    once nothing of the lost attempt runs any more, and ends completed with two attempts."""
    await queue.set_setting("lease", str(LEASE))
    dirs = {point: job_dir(tmp_path, point) for point in FIRST_ATTEMPT}
    jobs = {
        point: (await queue.enqueue(command=crash_command(d, point), queue=point, id=f"crash-{point}")).id
        for point, d in dirs.items()
    }
    # One victim per point, in parallel: each takes only its own queue.
    victims = {
        point: processes.worker("--queue", point, crash_at=None if point == "running" else point)
        for point in FIRST_ATTEMPT
    }
    for point, victim in victims.items():
        assert await exit_code(victim) == -signal.SIGKILL, point
    first_started: dict[str, float] = {}
    for point, job_id in jobs.items():
        await until(has_lines(dirs[point] / "pids", FIRST_PIDS[point]), f"{point}: the first attempt's pids")
        job = await queue.get(job_id)
        assert (job.state, job.attempts) == (JobState.PROCESSING, 1), point  # not lost, not completed
        assert job.started_at is not None
        first_started[point] = job.started_at.timestamp()
        if point in ("spawned", "running"):  # the orphaned attempt still runs: the re-run must end it
            assert all(pid_alive(pid) for pid, _ in attempts_of(dirs[point])), point

    rescuer = processes.worker("--drain", "--quiet")
    assert await exit_code(rescuer) == 0

    for point, job_id in jobs.items():
        d = dirs[point]
        job = await queue.get(job_id)
        assert (job.state, job.attempts, job.exit_code, job.last_error) == (JobState.COMPLETED, 2, 0, None), (
            point
        )
        assert job.stdout == b"ok\n", point
        assert job.started_at is not None and job.started_at.timestamp() - first_started[point] >= LEASE, (
            point
        )
        assert read_lines(d / "runs") == ["done"] * RUNS[point], point
        assert read_lines(d / "alive") == [], f"{point}: the re-run found the lost attempt still running"
        await until(partial(none_left, d), f"{point}: no process of the job left")


# --- a frozen worker --------------------------------------------------------------------------


async def test_frozen_worker_kills_its_own_job_when_it_wakes_past_its_lease(
    queue: Queue, processes: Processes, tmp_path: Path
) -> None:
    """SIGSTOP past the lease, SIGCONT: the worker kills the job it could not renew (no other worker
    is there to do it), then runs it again; the job completes exactly once."""
    await queue.set_setting("lease", str(LEASE))
    d = job_dir(tmp_path, "job")
    command = (
        f"{RECORD}; if [ ! -e {d}/first ]; then touch {d}/first; {BACKGROUND}; wait; fi;"
        f" {CHECK_EARLIER}; echo done >> {d}/runs"
    ).format(d=d)
    job_id = (await queue.enqueue(command=command)).id
    log = tmp_path / "worker.log"
    worker = processes.worker(log=log)
    await until(lambda: len(read_lines(d / "pids")) == 2, "the first attempt to start")
    [(shell, token), (child, _)] = attempts_of(d)

    worker.send_signal(signal.SIGSTOP)
    await until(lambda: lapsed(queue, job_id), "the frozen worker's lease to lapse")
    assert pid_alive(shell) and pid_alive(child)  # the job ran on while its worker was frozen
    worker.send_signal(signal.SIGCONT)

    await until(lambda: not processes_with_token(token), "the woken worker to kill its job")
    job = await queue.wait_for(job_id, timeout=DEADLINE)
    assert (job.state, job.attempts) == (JobState.COMPLETED, 2)
    assert read_lines(d / "runs") == ["done"]  # the first attempt never finished
    assert read_lines(d / "alive") == []
    assert f"killed {job_id}: its lease was lost" in log.read_text()
    worker.send_signal(signal.SIGTERM)
    assert await exit_code(worker) == 0
    assert none_left(d)


async def test_frozen_worker_late_result_is_refused(
    queue: Queue, processes: Processes, tmp_path: Path
) -> None:
    """The worker freezes (SIGSTOP by the hook) after its job exited 0 and before writing the result;
    past its lease another worker takes the job back and completes it; thawed, the frozen worker
    offers its success late, and the store refuses it."""
    await queue.set_setting("lease", str(LEASE))
    d = job_dir(tmp_path, "job")
    command = (
        f"{RECORD}; if [ ! -e {d}/first ]; then touch {d}/first; echo attempt-1; else echo attempt-2; fi;"
        f" echo done >> {d}/runs"
    ).format(d=d)
    job_id = (await queue.enqueue(command=command)).id
    log = tmp_path / "frozen.log"
    frozen = processes.worker(log=log, crash_at="exited:SIGSTOP")
    await until(lambda: stopped(frozen.pid), "the worker to freeze between the job's exit and its result")
    await until(lambda: lapsed(queue, job_id), "the frozen worker's lease to lapse")
    assert (await queue.get(job_id)).state is JobState.PROCESSING
    rescuer = processes.worker("--drain", "--quiet")
    assert await exit_code(rescuer) == 0
    done = await queue.get(job_id)
    assert (done.state, done.attempts, done.stdout) == (JobState.COMPLETED, 2, b"attempt-2\n")

    frozen.send_signal(signal.SIGCONT)
    await until(lambda: f"result of {job_id} discarded" in log.read_text(), "the late result to be refused")
    frozen.send_signal(signal.SIGTERM)
    assert await exit_code(frozen) == 0
    assert await queue.get(job_id) == done  # not a field changed
    assert read_lines(d / "runs") == ["done", "done"]  # the lost result's run, the re-run, no third


def stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


# --- a command that kills its worker ----------------------------------------------------------


@pytest.mark.slow
async def test_command_that_kills_its_worker_ends_in_the_dlq(
    queue: Queue, processes: Processes, tmp_path: Path
) -> None:
    """Each lost attempt counts: ``max_retries + 1`` workers die, then the job is dead, not looping."""
    await queue.set_setting("lease", str(LEASE))
    runs = tmp_path / "runs"
    job_id = (await queue.enqueue(command=f"echo run >> {runs}; kill -9 $PPID", max_retries=2)).id
    codes = []
    for _ in range(2 + 3):  # bounded: a loop forever would be the bug
        codes.append(await exit_code(processes.worker("--drain", "--quiet")))
        if (await queue.get(job_id)).state is JobState.DEAD:
            break
    job = await queue.get(job_id)
    assert (job.state, job.attempts, job.last_error) == (JobState.DEAD, 3, WORKER_LOST)
    assert lines(runs) == ["run"] * 3
    # Three workers killed by the job; the fourth buried it and, nothing left to do, exited 0.
    assert codes == [-signal.SIGKILL] * 3 + [0]


# --- stopping -----------------------------------------------------------------------------------


@pytest.mark.parametrize("way", ["sigterm", "sigint-twice", "worker-stop"])
async def test_stop_finishes_the_short_job_puts_the_long_one_back_and_leaves_no_process(
    queue: Queue, processes: Processes, tmp_path: Path, store_target: str, way: str
) -> None:
    """Beyond tests/test_worker_process.py: a grandchild in the long job, a long job that ignores
    SIGTERM (sigterm: SIGKILL after the kill grace), and no process of either job left."""
    short_dir, long_dir = job_dir(tmp_path, "short"), job_dir(tmp_path, "long")
    release = tmp_path / "release"
    short = f"{RECORD}; while [ ! -e {release} ]; do sleep 0.02; done; echo short-done".format(d=short_dir)
    ignore_term = "trap '' TERM; " if way == "sigterm" else ""
    long = f"{RECORD}; {ignore_term}{BACKGROUND}; wait".format(d=long_dir)
    short_id = (await queue.enqueue(command=short, priority=5)).id
    long_id = (await queue.enqueue(command=long)).id
    grace = 600.0 if way == "sigint-twice" else 1.0
    log = tmp_path / "worker.log"
    worker = processes.worker("--count", "2", "--grace", str(grace), log=log)
    await until(
        lambda: len(read_lines(short_dir / "pids")) == 1 and len(read_lines(long_dir / "pids")) == 2,
        "both jobs to start",
    )
    assert (await queue.get(long_id)).attempts == 1

    if way == "sigterm":
        stopped_at = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        release.touch()
    elif way == "sigint-twice":
        worker.send_signal(signal.SIGINT)
        release.touch()
        await until(lambda: short_done(queue, short_id), "the short job to finish within the grace")
        stopped_at = time.monotonic()
        worker.send_signal(signal.SIGINT)  # ends the grace at once
    else:
        assert run_queuectl(store_target, "worker", "stop").returncode == 0
        await until(lambda: "stop requested" in log.read_text(), "the worker to see the stop request")
        stopped_at = time.monotonic()
        release.touch()

    assert await exit_code(worker) == 0
    elapsed = time.monotonic() - stopped_at
    if way == "sigterm":  # the grace, then SIGTERM (ignored), then SIGKILL after the kill grace
        assert elapsed >= grace + KILL_GRACE
    done = await queue.get(short_id)
    assert (done.state, done.stdout) == (JobState.COMPLETED, b"short-done\n")
    back = await queue.get(long_id)
    assert (back.state, back.attempts) == (JobState.PENDING, 0)
    assert f"put back {long_id}" in log.read_text()
    await until(lambda: none_left(short_dir) and none_left(long_dir), "no process of either job left")


async def short_done(queue: Queue, job_id: str) -> bool:
    return (await queue.get(job_id)).state is JobState.COMPLETED


# --- commands that resist: SIGTERM ignored, a grandchild that escapes with setsid ---------------


async def test_term_ignoring_job_is_killed_at_timeout_and_setsid_escape_does_not_hold_a_job(
    queue: Queue, processes: Processes, tmp_path: Path
) -> None:
    """A timed-out job that ignores SIGTERM dies by SIGKILL after the kill grace, grandchild too; a
    grandchild that leaves the group with ``setsid`` and holds stdout delays its job only by the
    drain grace, survives it, and is found (and killable) by its claim token."""
    stubborn, escaper = job_dir(tmp_path, "stubborn"), job_dir(tmp_path, "escaper")
    stubborn_id = (
        await queue.enqueue(
            command=f"{RECORD}; trap '' TERM; {BACKGROUND}; wait".format(d=stubborn),
            timeout=0.5,
            max_retries=0,
        )
    ).id
    escape = 'setsid sleep 300 & echo "$! $QUEUECTL_CLAIM_TOKEN" >> {d}/pids; echo hi'
    escaper_id = (await queue.enqueue(command=f"{RECORD}; {escape}".format(d=escaper))).id
    assert await exit_code(processes.worker("--burst", "--count", "2", "--quiet")) == 0

    killed = await queue.get(stubborn_id)
    assert (killed.state, killed.exit_code, killed.last_error) == (
        JobState.DEAD,
        None,
        "timed out after 0.5s",
    )
    assert killed.started_at is not None and killed.finished_at is not None
    # SIGTERM at 0.5 s was ignored: the SIGKILL after the kill grace ended it.
    assert (killed.finished_at - killed.started_at).total_seconds() >= 0.5 + KILL_GRACE
    await until(lambda: none_left(stubborn), "no process of the timed-out job left")

    escaped = await queue.get(escaper_id)
    assert (escaped.state, escaped.stdout) == (JobState.COMPLETED, b"hi\n")
    assert escaped.started_at is not None and escaped.finished_at is not None
    # The escaped `sleep 300` held the job's stdout; the job ended after the drain grace anyway.
    assert (escaped.finished_at - escaped.started_at).total_seconds() < 10
    [(shell, token), (runaway, _)] = attempts_of(escaper)
    assert not pid_alive(shell)
    # Documented limitation (README, "States, retries and the dead-letter queue"): a process that
    # leaves the job's process group is not killed with it; it is still found by its claim token,
    # which is how a lost worker's leftovers are swept before a re-run.
    assert os.getsid(runaway) == runaway and pid_alive(runaway)
    assert processes_with_token(token) == [runaway]
    assert kill_orphans(token) == 1
    await until(lambda: not pid_alive(runaway), "the escaped grandchild to die")


# --- enqueue-file killed at random moments ----------------------------------------------------


BATCH = 10_000


def sqlite_batch_rows(target: str, batch: str) -> int:
    """Check the file's integrity, count the batch's rows, then delete them (so the check stays fast)."""
    connection = sqlite3.connect(sqlite_path(target), isolation_level=None)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        pattern = f"{batch}-%"
        found: int = connection.execute("SELECT count(*) FROM jobs WHERE id LIKE ?", (pattern,)).fetchone()[0]
        connection.execute("DELETE FROM jobs WHERE id LIKE ?", (pattern,))
        return found
    finally:
        connection.close()


async def postgres_batch_rows(target: str, batch: str) -> int:
    import asyncpg

    connection = await asyncpg.connect(target)
    try:
        found: int = await connection.fetchval("SELECT count(*) FROM jobs WHERE id LIKE $1", f"{batch}-%")
        return found
    finally:
        await connection.close()


@pytest.mark.slow
async def test_enqueue_file_killed_at_random_moments_is_all_or_nothing(
    queue: Queue, store_target: str, tmp_path: Path
) -> None:
    """25 kill -9 of ``enqueue-file`` with 10,000 jobs, each at a random moment of a run: every batch
    is all there or not at all, and the SQLite file passes ``PRAGMA integrity_check`` after each."""
    template = "\n".join(json.dumps({"id": f"BATCH-{n:05d}", "command": "true"}) for n in range(BATCH))
    path = tmp_path / "batch.jsonl"

    errors = tmp_path / "stderr"

    def enqueue_file(batch: str, kill_after: float | None) -> int:
        path.write_text(template.replace("BATCH", batch))  # the same file, with this batch's ids
        with errors.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "queuectl", "enqueue-file", str(path)],
                env=queuectl_env(store_target),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            return process.wait(timeout=DEADLINE if kill_after is None else kill_after)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(DEADLINE)

    async def rows(batch: str) -> int:
        if is_postgres_target(store_target):
            return await postgres_batch_rows(store_target, batch)
        return sqlite_batch_rows(store_target, batch)

    began = time.monotonic()
    assert enqueue_file("b00", None) == 0, errors.read_text()
    full_run = time.monotonic() - began
    assert await rows("b00") == BATCH

    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for n in range(1, 26):
        batch, delay = f"b{n:02d}", rng.uniform(0, full_run)
        code = enqueue_file(batch, delay)
        found = await rows(batch)
        assert code in (0, -signal.SIGKILL), (seed, batch, delay, code, errors.read_text())
        assert found in (0, BATCH), (seed, batch, delay, code, found)
        assert code != 0 or found == BATCH, (seed, batch, delay)
    # The store still works after all that.
    assert (await queue.status()).jobs[JobState.PENDING] % BATCH == 0


# --- many jobs with backgrounded children through one worker ----------------------------------


WARM_UP = 64


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads line for {pid}")


def children(pid: int) -> list[str]:
    """``PID STAT`` of each child process (zombies included)."""
    listed = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid=,stat="], capture_output=True, text=True)
    return listed.stdout.split("\n")[:-1] if listed.stdout else []


@pytest.mark.slow
async def test_worker_fds_threads_and_zombies_return_to_baseline(
    queue: Queue, processes: Processes, tmp_path: Path
) -> None:
    """1,000 jobs with backgrounded children through one worker process (8 at a time): its open fds
    and threads come back to their warmed-up idle values, no child or zombie is left."""
    marker = f"30.{random.randrange(10**6):06d}"  # a sleep duration no other test uses
    quiet = f"sleep {marker} >/dev/null 2>&1 & echo hi"  # the child is killed with the group
    holding = f"sleep {marker} & echo hi"  # the child holds stdout: the drain grace path

    def batch(count: int) -> list[dict[str, object]]:
        return [{"command": holding if n % 25 == 0 else quiet} for n in range(count)]

    worker = processes.worker("--count", "8", "--quiet")
    # Warm up under the same load first: the PostgreSQL pool grows to its working size once and
    # keeps its connections (that is not a leak); SQLite and the child watcher need no warm-up.
    await queue.enqueue_many(batch(WARM_UP))

    async def completed(total: int) -> bool:
        return (await queue.store.count_jobs())[JobState.COMPLETED] == total

    await until(lambda: completed(WARM_UP), "the warm-up jobs")
    await until(lambda: not children(worker.pid), "the warm-up's children to be reaped")
    fds, threads = fd_count(worker.pid), thread_count(worker.pid)

    await queue.enqueue_many(batch(1000))
    await until(lambda: completed(WARM_UP + 1000), "1,000 jobs", timeout=90)

    def usage() -> tuple[int, int, list[str]]:
        return fd_count(worker.pid), thread_count(worker.pid), children(worker.pid)

    def settled() -> bool:
        now_fds, now_threads, now_children = usage()
        return now_fds <= fds and now_threads <= threads and not now_children

    try:
        await until(settled, "the worker's fds, threads and children to settle")
    except AssertionError:
        raise AssertionError(f"fds, threads, children: {usage()}; baseline {fds}, {threads}, []") from None
    leftovers = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True)
    assert leftovers.stdout == ""
    worker.send_signal(signal.SIGTERM)
    assert await exit_code(worker) == 0
