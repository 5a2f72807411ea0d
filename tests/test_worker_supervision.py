"""A supervised pool: upkeep that fails for a reason other than a passing ``StoreError`` stops the worker.

Nobody renews the worker's leases once its upkeep is dead, so it must claim nothing more, put its
running jobs back before their leases lapse, and say why it stopped: ``run()`` raises
``WorkerFailed``, and ``queuectl worker start`` exits 1 with one line. The failures come from a real
store wrapped in ``queuectl.testing.FaultyStore`` (in-process) or from the ``QUEUECTL_TEST_CRASH_AT``
hook (a real worker process).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import DEADLINE, pid_alive, queuectl_env, run_queuectl, wait_for, wait_until

from queuectl import JobState, Queue, WorkerPool
from queuectl.errors import StoreUnavailable, WorkerFailed
from queuectl.testing import CRASH_ENV, FaultyStore

LEASE = 1.0
FAST = {"backoff_base": "1", "backoff_max": "0.01", "poll_interval": "0.05", "lease": str(LEASE)}


@pytest.fixture
async def queue(store_target: str) -> AsyncIterator[Queue]:
    async with await Queue.open(store_target) as opened:
        for key, value in FAST.items():
            await opened.set_setting(key, value)
        yield opened


def started_job(tmp_path: Path) -> tuple[str, Path]:
    """A command that writes its shell's pid to a file, then runs for five minutes."""
    pid_file = tmp_path / "job.pid"
    return f"echo $$ > {pid_file}; exec sleep 300", pid_file


@pytest.mark.parametrize("method", ["heartbeat", "renew"])
async def test_upkeep_failure_stops_claiming_puts_the_job_back_in_time_and_raises(
    queue: Queue, tmp_path: Path, method: str
) -> None:
    command, pid_file = started_job(tmp_path)
    running = await queue.enqueue(command=command)
    faulty = FaultyStore(queue.store)
    pool = WorkerPool(faulty.as_store(), count=2, grace=60.0)
    await pool.start()
    await wait_for(lambda: _exists(pid_file), what="the job to start")
    shell = int(pid_file.read_text())

    faulty.fail(method)  # a RuntimeError, not a StoreError: upkeep dies of it
    await wait_for(lambda: _true(faulty.failed_at is not None), what=f"upkeep to call {method}")
    assert faulty.failed_at is not None
    failed_at = faulty.failed_at
    await asyncio.sleep(0)  # the supervisor hears of the failure in the loop turn after it, at the latest
    noticed = time.monotonic()
    later = await queue.enqueue(command="true")  # due now, and a slot is free

    with pytest.raises(WorkerFailed, match=f"its upkeep failed: RuntimeError: {method} failed") as raised:
        await pool.wait_stopped()
    stopped_at = time.monotonic()
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert raised.value.exit_code == 1

    # Nothing claimed after the failure: no claim, no result that claims more.
    since = faulty.calls_since(noticed)
    assert [name for name, _ in since if name == "claim"] == []
    assert [arguments for name, arguments in since if name == "finish_and_claim" and arguments["limit"]] == []
    assert (await queue.get(later.id)).state is JobState.PENDING
    # The running job was killed and put back, uncounted, before its lease could lapse.
    back = await queue.get(running.id)
    assert (back.state, back.attempts) == (JobState.PENDING, 0)
    assert pool.stats.released == 1 and pool.stats.lost == 0
    last_lease = max(at for name, at, _ in faulty.calls if name in ("claim", "renew") and at < failed_at)
    (released_at,) = [at for name, at, _ in faulty.calls if name == "release"]
    assert released_at < last_lease + LEASE
    assert stopped_at - failed_at < LEASE
    wait_until(lambda: not pid_alive(shell), what="the job's shell to die")
    assert await queue.workers() == []


async def test_a_running_job_may_finish_while_its_lease_holds(queue: Queue, tmp_path: Path) -> None:
    """The wind-down after a failure is a stop: a job that ends before its lease needs renewing is
    recorded as usual."""
    release = tmp_path / "release"
    job = await queue.enqueue(command=f"while [ ! -e {release} ]; do sleep 0.01; done; echo done")
    faulty = FaultyStore(queue.store)
    pool = WorkerPool(faulty.as_store(), grace=60.0)
    await pool.start()
    await wait_for(lambda: _processing(queue, job.id), what="the job to start")
    faulty.fail("heartbeat")
    await wait_for(lambda: _true(faulty.failed_at is not None), what="upkeep to fail")
    release.touch()
    with pytest.raises(WorkerFailed):
        await pool.wait_stopped()
    done = await queue.get(job.id)
    assert (done.state, done.stdout) == (JobState.COMPLETED, b"done\n")


