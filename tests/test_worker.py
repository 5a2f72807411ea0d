"""The worker pool in the test's own event loop (the embedding API), on every backend."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import lines, pid_alive, wait_for, wait_until

from queuectl import JobState, Queue
from queuectl.models import Claim
from queuectl.worker import WorkerPool


@pytest.fixture
async def queue(store_target: str) -> AsyncIterator[Queue]:
    async with await Queue.open(store_target) as opened:
        # Fast retries and upkeep, so that tests move quickly.
        await opened.set_setting("backoff_base", "1")
        await opened.set_setting("backoff_max", "0.01")
        await opened.set_setting("poll_interval", "0.05")
        yield opened


async def drain(queue: Queue, **options: object) -> WorkerPool:
    pool = queue.pool(mode="drain", grace=5.0, **options)
    await pool.run()
    return pool


async def test_success_records_output_and_times(queue: Queue) -> None:
    job = await queue.enqueue(command="echo out; echo err >&2")
    await drain(queue)
    done = await queue.get(job.id)
    assert done.state is JobState.COMPLETED and done.attempts == 1 and done.exit_code == 0
    assert (done.stdout, done.stderr) == (b"out\n", b"err\n")
    assert done.started_at is not None and done.finished_at is not None
    assert done.started_at <= done.finished_at


async def test_failures_retry_then_go_to_the_dlq(queue: Queue) -> None:
    job = await queue.enqueue(command="echo try >&2; exit 3", max_retries=2)
    pool = await drain(queue)
    dead = await queue.get(job.id)
    assert dead.state is JobState.DEAD and dead.attempts == 3
    assert dead.exit_code == 3 and dead.last_error == "exit code 3"
    assert [j.id for j in await queue.dead_jobs()] == [job.id]
    assert (pool.stats.failed, pool.stats.dead) == (2, 1)


async def test_ended_attempts_are_counted_per_minute_for_the_dashboard(queue: Queue) -> None:
    await queue.enqueue(command="true")
    await queue.enqueue(command="true")
    await queue.enqueue(command="exit 3", max_retries=1)
    await drain(queue)
    minutes = await queue.finished_per_minute(5)
    totals = [sum(getattr(minute, state) for minute in minutes) for state in ("completed", "failed", "dead")]
    assert totals == [2, 1, 1]
    await drain(queue)  # nothing new ran: nothing more is counted
    minutes = await queue.finished_per_minute(5)
    assert sum(minute.completed for minute in minutes) == 2


async def test_failed_job_waits_for_backoff_from_settings(queue: Queue) -> None:
    await queue.set_setting("backoff_base", "2")
    await queue.set_setting("backoff_max", "3600")
    job = await queue.enqueue(command="exit 1", max_retries=5)
    await queue.pool(mode="burst").run()
    failed = await queue.get(job.id)
    assert failed.state is JobState.FAILED and failed.attempts == 1
    wait = (failed.run_at - failed.updated_at).total_seconds()
    assert 1.5 < wait < 2.5  # backoff_base ** 1


async def test_command_not_found_is_127(queue: Queue) -> None:
    job = await queue.enqueue(command="no-such-command-queuectl", max_retries=0)
    await drain(queue)
    dead = await queue.get(job.id)
    assert dead.exit_code == 127 and dead.last_error == "exit code 127"


async def test_timeout_kills_the_job_and_its_grandchildren(queue: Queue, tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    job = await queue.enqueue(
        command=f"sh -c 'sleep 300 & echo $! > {pid_file}; wait'", timeout=0.5, max_retries=0
    )
    await drain(queue)
    dead = await queue.get(job.id)
    assert dead.state is JobState.DEAD and dead.last_error == "timed out after 0.5s"
    assert dead.exit_code is None
    grandchild = int(pid_file.read_text())
    wait_until(lambda: not pid_alive(grandchild), what="the grandchild to die")


async def test_background_grandchild_holding_stdout_does_not_hang_the_job(queue: Queue) -> None:
    job = await queue.enqueue(command="sleep 300 & echo started")
    started = time.monotonic()
    await drain(queue)
    done = await queue.get(job.id)
    assert done.state is JobState.COMPLETED and done.stdout == b"started\n"
    assert time.monotonic() - started < 30  # a hang bound, not a timing


async def test_output_keeps_the_head_and_the_tail(queue: Queue) -> None:
    await queue.set_setting("output_limit", "1000")
    job = await queue.enqueue(command="printf BEGIN; head -c 5000000 /dev/zero | tr '\\0' a; printf END")
    await drain(queue)
    done = await queue.get(job.id)
    line = b"\n[queuectl: 4999008 bytes left out]\n"
    assert done.stdout == b"BEGIN" + b"a" * 495 + line + b"a" * 497 + b"END"


async def test_priority_order_with_one_worker(queue: Queue, tmp_path: Path) -> None:
    log = tmp_path / "order"
    for name, priority in (("low", 0), ("high", 10), ("mid", 5), ("low2", 0)):
        await queue.enqueue(command=f"echo {name} >> {log}", priority=priority)
    await drain(queue, count=1)
    assert lines(log) == ["high", "mid", "low", "low2"]


async def test_count_bounds_the_commands_running_at_once(queue: Queue, tmp_path: Path) -> None:
    # Each command marks itself running, counts the marks, and leaves. Slots are refilled both by
    # the dispatcher and by finishing jobs (claiming in the same round trip as their result).
    marks, seen = tmp_path / "marks", tmp_path / "seen"
    marks.mkdir()
    for n in range(16):
        pause = (0.02, 0.1, 0.05, 0.0)[n % 4]
        await queue.enqueue(
            command=f"touch {marks}/$QUEUECTL_JOB_ID; ls {marks} | wc -l >> {seen}; sleep {pause};"
            f" rm {marks}/$QUEUECTL_JOB_ID"
        )
    pool = await drain(queue, count=3)
    counts = [int(line) for line in lines(seen)]
    assert len(counts) == 16 and pool.stats.completed == 16
    assert max(counts) <= 3


async def test_scheduled_job_waits_for_its_time(queue: Queue) -> None:
    job = await queue.enqueue(command="true", delay=1.0)
    await queue.pool(mode="burst").run()  # nothing due: exits at once
    assert (await queue.get(job.id)).state is JobState.PENDING
    await drain(queue)  # sleeps until the job is due, runs it
    done = await queue.get(job.id)
    assert done.state is JobState.COMPLETED
    assert done.started_at is not None and done.started_at >= job.run_at


async def test_burst_leaves_jobs_it_cannot_run_now(queue: Queue) -> None:
    now_job = await queue.enqueue(command="true")
    later = await queue.enqueue(command="true", delay=3600)
    await queue.pool(mode="burst", count=2).run()
    assert (await queue.get(now_job.id)).state is JobState.COMPLETED
    assert (await queue.get(later.id)).state is JobState.PENDING


async def test_idle_timeout_exits_when_nothing_to_do(queue: Queue) -> None:
    await queue.enqueue(command="true")
    started = time.monotonic()
    pool = queue.pool(idle_timeout=0.3)
    await pool.run()
    assert pool.stats.completed == 1
    assert time.monotonic() - started >= 0.3


async def test_queues_restrict_what_a_pool_runs(queue: Queue) -> None:
    mine = await queue.enqueue(command="true", queue="mine")
    other = await queue.enqueue(command="true", queue="other")
    await queue.pool(mode="drain", queues=["mine"]).run()
    assert (await queue.get(mine.id)).state is JobState.COMPLETED
    assert (await queue.get(other.id)).state is JobState.PENDING


async def test_settings_changes_reach_a_running_pool(queue: Queue) -> None:
    async with queue.pool(count=1) as pool:
        await queue.set_setting("max_retries", "0")
        await wait_for(lambda: _settings_seen(pool), what="the pool to read the new setting")
        job = await queue.enqueue(command="exit 1")
        dead = await queue.wait_for(job.id, timeout=60)
    assert dead.state is JobState.DEAD and dead.attempts == 1


async def _exists(path: Path) -> bool:
    return path.exists()


async def _settings_seen(pool: WorkerPool) -> bool:
    return pool.settings.max_retries == 0


async def test_embedded_pool_runs_jobs_enqueued_meanwhile(queue: Queue) -> None:
    async with queue.pool(count=4) as pool:
        jobs = [await queue.enqueue(command=f"echo {index}") for index in range(20)]
        for job in jobs:
            done = await queue.wait_for(job.id, timeout=60)
            assert done.state is JobState.COMPLETED
        assert len(await queue.workers()) == 1
    assert pool.stats.completed == 20
    assert await queue.workers() == []


async def test_stop_puts_a_running_job_back_uncounted(queue: Queue, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    job = await queue.enqueue(command=f"touch {marker}; sleep 300")
    pool = queue.pool(grace=0.2)
    await pool.start()
    await wait_for(lambda: _exists(marker), what="the job to start")
    await pool.stop()
    back = await queue.get(job.id)
    assert back.state is JobState.PENDING and back.attempts == 0
    assert pool.stats.released == 1


async def test_stop_lets_a_short_job_finish_within_the_grace(queue: Queue, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    job = await queue.enqueue(command=f"touch {marker}; sleep 0.5; echo finished")
    pool = queue.pool(grace=60)
    await pool.start()
    await wait_for(lambda: _exists(marker), what="the job to start")
    await pool.stop()
    done = await queue.get(job.id)
    assert done.state is JobState.COMPLETED and done.stdout == b"finished\n"


async def test_lost_worker_job_is_taken_back_and_counted(queue: Queue) -> None:
    await queue.set_setting("lease", "0.5")
    job = await queue.enqueue(command="true", max_retries=0)
    (claim,) = await queue.store.claim(worker_id="ghost:1:x", queues=None, limit=1, lease=0.3)
    assert claim.job.id == job.id
    pool = queue.pool(mode="drain")
    await pool.run()
    dead = await queue.get(job.id)
    assert dead.state is JobState.DEAD and dead.attempts == 1
    assert dead.last_error == "worker lost (lease expired)"


async def test_a_due_job_of_another_queue_does_not_make_the_pool_spin(queue: Queue) -> None:
    await queue.set_setting("poll_interval", "0.2")
    await queue.enqueue(command="true", queue="theirs")
    pool = queue.pool(queues=["mine"], idle_timeout=1.0)
    claims = 0
    claim = queue.store.claim

    async def counting_claim(**arguments: Any) -> list[Claim]:
        nonlocal claims
        claims += 1
        return await claim(**arguments)

    queue.store.claim = counting_claim  # type: ignore[method-assign]
    await pool.run()
    assert claims < 50  # a poll interval apart, not a busy loop (which makes thousands)
