"""What the tests share: waiting with deadlines, running ``queuectl``, and set-up through the API.

Tests wait on conditions with deadlines, never on fixed sleeps. States the command line
cannot reach by itself (a completed or dead job, a registered worker) are made by the
functions at the end of this module, and only there.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio

if TYPE_CHECKING:
    from queuectl import Job

#: Generous: catches a hang without racing a loaded 2-core machine.
DEADLINE = 60.0
#: Worker processes a test starts (the ``workers`` fixture stops them).
Workers = list[subprocess.Popen[str]]


def wait_until(predicate: Callable[[], bool], timeout: float = DEADLINE, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout: float = DEADLINE, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(0.02)


def queuectl_env(target: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["QUEUECTL_DB"] = target
    env.update(extra or {})
    return env


def run_queuectl(
    target: str, *args: str, input: str | None = None, timeout: float = DEADLINE
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m queuectl`` to completion as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "queuectl", *args],
        env=queuectl_env(target),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_worker(target: str, *args: str, stderr: Path | None = None) -> subprocess.Popen[str]:
    """Start ``queuectl worker start ARGS`` in the background (its stderr to ``stderr``)."""
    log = stderr.open("w") if stderr else None
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "queuectl", "worker", "start", *args],
            env=queuectl_env(target),
            stdout=subprocess.DEVNULL,
            stderr=log or subprocess.DEVNULL,
            text=True,
        )
    finally:
        if log is not None:
            log.close()  # the child has its own copy


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def exit_code_within(process: subprocess.Popen[str], timeout: float = DEADLINE) -> int:
    return process.wait(timeout=timeout)


def jobs_state(target: str, ids: Sequence[str]) -> dict[str, str]:
    """States read through the CLI (``show --json``)."""
    states = {}
    for job_id in ids:
        shown = run_queuectl(target, "show", job_id, "--json")
        assert shown.returncode == 0, shown.stderr
        states[job_id] = json.loads(shown.stdout)["state"]
    return states


# --- the command line in-process ------------------------------------------------------------

#: The fields of every job object the command line prints.
JOB_KEYS = frozenset(
    {
        "id",
        "command",
        "queue",
        "priority",
        "timeout",
        "max_retries",
        "run_at",
        "state",
        "attempts",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "exit_code",
        "last_error",
        "cwd",
        "env",
        "progress",
        "schedule",
        "unique_key",
        "after",
        "no_retry_exit_codes",
    }
)
WORKER_KEYS = frozenset({"id", "host", "pid", "started_at", "heartbeat_at", "running"})
STATES = ("pending", "processing", "completed", "failed", "dead", "cancelled")


@dataclass(frozen=True)
class Result:
    """What one ``queuectl`` run left behind: its exit code and the bytes on stdout and stderr."""

    code: int
    out: bytes
    err: bytes

    @property
    def stdout(self) -> str:
        return self.out.decode()

    @property
    def stderr(self) -> str:
        return self.err.decode()

    def json(self) -> Any:
        return json.loads(self.out)


class Cli(Protocol):
    """``queuectl --db TARGET ARGS...`` in-process (the ``cli`` fixture)."""

    def __call__(self, *args: str, input: bytes | str | None = None) -> Result: ...


def invoke(
    *args: str, input: bytes | str | None = None, env: Mapping[str, str | None] | None = None
) -> Result:
    """Run ``main(args)`` as the ``queuectl`` process would, with stdin, stdout and stderr captured.

    ``main()`` runs its own event loop: call it from synchronous tests only. ``worker start``
    owns SIGINT and SIGTERM until its process exits (it leaves them ignored): they are given back
    here, or every later child of the test process would ignore them too.
    """
    import signal

    from click.testing import CliRunner

    from queuectl.cli import main

    runner = CliRunner()
    code: int | str | None = None
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    with runner.isolation(input=input, env=env) as (out, err, _):
        try:
            main(list(args))
        except SystemExit as exit_:
            code = exit_.code
        else:  # pragma: no cover - main always exits
            raise AssertionError("main() returned instead of exiting")
        finally:
            for number, handler in saved.items():
                signal.signal(number, handler)
    assert isinstance(code, int), code
    result = Result(code, out.getvalue(), err.getvalue())
    if "-vv" not in args:
        assert b"Traceback" not in result.err
    assert b"Traceback" not in result.out
    return result


def ok(result: Result) -> Result:
    assert result.code == 0, (result.code, result.stderr)
    return result


def assert_error(result: Result, code: int, *words: str) -> str:
    """Exit ``code``, nothing on stdout, one ``queuectl: error:`` line on stderr containing ``words``."""
    assert result.code == code, (result.code, result.stderr)
    assert result.out == b""
    stderr_lines = result.stderr.splitlines()
    assert len(stderr_lines) == 1, result.stderr
    assert stderr_lines[0].startswith("queuectl: error: "), stderr_lines[0]
    for word in words:
        assert word in stderr_lines[0], (word, stderr_lines[0])
    return stderr_lines[0]


def assert_job_object(data: Any) -> None:
    assert isinstance(data, dict)
    assert set(data) == JOB_KEYS
    assert isinstance(data["id"], str)
    assert isinstance(data["priority"], int)
    assert isinstance(data["max_retries"], int)
    assert isinstance(data["attempts"], int)
    assert data["state"] in STATES
    for key in ("run_at", "created_at", "updated_at"):
        assert data[key].endswith("Z"), data[key]
        datetime.fromisoformat(data[key])


# --- set-up the command line cannot do by itself --------------------------------------------
#
# The one place tests reach the store other than through the command line: a change of the
# library's API changes these functions, not the tests. Jobs reach ``completed`` and ``dead``
# the honest way, by running them with a burst worker pool of the public ``Queue``.

T = TypeVar("T")


def is_postgres(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def block_on(awaitable: Coroutine[Any, Any, T]) -> T:
    """Run one of the helpers below from a synchronous test (one that calls ``invoke``)."""
    return asyncio.run(awaitable)


async def run_jobs(target: str, commands: Mapping[str, str]) -> dict[str, Job]:
    """Enqueue a job per ``{id: command}``, each in a queue of its own (``q-ID``) and with no
    retries, and run them to their end with a burst pool that serves only those queues."""
    from queuectl import Queue

    queues = {job_id: f"q-{job_id}" for job_id in commands}
    async with await Queue.open(target) as queue:
        await queue.enqueue_many(
            [
                {"id": job_id, "command": command, "queue": queues[job_id], "max_retries": 0}
                for job_id, command in commands.items()
            ]
        )
        await queue.pool(count=len(commands), queues=list(queues.values()), mode="burst").run()
        return {job_id: await queue.get(job_id) for job_id in commands}


async def _run_to(target: str, state: str, job_ids: Sequence[str], command: str) -> None:
    jobs = await run_jobs(target, dict.fromkeys(job_ids, command))
    ended = {job_id: job.state.value for job_id, job in jobs.items()}
    assert ended == dict.fromkeys(job_ids, state), ended


async def make_dead(target: str, *job_ids: str, command: str = "exit 1") -> None:
    """Jobs ``job_ids`` in the DLQ after one attempt of ``command`` (which must fail)."""
    await _run_to(target, "dead", job_ids, command)


async def make_completed(target: str, *job_ids: str, command: str = "true") -> None:
    """Jobs ``job_ids`` completed after one attempt of ``command`` (which must succeed)."""
    await _run_to(target, "completed", job_ids, command)


async def job_state(target: str, job_id: str) -> tuple[str, int]:
    """``(state, attempts)`` of one job."""
    from queuectl import Queue

    async with await Queue.open(target) as queue:
        job = await queue.get(job_id)
    return job.state.value, job.attempts


async def job_ids(target: str) -> list[str]:
    """The ids of every job in the store, newest first."""
    from queuectl import Queue

    async with await Queue.open(target) as queue:
        return [job.id for job in await queue.list_jobs()]


async def make_processing(target: str, job_id: str, *, command: str = "true") -> None:
    """Job ``job_id`` claimed by a worker that is not there, so ``processing`` for an hour: no
    command runs (a real pool would finish it). Through the store, as ``fake_worker``."""
    from queuectl import Queue

    queue_name = f"q-{job_id}"
    async with await Queue.open(target) as queue:
        await queue.enqueue({"id": job_id, "command": command, "queue": queue_name})
        await queue.store.register_worker(worker_id=f"w-{job_id}", host="elsewhere", pid=1)
        claims = await queue.store.claim(worker_id=f"w-{job_id}", queues=[queue_name], limit=1, lease=3600)
        assert [claim.job.id for claim in claims] == [job_id]


async def fake_worker(target: str, *, worker_id: str, host: str, pid: int, running: int = 0) -> None:
    """Register a worker process that is not there (through the store: a real pool's host and
    pid are this process's, and its heartbeat reports what it really runs)."""
    from queuectl import Queue

    async with await Queue.open(target) as queue:
        await queue.store.register_worker(worker_id=worker_id, host=host, pid=pid)
        if running:
            await queue.store.heartbeat(worker_id=worker_id, running=running)


async def heartbeat(target: str, *, worker_id: str, running: int) -> bool:
    """A heartbeat of a ``fake_worker``: True when it has been asked to stop."""
    from queuectl import Queue

    async with await Queue.open(target) as queue:
        return await queue.store.heartbeat(worker_id=worker_id, running=running)


async def _holds_nothing(target: str) -> tuple[list[str], bool]:
    from queuectl import Queue, Settings

    async with await Queue.open(target) as queue:
        return [job.id for job in await queue.list_jobs()], await queue.settings() == Settings()


def assert_wrote_nothing(target: str) -> None:
    """A store that a refused command left as it was, when it was new (the ``cli_target`` fixture).

    SQLite: no file at all (the target is alone in its directory). PostgreSQL: no job and
    every setting at its default.
    """
    if is_postgres(target):
        assert block_on(_holds_nothing(target)) == ([], True)
    else:
        assert list(Path(target).parent.iterdir()) == []