async def test_a_failure_while_idle_stops_the_pool_at_once(queue: Queue) -> None:
    faulty = FaultyStore(queue.store)
    faulty.fail("heartbeat")
    pool = WorkerPool(faulty.as_store())
    started = time.monotonic()
    with pytest.raises(WorkerFailed, match="upkeep failed"):
        await pool.run()
    assert time.monotonic() - started < 10  # a hang bound: it stops within a poll interval or two
    assert await queue.workers() == []


async def test_a_passing_store_error_in_upkeep_does_not_stop_the_pool(queue: Queue) -> None:
    faulty = FaultyStore(queue.store)

    def unavailable() -> None:
        raise StoreUnavailable("the store went away for a moment")

    faulty.fail("heartbeat", unavailable)
    async with WorkerPool(faulty.as_store(), count=2) as pool:
        await wait_for(lambda: _true(faulty.failed_at is not None), what="a heartbeat to fail")
        del faulty.faults["heartbeat"]
        job = await queue.enqueue(command="echo still-here")
        done = await queue.wait_for(job.id, timeout=DEADLINE)
    assert (done.state, done.stdout) == (JobState.COMPLETED, b"still-here\n")
    assert pool.stats.completed == 1


async def test_stop_after_a_failure_still_raises(queue: Queue) -> None:
    """An embedding application that leaves the ``async with`` block learns of the failure."""
    faulty = FaultyStore(queue.store)
    with pytest.raises(WorkerFailed):
        async with WorkerPool(faulty.as_store()):
            await wait_for(lambda: _registered(queue), what="the pool to start")
            faulty.fail("settings")
            await wait_for(lambda: _true(faulty.failed_at is not None), what="upkeep to fail")


def test_worker_start_exits_1_with_one_line_when_its_upkeep_fails(store_target: str, tmp_path: Path) -> None:
    for key, value in FAST.items():
        assert run_queuectl(store_target, "config", "set", key, value).returncode == 0
    command, pid_file = started_job(tmp_path)
    enqueued = run_queuectl(store_target, "enqueue", "--command", command)
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = enqueued.stdout.strip()
    done = subprocess.run(
        [sys.executable, "-m", "queuectl", "worker", "start", "--quiet"],
        env=queuectl_env(store_target, {CRASH_ENV: "heartbeat:raise"}),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("queuectl: error: worker ") and "its upkeep failed: RuntimeError" in line, line
    shown = json.loads(run_queuectl(store_target, "show", job_id, "--json").stdout)
    assert (shown["state"], shown["attempts"]) == ("pending", 0)  # put back, or never claimed
    if pid_file.exists():
        wait_until(lambda: not pid_alive(int(pid_file.read_text())), what="the job's shell to die")
    assert json.loads(run_queuectl(store_target, "worker", "list", "--json").stdout) == []


async def test_an_injected_clock_times_attempts_and_lost_workers_jobs(queue: Queue) -> None:
    then = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    ran = await queue.enqueue(command="true")
    lost = await queue.enqueue(command="true", max_retries=0, priority=10)
    (claim,) = await queue.store.claim(worker_id="ghost:1:x", queues=None, limit=1, lease=0.1)
    assert claim.job.id == lost.id
    pool = WorkerPool(queue.store, mode="drain", clock=then.timestamp)
    await pool.run()
    done = await queue.get(ran.id)
    assert done.state is JobState.COMPLETED
    assert done.started_at == then and done.finished_at == then
    dead = await queue.get(lost.id)
    assert (dead.state, dead.finished_at) == (JobState.DEAD, then)


async def _exists(path: Path) -> bool:
    return path.exists() and path.read_text().strip() != ""


async def _true(value: bool) -> bool:
    return value


async def _processing(queue: Queue, job_id: str) -> bool:
    return (await queue.get(job_id)).state is JobState.PROCESSING


async def _registered(queue: Queue) -> bool:
    return len(await queue.workers()) == 1
