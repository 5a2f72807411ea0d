"""The worker's side of operating jobs (Version 2), on every backend: live output and progress while a
job runs, cancelling a running job, ``cwd`` and ``env``, the history of stopped and lost attempts,
and the retention of finished jobs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from helpers import DEADLINE, pid_alive, wait_for

from queuectl import JobState, Queue, WorkerPool
from queuectl.config import Settings
from queuectl.errors import JobStateConflict
from queuectl.models import AttemptOutcome, Claim, Job, Outcome
from queuectl.testing import FaultyStore
from queuectl.worker import upkeep as upkeep_module
from queuectl.worker.slots import Running
from queuectl.worker.upkeep import WORKER_LOST, Upkeep

POLL = 0.2
FAST = {"backoff_base": "1", "backoff_max": "0.01", "poll_interval": str(POLL), "lease": "30"}


@pytest.fixture
async def queue(store_target: str) -> AsyncIterator[Queue]:
    async with await Queue.open(store_target) as opened:
        for key, value in FAST.items():
            await opened.set_setting(key, value)
        yield opened


def gate(tmp_path: Path, name: str = "go") -> tuple[str, Path]:
    """A shell loop that waits for a file to exist, and the file."""
    path = tmp_path / name
    return f"while [ ! -e {path} ]; do sleep 0.02; done", path


async def exists(path: Path) -> bool:
    return path.exists() and path.read_text().strip() != ""


async def in_state(queue: Queue, job_id: str, *states: JobState, entries: int = 1) -> bool:
    """The job is in one of ``states`` with at least ``entries`` history entries (recorded)."""
    job = await queue.get(job_id)
    return job.state in states and len(job.history) >= entries


async def started(queue: Queue, pool: WorkerPool, job_id: str) -> None:
    await wait_for(lambda: in_state(queue, job_id, JobState.PROCESSING, entries=0), what=f"{job_id} claimed")
    await wait_for(lambda: _true(pool.running_jobs > 0), what="the pool to run it")


async def _true(value: bool) -> bool:
    return value


def group_of(path: Path) -> int:
    return int(path.read_text())


def group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is in process group ``pgid``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


# --- live output ---------------------------------------------------------------------------------


async def test_live_chunks_appear_while_a_job_runs_and_go_when_it_ends(queue: Queue, tmp_path: Path) -> None:
    wait, go = gate(tmp_path)
    job = await queue.enqueue(command=f"echo first; echo oops >&2; {wait}; echo last")
    faulty = FaultyStore(queue.store)
    async with WorkerPool(faulty.as_store()) as pool:
        await started(queue, pool, job.id)

        async def both_streams_written() -> bool:
            live = await queue.store.live_output(job.id, after=0)
            found = {(chunk.stream, chunk.offset, chunk.data) for chunk in live.chunks}
            return {(1, 0, b"first\n"), (2, 0, b"oops\n")} <= found

        await wait_for(both_streams_written, what="the job's output to be written while it runs")
        assert (await queue.get(job.id)).state is JobState.PROCESSING
        go.touch()
        await wait_for(lambda: in_state(queue, job.id, JobState.COMPLETED), what="the job to end")
    done = await queue.get(job.id)
    assert (done.stdout, done.stderr) == (b"first\nlast\n", b"oops\n")
    assert (await queue.store.live_output(job.id, after=0)).chunks == ()  # dropped with the result
    appends = [arguments for name, _, arguments in faulty.calls if name == "append_output"]
    assert appends and all(arguments["keep"] >= Settings().output_limit for arguments in appends)


async def test_a_quick_job_writes_no_live_output(queue: Queue) -> None:
    faulty = FaultyStore(queue.store)
    jobs = [await queue.enqueue(command=f"echo {n}; echo {n} >&2") for n in range(20)]
    await WorkerPool(faulty.as_store(), count=4, mode="drain").run()
    for job in jobs:
        done = await queue.get(job.id)
        assert (done.state, done.stdout) == (JobState.COMPLETED, done.stderr)
    assert [name for name, _, _ in faulty.calls if name == "append_output"] == []


async def test_much_output_is_written_before_the_tick(queue: Queue, tmp_path: Path) -> None:
    """16 KiB pending are written at once; what followers get is capped by the output limit."""
    await queue.set_setting("output_limit", "1000")
    wait, go = gate(tmp_path)
    job = await queue.enqueue(command=f"{wait}; head -c 200000 /dev/zero | tr '\\0' a; sleep 300")
    async with queue.pool() as pool:
        await started(queue, pool, job.id)
        go.touch()

        async def tail_written() -> bool:
            chunks = (await queue.store.live_output(job.id, after=0)).chunks
            return bool(chunks) and max(chunk.offset + len(chunk.data) for chunk in chunks) == 200000

        await wait_for(tail_written, what="the output to be written")
        chunks = (await queue.store.live_output(job.id, after=0)).chunks
        assert sum(len(chunk.data) for chunk in chunks) <= 4 * 1000 + 16 * 1024 * 2
        await queue.cancel(job.id)


async def test_progress_reaches_the_job_and_its_file_is_removed(queue: Queue, tmp_path: Path) -> None:
    wait, go = gate(tmp_path)
    wait_again, go_again = gate(tmp_path, "again")
    named = tmp_path / "progress-path"
    job = await queue.enqueue(
        command=f'echo "$QUEUECTL_PROGRESS" > {named}; echo 1/3 > "$QUEUECTL_PROGRESS";'
        f' {wait}; printf "2/3\\n50%%\\n\\n" >> "$QUEUECTL_PROGRESS"; {wait_again}'
    )
    async with queue.pool() as pool:
        await started(queue, pool, job.id)

        async def progress_is(text: str) -> bool:
            return (await queue.get(job.id)).progress == text

        await wait_for(lambda: progress_is("1/3"), what="the first progress")
        go.touch()
        await wait_for(lambda: progress_is("50%"), what="the last line of progress")
        progress_file = Path(named.read_text().strip())
        assert progress_file.exists()
        go_again.touch()
        await wait_for(lambda: in_state(queue, job.id, JobState.COMPLETED), what="the job to end")
        # Removed after the attempt (within a poll interval); the pool's directory stays.
        await wait_for(lambda: _true(not progress_file.exists()), what="the progress file to go")
        assert progress_file.parent.exists()
    assert not progress_file.parent.exists()


# --- cwd and env -----------------------------------------------------------------------------------


async def test_cwd_and_env_reach_the_command(queue: Queue, tmp_path: Path) -> None:
    job = await queue.enqueue(
        command='pwd; echo "$GREETING|$QUEUECTL_JOB_ID|$HOME"',
        cwd=str(tmp_path),
        env={"GREETING": "hello world", "QUEUECTL_JOB_ID": "not-mine", "HOME": "/elsewhere"},
    )
    await queue.pool(mode="drain").run()
    done = await queue.get(job.id)
    # The job's variables go over the worker's own, but never over queuectl's.
    assert done.stdout == f"{tmp_path}\nhello world|{job.id}|/elsewhere\n".encode()


async def test_a_missing_cwd_could_not_start_and_is_retried(queue: Queue, tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    job = await queue.enqueue(command="true", cwd=str(missing), max_retries=1)
    await queue.pool(mode="drain").run()
    dead = await queue.get(job.id)
    assert (dead.state, dead.attempts) == (JobState.DEAD, 2)
    assert dead.last_error == f"could not start: cwd {missing}: No such file or directory"
    assert [entry.outcome for entry in dead.history] == [AttemptOutcome.NOT_STARTED] * 2


# --- history ---------------------------------------------------------------------------------------


async def test_history_names_the_worker_the_host_and_the_pid(queue: Queue) -> None:
    job = await queue.enqueue(command="echo $$; exit 3", max_retries=1)
    pool = queue.pool(mode="drain")
    await pool.run()
    dead = await queue.get(job.id)
    assert [entry.outcome for entry in dead.history] == [AttemptOutcome.FAILED] * 2
    last = dead.history[-1]
    assert (last.worker, last.host, last.exit_code, last.error) == (
        pool.worker_id,
        socket.gethostname(),
        3,
        "exit code 3",
    )
    assert last.pid == int(dead.stdout)
    assert last.started_at is not None and last.finished_at is not None


async def test_a_stop_puts_the_job_back_with_a_stopped_entry(queue: Queue, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    job = await queue.enqueue(command=f"echo $$ > {pid_file}; exec sleep 300")
    pool = queue.pool(grace=0)
    await pool.start()
    # The shell wrote its pid, and the pool has heard of its start (a stop before that, a few
    # loop turns later on a busy machine, has no pid to record).
    await wait_for(lambda: exists(pid_file), what="the job to start")
    await wait_for(
        lambda: _true(all(running.pid is not None for running in pool._slots.jobs.values())),
        what="the pool to hear of the start",
    )
    await pool.stop()
    back = await queue.get(job.id)
    assert (back.state, back.attempts) == (JobState.PENDING, 0)
    (entry,) = back.history
    assert (entry.outcome, entry.worker, entry.host) == (
        AttemptOutcome.STOPPED,
        pool.worker_id,
        socket.gethostname(),
    )
    assert entry.pid == group_of(pid_file) and entry.started_at is not None and entry.finished_at is not None
    assert not group_alive(entry.pid)


@pytest.mark.parametrize("registered", [True, False], ids=["registered", "unregistered"])
async def test_a_lost_attempt_is_a_lost_entry_naming_its_worker(queue: Queue, registered: bool) -> None:
    job = await queue.enqueue(command="true", max_retries=1)
    if registered:  # a worker killed without unregistering: its row says where it ran
        await queue.store.register_worker(worker_id="ghost:1:x", host="far-host", pid=4242)
    (claim,) = await queue.store.claim(worker_id="ghost:1:x", queues=None, limit=1, lease=0.2)
    await wait_for(lambda: _lapsed(queue, claim), what="the ghost's lease to lapse")
    await queue.pool(mode="drain").run()
    done = await queue.get(job.id)
    assert (done.state, done.attempts) == (JobState.COMPLETED, 2)
    assert [(entry.outcome, entry.error) for entry in done.history] == [
        (AttemptOutcome.LOST, WORKER_LOST),
        (AttemptOutcome.COMPLETED, None),
    ]
    lost = done.history[0]
    where = ("far-host", 4242) if registered else (None, None)
    assert (lost.worker, lost.host, lost.pid) == ("ghost:1:x", *where)


async def test_a_cancelled_job_of_a_lost_worker_stays_cancelled(queue: Queue) -> None:
    job = await queue.enqueue(command="true")
    (claim,) = await queue.store.claim(worker_id="ghost:1:x", queues=None, limit=1, lease=0.2)
    await queue.cancel(job.id)
    await wait_for(lambda: _lapsed(queue, claim), what="the ghost's lease to lapse")
    async with queue.pool():
        await wait_for(lambda: in_state(queue, job.id, JobState.CANCELLED), what="the lost attempt recorded")
    cancelled = await queue.get(job.id)
    assert [(entry.outcome, entry.error) for entry in cancelled.history] == [
        (AttemptOutcome.LOST, WORKER_LOST)
    ]
    assert await queue.store.lapsed_claims() == []
    assert (await queue.retry(job.id)).state is JobState.PENDING  # no longer held


async def _lapsed(queue: Queue, claim: Claim) -> bool:
    return any(lapsed.token == claim.token for lapsed in await queue.store.lapsed_claims())


# --- cancel ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("term", ["obeyed", "ignored"])
async def test_cancel_kills_the_running_group_and_records_a_cancelled_attempt(
    queue: Queue, tmp_path: Path, term: str
) -> None:
    await queue.set_setting("poll_interval", "1")
    pid_file, child_file = tmp_path / "pid", tmp_path / "child"
    trap = "trap '' TERM; " if term == "ignored" else ""
    job = await queue.enqueue(
        command=f"{trap}echo $$ > {pid_file}; sleep 300 & echo $! > {child_file}; echo started; wait"
    )
    async with queue.pool(count=2) as pool:
        await started(queue, pool, job.id)
        await wait_for(lambda: exists(child_file), what="the job's child to start")
        shell, child = group_of(pid_file), group_of(child_file)
        cancelled_at = time.monotonic()
        assert (await queue.cancel(job.id)).state is JobState.CANCELLED
        await wait_for(lambda: _true(not group_alive(shell)), what="the job's process group to die")
        killed_after = time.monotonic() - cancelled_at
        await wait_for(lambda: in_state(queue, job.id, JobState.CANCELLED), what="the attempt recorded")
        assert pool.stats.cancelled == 1 and pool.stats.lost == 0
    assert not pid_alive(child)
    # Within a poll interval (1 s), plus the 2 s between TERM and KILL when TERM is ignored;
    # generous on a loaded machine, yet far below the 30 s lease (which would also end it).
    assert killed_after < (1 + 2 if term == "ignored" else 1) + 5
    if term == "ignored":
        assert killed_after >= 2.0  # it took the KILL
    done = await queue.get(job.id)
    assert (done.state, done.attempts, done.last_error) == (JobState.CANCELLED, 1, "cancelled")
    (entry,) = done.history
    assert (entry.outcome, entry.error, entry.pid, entry.worker) == (
        AttemptOutcome.CANCELLED,
        "cancelled",
        shell,
        pool.worker_id,
    )
    assert done.stdout == b"started\n"
    assert (await queue.store.live_output(job.id, after=0)).chunks == ()


async def test_a_result_refused_because_of_a_cancel_is_a_cancelled_attempt(queue: Queue) -> None:
    """The job ends by itself; the cancel lands before its result is written: the store refuses
    the result, and the worker records the attempt as cancelled."""
    job = await queue.enqueue(command="echo done")
    store = queue.store
    faulty = FaultyStore(store)

    async def cancel_first(claim: Claim, outcome: Outcome, **arguments: Any) -> tuple[bool, list[Claim]]:
        await store.cancel_job(claim.job.id)
        return await store.finish_and_claim(claim, outcome, **arguments)

    faulty.finish_and_claim = cancel_first  # type: ignore[attr-defined]
    pool = WorkerPool(faulty.as_store(), mode="burst")
    await pool.run()
    done = await queue.get(job.id)
    assert (done.state, done.stdout, pool.stats.cancelled, pool.stats.lost) == (
        JobState.CANCELLED,
        b"done\n",
        1,
        0,
    )
    (entry,) = done.history
    assert (entry.outcome, entry.exit_code, entry.error) == (AttemptOutcome.CANCELLED, 0, None)


async def test_cancel_racing_the_end_of_the_job(queue: Queue, tmp_path: Path) -> None:
    """Whichever comes first, the job ends completed or cancelled with one entry, and is not held."""
    ends = set()
    async with queue.pool(count=2) as pool:
        for round_ in range(8):
            wait, go = gate(tmp_path, f"go{round_}")
            job = await queue.enqueue(command=f"{wait}; echo done")
            await started(queue, pool, job.id)
            go.touch()
            await asyncio.sleep(round_ * 0.01)  # a spread of orders, not a condition: any order is valid
            with contextlib.suppress(JobStateConflict):  # it completed first
                await queue.cancel(job.id)
            recorded = functools.partial(in_state, queue, job.id, JobState.COMPLETED, JobState.CANCELLED)
            await wait_for(recorded, what="the job to be recorded")
            done = await queue.get(job.id)
            assert len(done.history) == 1 and done.attempts == 1
            expected = (
                AttemptOutcome.COMPLETED if done.state is JobState.COMPLETED else AttemptOutcome.CANCELLED
            )
            assert done.history[0].outcome is expected
            ends.add(done.state)
        assert pool.stats.lost == 0
    assert await queue.store.lapsed_claims() == []
    assert ends <= {JobState.COMPLETED, JobState.CANCELLED}


@pytest.mark.postgres
async def test_a_cancel_while_listen_is_down_still_kills_the_job(
    postgres_target: str, tmp_path: Path
) -> None:
    import asyncpg

    from queuectl.storage.postgres.listen import channel_name

    lease = 6.0
    pid_file = tmp_path / "pid"
    schema = parse_qs(urlsplit(postgres_target).query)["search_path"][0]
    admin_url = os.environ["QUEUECTL_TEST_POSTGRES_URL"]
    async with await Queue.open(postgres_target) as queue:
        await queue.set_setting("poll_interval", "0.5")
        await queue.set_setting("lease", str(lease))
        job = await queue.enqueue(command=f"echo $$ > {pid_file}; exec sleep 300")
        async with queue.pool(count=2) as pool:  # a free slot: the pool waits on LISTEN meanwhile
            await started(queue, pool, job.id)
            await wait_for(lambda: exists(pid_file), what="the job to start")
            admin = await asyncpg.connect(admin_url)
            try:
                listening = "SELECT pid FROM pg_stat_activity WHERE query = $1"
                query = f'LISTEN "{channel_name(schema)}"'

                async def listener_up() -> bool:
                    return bool(await admin.fetch(listening, query))

                await wait_for(listener_up, what="the pool to LISTEN")
                terminated = await admin.fetch(
                    f"SELECT pg_terminate_backend(pid) FROM ({listening}) AS listeners", query
                )
                assert terminated and all(row[0] for row in terminated)
            finally:
                await admin.close()
            cancelled_at = time.monotonic()
            await queue.cancel(job.id)
            shell = group_of(pid_file)
            await wait_for(lambda: _true(not group_alive(shell)), what="the job to be killed")
            assert time.monotonic() - cancelled_at < lease
            await wait_for(lambda: in_state(queue, job.id, JobState.CANCELLED), what="the attempt recorded")
        assert (await queue.get(job.id)).history[0].outcome is AttemptOutcome.CANCELLED


@pytest.mark.postgres
async def test_a_cancel_notification_stops_the_job_before_the_next_poll(
    postgres_target: str, tmp_path: Path
) -> None:
    """The NOTIFY of a cancel wakes the worker at once: with a 20 s poll interval the job still
    dies within seconds (the bound is generous; without the hint it takes up to 20 s)."""
    pid_file = tmp_path / "pid"
    async with await Queue.open(postgres_target) as queue:
        await queue.set_setting("lease", "60")
        await queue.set_setting("poll_interval", "20")
        job = await queue.enqueue(command=f"echo $$ > {pid_file}; exec sleep 300")
        async with queue.pool(count=1) as pool:
            await started(queue, pool, job.id)
            await wait_for(lambda: exists(pid_file), what="the job to start")
            shell = group_of(pid_file)
            cancelled_at = time.monotonic()
            await queue.cancel(job.id)
            await wait_for(lambda: _true(not group_alive(shell)), what="the job to be killed")
            assert time.monotonic() - cancelled_at < 12
            await wait_for(lambda: in_state(queue, job.id, JobState.CANCELLED), what="the attempt recorded")
        assert (await queue.get(job.id)).history[0].outcome is AttemptOutcome.CANCELLED


# --- renewal and cancels, on their own -------------------------------------------------------------


class RenewsNothing:
    """A store that renews no lease, and says which tokens are cancelled."""

    def __init__(self, cancelled: set[str]) -> None:
        self.cancelled = cancelled

    async def heartbeat(self, *, worker_id: str, running: int) -> bool:
        return False

    async def renew(self, *, worker_id: str, tokens: list[str], lease: float) -> set[str]:
        return set()

    async def cancelled_claims(self, tokens: list[str]) -> set[str]:
        return self.cancelled & set(tokens)


async def test_renewal_does_not_take_a_cancelled_job_for_a_lost_lease() -> None:
    loop = asyncio.get_running_loop()
    sleeper = loop.create_task(asyncio.sleep(300))
    now = datetime.now(UTC)

    def running(token: str) -> Running:
        job = Job(
            id=token, command="true", queue="default", priority=0, timeout=None, max_retries=0,
            run_at=now, state=JobState.PROCESSING, attempts=1, created_at=now, updated_at=now,
        )  # fmt: skip
        return Running(
            claim=Claim(job=job, token=token), task=sleeper, lease_deadline=0.0, stop=loop.create_future()
        )

    jobs = {"cancelled": running("cancelled"), "lost": running("lost")}
    store: Any = RenewsNothing({"cancelled"})
    upkeep = Upkeep(
        store,
        worker_id="w",
        jobs=jobs,
        settings=Settings(),
        on_settings=print,
        on_stop=print,
        clock=time.time,
    )
    await upkeep._heartbeat()
    assert jobs["cancelled"].cancelled and not jobs["cancelled"].lease_lost
    assert jobs["lost"].lease_lost and not jobs["lost"].cancelled
    await asyncio.sleep(0)
    assert sleeper.cancelled()  # the lost one's task was killed


# --- retention -------------------------------------------------------------------------------------


async def test_retention_deletes_only_old_completed_and_cancelled_jobs(
    store_target: str, tmp_path: Path
) -> None:
    """Jobs finish now or (by the clock of the pool that runs them) in eight days; a pool whose
    clock says it is eight days from now deletes what finished more than seven days before."""
    in_eight_days = (datetime.now(UTC) + timedelta(days=8)).timestamp
    async with await Queue.open(store_target) as queue:
        for key, value in {**FAST, "retention": "none"}.items():
            await queue.set_setting(key, value)
        old = await run_and_cancel(queue, queue, tmp_path / "old")
        recent = await run_and_cancel(queue, Queue(queue.store, clock=in_eight_days), tmp_path / "recent")
        pending = await queue.enqueue(command="true", queue="elsewhere")
        everything = {job.id for job in [*old.values(), *recent.values(), pending]}
        await Queue(queue.store, clock=in_eight_days).pool(mode="burst", queues=["nothing-here"]).run()
        assert {job.id for job in await queue.list_jobs()} == everything  # retention none: kept

        await queue.set_setting("retention", "7d")
        await Queue(queue.store, clock=in_eight_days).pool(mode="burst", queues=["nothing-here"]).run()
        deleted = {old["completed"].id, old["cancelled while running"].id, old["cancelled"].id}
        deleted.add(recent["cancelled"].id)  # cancelled before it ran: it ended now, not in eight days
        assert {job.id for job in await queue.list_jobs()} == everything - deleted


async def run_and_cancel(queue: Queue, runner: Queue, tmp_path: Path) -> dict[str, Job]:
    """A completed job, a dead one, one cancelled while it ran (all run by ``runner``'s pool, which
    dates their end), and one cancelled before it ran (which ends now)."""
    tmp_path.mkdir()
    wait, _ = gate(tmp_path)
    queue_name = str(tmp_path)
    jobs = {
        "completed": await queue.enqueue(command="true", queue=queue_name),
        "dead": await queue.enqueue(command="exit 1", max_retries=0, queue=queue_name),
        "cancelled while running": await queue.enqueue(command=f"{wait}; sleep 300", queue=queue_name),
        "cancelled": await queue.enqueue(command="true", queue="elsewhere"),
    }
    await queue.cancel(jobs["cancelled"].id)
    async with runner.pool(count=3, queues=[queue_name]) as pool:
        for name, state in (("dead", JobState.DEAD), ("completed", JobState.COMPLETED)):
            await wait_for(functools.partial(in_state, queue, jobs[name].id, state), what=name)
        running = jobs["cancelled while running"].id
        await started(queue, pool, running)
        await queue.cancel(running)
        await wait_for(lambda: in_state(queue, running, JobState.CANCELLED), what="the cancel recorded")
    return jobs


async def test_retention_runs_again_while_the_worker_runs(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upkeep_module, "RETENTION_EVERY", 0.1)
    await queue.set_setting("retention", "1s")
    async with queue.pool():
        job = await queue.enqueue(command="true")
        await wait_for(lambda: in_state(queue, job.id, JobState.COMPLETED), what="the job to run")
        await wait_for(lambda: _gone(queue, job.id), what="retention to delete it", timeout=DEADLINE)


async def _gone(queue: Queue, job_id: str) -> bool:
    return job_id not in {job.id for job in await queue.list_jobs()}
