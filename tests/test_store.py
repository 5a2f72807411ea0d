"""The store's behaviour, proven on every backend through the ``store`` fixture."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from queuectl.config import Settings
from queuectl.enqueue import check, resolve
from queuectl.errors import DuplicateJob, JobNotFound, JobStateConflict
from queuectl.models import AttemptOutcome, AttemptRecord, Claim, JobState, NewJob, Outcome
from queuectl.storage import Store, open_store

LONG_LEASE = 300.0


def new(job_id: str, *, settings: Settings | None = None, **fields: object) -> NewJob:
    """A job as the façade hands it to a store: checked, and its defaults taken from ``settings``
    (the defaults' defaults unless given)."""
    return resolve(check({"id": job_id, "command": "true", **fields}), settings or Settings())


def outcome(state: JobState, *, retry_in: float = 0.0, error: str | None = None) -> Outcome:
    now = datetime.now(UTC)
    return Outcome(
        state=state,
        exit_code=0 if state is JobState.COMPLETED else 1,
        error=error if error is not None else (None if state is JobState.COMPLETED else "exit code 1"),
        started_at=now,
        finished_at=now,
        stdout=b"out\xff",
        stderr=b"err",
        retry_in=retry_in,
    )


def stopped(worker: str = "w1") -> AttemptRecord:
    """The history entry of an attempt its worker was asked to stop (``release``)."""
    now = datetime.now(UTC)
    return AttemptRecord(
        worker=worker,
        host="host",
        pid=None,
        started_at=now,
        finished_at=now,
        exit_code=None,
        outcome=AttemptOutcome.STOPPED,
        error="stopped",
    )


async def claim_one(store: Store, worker_id: str = "w1", lease: float = LONG_LEASE) -> Claim:
    claims = await store.claim(worker_id=worker_id, queues=None, limit=1, lease=lease)
    assert len(claims) == 1
    return claims[0]


async def bury(store: Store, job_id: str) -> None:
    await store.add_jobs([new(job_id, priority=1_000_000)])  # claimed before anything else
    claim = await claim_one(store)
    assert claim.job.id == job_id
    assert await store.finish(claim, outcome(JobState.DEAD))


# --- adding and reading --------------------------------------------------------------------


async def test_added_job_reads_back_with_defaults_from_settings(store: Store) -> None:
    await store.set_setting("max_retries", "7")
    await store.set_setting("default_timeout", "12.5")
    settings = await store.settings()
    (job,) = await store.add_jobs([new("a", command="echo hi", queue="q", priority=4, settings=settings)])
    stored = await store.get_job("a")
    assert stored == job
    assert (stored.command, stored.queue, stored.priority) == ("echo hi", "q", 4)
    assert (stored.max_retries, stored.timeout) == (7, 12.5)
    assert stored.state is JobState.PENDING and stored.attempts == 0
    assert stored.created_at.tzinfo is not None
    assert abs(stored.run_at - datetime.now(UTC)) < timedelta(minutes=1)


async def test_settings_are_stored_as_the_text_given(store: Store) -> None:
    assert await store.stored_settings() == {}
    await store.set_setting("default_timeout", "1h30m")
    await store.set_setting("default_timeout", "5m")
    await store.set_setting("lease", "2m")
    assert await store.stored_settings() == {"default_timeout": "5m", "lease": "2m"}
    settings = await store.settings()
    assert (settings.default_timeout, settings.lease) == (300.0, 120.0)


async def test_explicit_none_timeout_beats_the_default(store: Store) -> None:
    await store.set_setting("default_timeout", "5")
    (job,) = await store.add_jobs([new("a", timeout=None, max_retries=0, settings=await store.settings())])
    assert (await store.get_job("a")).timeout is None
    assert job.max_retries == 0


async def test_delay_and_run_at_set_the_run_time(store: Store) -> None:
    later = datetime(2999, 1, 1, tzinfo=UTC)
    await store.add_jobs([new("delayed", delay=3600.0), new("scheduled", run_at=later)])
    delayed = await store.get_job("delayed")
    assert delayed.run_at - datetime.now(UTC) > timedelta(minutes=59)
    assert (await store.get_job("scheduled")).run_at == later


async def test_a_job_with_defaults_left_unset_is_refused(store: Store) -> None:
    """Defaults are the façade's to fill in: a store given an ``UNSET`` field inserts nothing."""
    with pytest.raises(TypeError, match="max_retries"):
        await store.add_jobs([new("a"), NewJob(id="b", command="true", timeout=None)])
    assert await store.list_jobs() == []


async def test_unknown_job_is_not_found(store: Store) -> None:
    with pytest.raises(JobNotFound, match="nope"):
        await store.get_job("nope")


async def test_duplicate_id_is_refused_and_batch_is_all_or_nothing(store: Store) -> None:
    await store.add_jobs([new("taken")])
    with pytest.raises(DuplicateJob, match="taken"):
        await store.add_jobs([new("fresh-1"), new("taken"), new("fresh-2")])
    assert [job.id for job in await store.list_jobs()] == ["taken"]


async def test_list_is_newest_first_and_filters(store: Store) -> None:
    for index in range(5):
        await store.add_jobs([new(f"j{index}", queue="even" if index % 2 == 0 else "odd")])
    assert [job.id for job in await store.list_jobs()] == ["j4", "j3", "j2", "j1", "j0"]
    assert [job.id for job in await store.list_jobs(queue="odd")] == ["j3", "j1"]
    assert [job.id for job in await store.list_jobs(limit=2)] == ["j4", "j3"]
    await bury(store, "dead-one")
    assert [job.id for job in await store.list_jobs(state=JobState.DEAD)] == ["dead-one"]


async def test_counts_include_every_state(store: Store) -> None:
    assert await store.count_jobs() == dict.fromkeys(JobState, 0)
    await store.add_jobs([new("a"), new("b")])
    await claim_one(store)
    counts = await store.count_jobs()
    assert counts[JobState.PENDING] == 1 and counts[JobState.PROCESSING] == 1
    assert counts[JobState.DEAD] == 0


async def test_next_run_at_is_the_earliest_waiting_job(store: Store) -> None:
    assert await store.next_run_at() is None
    await store.add_jobs([new("later", delay=7200.0), new("soon", delay=3600.0)])
    seconds = await store.next_run_at()
    assert seconds is not None and 3500 < seconds <= 3600


async def test_next_run_at_of_some_queues_looks_at_those_queues_only(store: Store) -> None:
    await store.add_jobs(
        [new("a-late", queue="a", delay=7200.0), new("b-soon", queue="b", delay=600.0), new("c", queue="c")]
    )
    seconds = await store.next_run_at(["a", "z"])
    assert seconds is not None and 7100 < seconds <= 7200
    seconds = await store.next_run_at(["a", "b"])
    assert seconds is not None and 500 < seconds <= 600
    assert await store.next_run_at(["z"]) is None
    seconds = await store.next_run_at()
    assert seconds is not None and seconds <= 0  # "c" is due now


# --- claims --------------------------------------------------------------------------------


async def test_claim_order_is_priority_then_run_at_then_age(store: Store) -> None:
    past = datetime.now(UTC) - timedelta(hours=1)
    await store.add_jobs(
        [
            new("low-old", priority=0),
            new("high-new", priority=5),
            new("low-older-run-at", priority=0, run_at=past),
            new("low-new", priority=0),
            new("high-newer", priority=5),
        ]
    )
    order = []
    while claims := await store.claim(worker_id="w", queues=None, limit=1, lease=LONG_LEASE):
        order.append(claims[0].job.id)
    assert order == ["high-new", "high-newer", "low-older-run-at", "low-old", "low-new"]


async def test_claim_of_several_returns_them_best_first(store: Store) -> None:
    await store.add_jobs([new(f"p{p}", priority=p) for p in (1, 3, 2, 0)])
    claims = await store.claim(worker_id="w", queues=None, limit=3, lease=LONG_LEASE)
    assert [claim.job.id for claim in claims] == ["p3", "p2", "p1"]
    assert all(claim.job.state is JobState.PROCESSING and claim.job.attempts == 1 for claim in claims)
    assert len({claim.token for claim in claims}) == 3


async def test_future_jobs_are_not_claimed(store: Store) -> None:
    await store.add_jobs([new("future", delay=3600.0)])
    assert await store.claim(worker_id="w", queues=None, limit=5, lease=LONG_LEASE) == []


async def test_claim_respects_queues(store: Store) -> None:
    await store.add_jobs([new("a", queue="alpha"), new("b", queue="beta"), new("c", queue="gamma")])
    claims = await store.claim(worker_id="w", queues=["beta", "gamma"], limit=5, lease=LONG_LEASE)
    assert sorted(claim.job.id for claim in claims) == ["b", "c"]


async def test_finish_completed_records_everything(store: Store) -> None:
    await store.add_jobs([new("a")])
    claim = await claim_one(store)
    assert await store.finish(claim, outcome(JobState.COMPLETED))
    job = await store.get_job("a")
    assert job.state is JobState.COMPLETED and job.attempts == 1 and job.exit_code == 0
    assert (job.stdout, job.stderr, job.last_error) == (b"out\xff", b"err", None)
    assert job.finished_at is not None
    assert await store.claim(worker_id="w", queues=None, limit=1, lease=LONG_LEASE) == []


async def test_failed_job_waits_for_its_backoff(store: Store) -> None:
    await store.add_jobs([new("a")])
    claim = await claim_one(store)
    assert await store.finish(claim, outcome(JobState.FAILED, retry_in=3600.0))
    job = await store.get_job("a")
    assert job.state is JobState.FAILED and job.last_error == "exit code 1"
    assert job.run_at - datetime.now(UTC) > timedelta(minutes=59)
    assert await store.claim(worker_id="w", queues=None, limit=1, lease=LONG_LEASE) == []


async def test_failed_job_with_no_wait_is_claimed_again(store: Store) -> None:
    await store.add_jobs([new("a")])
    assert await store.finish(await claim_one(store), outcome(JobState.FAILED, retry_in=0.0))
    again = await claim_one(store)
    assert again.job.id == "a" and again.job.attempts == 2


async def test_finish_and_claim_records_and_hands_over_the_next_best_jobs(store: Store) -> None:
    await store.add_jobs([new("a", priority=9), new("low"), new("high", priority=5), new("mid", priority=3)])
    first = await claim_one(store)
    accepted, claims = await store.finish_and_claim(
        first, outcome(JobState.COMPLETED), worker_id="w1", queues=None, limit=2, lease=LONG_LEASE
    )
    assert accepted
    assert [claim.job.id for claim in claims] == ["high", "mid"]
    assert all(claim.job.state is JobState.PROCESSING and claim.job.attempts == 1 for claim in claims)
    job = await store.get_job("a")
    assert job.state is JobState.COMPLETED and job.stdout == b"out\xff"
    assert {claim.token for claim in claims} == await store.renew(
        worker_id="w1", tokens=[claim.token for claim in claims], lease=LONG_LEASE
    )
    counts = await store.count_jobs()
    assert (counts[JobState.PENDING], counts[JobState.PROCESSING]) == (1, 2)


async def test_finish_and_claim_respects_queues_and_limit_zero(store: Store) -> None:
    await store.add_jobs([new("a", queue="q"), new("b", queue="q"), new("other", queue="elsewhere")])
    first = await claim_one(store)
    accepted, claims = await store.finish_and_claim(
        first, outcome(JobState.DEAD), worker_id="w1", queues=["q"], limit=0, lease=LONG_LEASE
    )
    assert accepted and claims == []
    assert (await store.get_job("a")).state is JobState.DEAD
    (second,) = await store.claim(worker_id="w1", queues=["q"], limit=1, lease=LONG_LEASE)
    accepted, claims = await store.finish_and_claim(
        second, outcome(JobState.COMPLETED), worker_id="w1", queues=["q"], limit=5, lease=LONG_LEASE
    )
    assert accepted and claims == []  # "other" waits in a queue this worker does not serve
    assert (await store.get_job("other")).state is JobState.PENDING


async def test_finish_and_claim_with_a_lost_claim_writes_no_result_but_still_claims(store: Store) -> None:
    await store.add_jobs([new("a"), new("b")])
    first = await claim_one(store, lease=0.2)
    await wait_until_lapsed(store, "a")
    assert await store.finish(first, outcome(JobState.FAILED, error="worker lost", retry_in=3600.0))
    accepted, claims = await store.finish_and_claim(
        first, outcome(JobState.COMPLETED), worker_id="w1", queues=None, limit=1, lease=LONG_LEASE
    )
    assert accepted is False
    assert [claim.job.id for claim in claims] == ["b"]
    assert (await store.get_job("a")).state is JobState.FAILED


async def test_a_late_writer_changes_nothing(store: Store) -> None:
    await store.add_jobs([new("a")])
    first = await claim_one(store, lease=0.2)
    await wait_until_lapsed(store, "a")
    assert await store.finish(first, outcome(JobState.FAILED, error="worker lost"))
    second = await claim_one(store, worker_id="w2")
    assert await store.finish(first, outcome(JobState.COMPLETED)) is False
    assert await store.release(first, stopped()) is False
    assert (await store.get_job("a")).state is JobState.PROCESSING
    assert await store.finish(second, outcome(JobState.COMPLETED))
    assert await store.finish(second, outcome(JobState.DEAD)) is False
    assert (await store.get_job("a")).state is JobState.COMPLETED


async def wait_until_lapsed(store: Store, job_id: str) -> None:
    with anyio.fail_after(20):
        while job_id not in {claim.job.id for claim in await store.lapsed_claims()}:
            await anyio.sleep(0.05)


async def test_renew_keeps_the_lease(store: Store) -> None:
    await store.add_jobs([new("a"), new("b")])
    claims = await store.claim(worker_id="w", queues=None, limit=2, lease=LONG_LEASE)
    tokens = [claim.token for claim in claims]
    assert await store.renew(worker_id="w", tokens=tokens, lease=LONG_LEASE) == set(tokens)
    assert await store.renew(worker_id="other", tokens=tokens, lease=LONG_LEASE) == set()
    assert await store.finish(claims[0], outcome(JobState.COMPLETED))
    assert await store.renew(worker_id="w", tokens=tokens, lease=LONG_LEASE) == {tokens[1]}
    assert await store.lapsed_claims() == []


async def test_release_puts_the_job_back_without_counting(store: Store) -> None:
    await store.add_jobs([new("a")])
    claim = await claim_one(store)
    assert await store.release(claim, stopped())
    job = await store.get_job("a")
    assert job.state is JobState.PENDING and job.attempts == 0
    assert [entry.outcome for entry in job.history] == [AttemptOutcome.STOPPED]
    assert (await claim_one(store)).job.attempts == 1


async def test_has_unfinished(store: Store) -> None:
    assert not await store.has_unfinished(None)
    await store.add_jobs([new("a", queue="q")])
    assert await store.has_unfinished(None) and await store.has_unfinished(["q"])
    assert not await store.has_unfinished(["other"])
    claim = await claim_one(store)
    assert await store.has_unfinished(None)
    await store.finish(claim, outcome(JobState.COMPLETED))
    assert not await store.has_unfinished(None)


# --- dead-letter queue ---------------------------------------------------------------------


async def test_retry_dead_resets_the_job(store: Store) -> None:
    await bury(store, "a")
    (job,) = await store.retry_dead(["a"])
    assert job.state is JobState.PENDING and job.attempts == 0
    assert (await claim_one(store)).job.id == "a"


async def test_retry_dead_is_all_or_nothing(store: Store) -> None:
    await bury(store, "dead")
    await store.add_jobs([new("alive")])
    with pytest.raises(JobStateConflict, match="alive"):
        await store.retry_dead(["dead", "alive"])
    with pytest.raises(JobNotFound, match="ghost"):
        await store.retry_dead(["dead", "ghost"])
    assert (await store.get_job("dead")).state is JobState.DEAD


async def test_retry_all_dead(store: Store) -> None:
    await bury(store, "a")
    await bury(store, "b")
    revived = await store.retry_all_dead()
    assert sorted(job.id for job in revived) == ["a", "b"]
    assert (await store.count_jobs())[JobState.DEAD] == 0


# --- settings and workers ------------------------------------------------------------------


async def test_settings_persist(store_target: str) -> None:
    first = await open_store(store_target)
    assert (await first.settings()).max_retries == 3
    await first.set_setting("backoff_base", "1.5")
    await first.set_setting("default_timeout", "none")
    await first.close()
    second = await open_store(store_target)
    try:
        settings = await second.settings()
        assert settings.backoff_base == 1.5 and settings.default_timeout is None
    finally:
        await second.close()


async def test_worker_registry_and_stop_requests(store: Store) -> None:
    await store.register_worker(worker_id="w1", host="h", pid=123)
    await store.register_worker(worker_id="w2", host="h", pid=456)
    assert await store.heartbeat(worker_id="w1", running=2) is False
    workers = await store.list_workers(stale_after=60)
    assert [(w.id, w.pid) for w in workers] == [("w1", 123), ("w2", 456)]
    assert workers[0].running == 2
    assert await store.request_stop(stale_after=60) == 2
    assert await store.heartbeat(worker_id="w1", running=0) is True
    await store.unregister_worker("w1")
    assert [w.id for w in await store.list_workers(stale_after=60)] == ["w2"]


async def test_stale_workers_do_not_count(store: Store) -> None:
    await store.register_worker(worker_id="w1", host="h", pid=1)
    with anyio.fail_after(20):
        while await store.list_workers(stale_after=0.1):
            await anyio.sleep(0.05)
    assert await store.request_stop(stale_after=0.1) == 0


async def test_another_store_wakes_a_waiter(store_target: str) -> None:
    waiter = await open_store(store_target)
    writer = await open_store(store_target)
    try:
        await waiter.wait_for_change(0.01)  # settle on the current state
        async with anyio.create_task_group() as group:
            started = anyio.Event()

            async def wait() -> None:
                started.set()
                with anyio.fail_after(20):  # woken by the change, not by its own 60 s timeout
                    await waiter.wait_for_change(60)

            group.start_soon(wait)
            await started.wait()
            await writer.add_jobs([new("a")])
    finally:
        await waiter.close()
        await writer.close()


# --- many processes ------------------------------------------------------------------------

CLAIMER = textwrap.dedent(
    """
    import asyncio, sys
    from queuectl.storage import open_store

    async def main(target, name):
        store = await open_store(target)
        got = []
        while True:
            claims = await store.claim(worker_id=name, queues=None, limit=3, lease=300)
            if not claims:
                break
            got.extend(claim.job.id for claim in claims)
        await store.close()
        print("\\n".join(got))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_concurrent_processes_claim_each_job_exactly_once(store: Store, store_target: str) -> None:
    total = 2000
    await store.add_jobs([new(f"job-{index}") for index in range(total)])
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, store_target, f"claimer-{index}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for index in range(4)
    ]
    claimed: list[str] = []
    for process in processes:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        claimed.extend(line for line in out.splitlines() if line)
    assert len(claimed) == total
    assert set(claimed) == {f"job-{index}" for index in range(total)}
    assert (await store.count_jobs())[JobState.PROCESSING] == total


async def test_earliest_run_at_is_exactly_the_earliest_waiting_job(store: Store) -> None:
    assert await store.earliest_run_at() is None
    first = datetime(2030, 1, 1, 12, 30, 15, 123456, tzinfo=UTC)
    await store.add_jobs([new("later", run_at=first + timedelta(days=1)), new("first", run_at=first)])
    assert await store.earliest_run_at() == first
