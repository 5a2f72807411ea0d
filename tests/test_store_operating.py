"""Operating jobs at the store seam (version 2): history, earlier attempts' output, live output,
cancel, retry, purge, id prefixes. Every backend, through the ``store`` fixture; what only one
store has (its migrations, its tables) at the end."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from helpers import wait_for

from queuectl.config import Settings
from queuectl.enqueue import check, resolve
from queuectl.errors import JobNotFound, JobStateConflict
from queuectl.models import AttemptOutcome, AttemptRecord, Claim, JobState, NewJob, Outcome
from queuectl.purging import purge
from queuectl.records import fields
from queuectl.storage import Store, open_store
from queuectl.storage.base import HISTORY_LIMIT
from queuectl.storage.sqlite import history as sqlite_history
from queuectl.storage.sqlite import schema as sqlite_schema
from queuectl.storage.sqlite.schema import SCHEMA_VERSION

LONG_LEASE = 300.0


def new(job_id: str, **fields: object) -> NewJob:
    """A job as the façade hands it to a store: checked, its defaults filled in."""
    return resolve(check({"id": job_id, "command": "true", **fields}), Settings())


def ended(
    state: JobState,
    *,
    stdout: bytes = b"",
    stderr: bytes = b"",
    exit_code: int | None = None,
    error: str | None = None,
    retry_in: float = 0.0,
    finished_at: datetime | None = None,
    streamed: bool = False,
    worker: str = "w1",
) -> Outcome:
    """How an attempt ended, as a worker on host ``h`` would record it."""
    finished = finished_at or datetime.now(UTC)
    if exit_code is None and state is not JobState.CANCELLED:
        exit_code = 0 if state is JobState.COMPLETED else 1
    if error is None and state in (JobState.FAILED, JobState.DEAD):
        error = f"exit code {exit_code}"
    return Outcome(
        state=state,
        exit_code=exit_code,
        error=error,
        started_at=finished - timedelta(seconds=1),
        finished_at=finished,
        stdout=stdout,
        stderr=stderr,
        retry_in=retry_in,
        worker=worker,
        host="h",
        pid=4242,
        streamed=streamed,
    )


def stopped(worker: str = "w1") -> AttemptRecord:
    now = datetime.now(UTC)
    return AttemptRecord(
        worker=worker,
        host="h",
        pid=4242,
        started_at=now - timedelta(seconds=1),
        finished_at=now,
        exit_code=None,
        outcome=AttemptOutcome.STOPPED,
        error="stopped",
    )


async def claim_one(store: Store, worker_id: str = "w1", lease: float = LONG_LEASE) -> Claim:
    claims = await store.claim(worker_id=worker_id, queues=None, limit=1, lease=lease)
    assert len(claims) == 1
    return claims[0]


async def run_once(store: Store, job_id: str, outcome: Outcome) -> None:
    """Claim ``job_id`` (the only due job) and record ``outcome`` for it."""
    claim = await claim_one(store)
    assert claim.job.id == job_id
    assert await store.finish(claim, outcome)


async def entries(store: Store, job_id: str) -> int:
    return (await store.live_output(job_id, after=2**62)).entries


async def wait_until_lapsed(store: Store, job_id: str) -> Claim:
    found: list[Claim] = []

    async def lapsed() -> bool:
        found[:] = [claim for claim in await store.lapsed_claims() if claim.job.id == job_id]
        return bool(found)

    await wait_for(lapsed, what=f"the lease of {job_id} to lapse")
    return found[0]


# --- new fields -----------------------------------------------------------------------------


async def test_cwd_and_env_are_stored_and_handed_to_the_claim(store: Store) -> None:
    env = {"GREETING": "héllo wörld", "EMPTY": "", "QUOTE": 'a"b\\c'}
    (added,) = await store.add_jobs([new("a", cwd="/srv/app", env=env)])
    await store.add_jobs([new("plain")])
    assert (added.cwd, added.env) == ("/srv/app", env)
    stored = await store.get_job("a")
    assert (stored.cwd, stored.env, stored.progress, stored.schedule, stored.history) == (
        "/srv/app",
        env,
        None,
        None,
        (),
    )
    assert {job.id: job.env for job in await store.list_jobs()} == {"a": env, "plain": None}
    claims = await store.claim(worker_id="w", queues=None, limit=2, lease=LONG_LEASE)
    assert {claim.job.id: (claim.job.cwd, claim.job.env) for claim in claims} == {
        "a": ("/srv/app", env),
        "plain": (None, None),
    }


async def test_counts_have_cancelled_and_unfinished_leaves_it_out(store: Store) -> None:
    counts = await store.count_jobs()
    assert counts == dict.fromkeys(JobState, 0) and JobState.CANCELLED in counts
    await store.add_jobs([new("a")])
    await store.cancel_job("a")
    assert (await store.count_jobs())[JobState.CANCELLED] == 1
    assert not await store.has_unfinished(None)


async def test_ids_with_prefix_is_a_sorted_range(store: Store) -> None:
    ids = ["abc-2", "abc-1", "abd", "ab", "abcé", "xabc", "ABC-3"]
    await store.add_jobs([new(job_id) for job_id in ids])
    assert await store.ids_with_prefix("abc", limit=10) == ["abc-1", "abc-2", "abcé"]
    assert await store.ids_with_prefix("abc", limit=2) == ["abc-1", "abc-2"]
    assert await store.ids_with_prefix("ab", limit=10) == ["ab", "abc-1", "abc-2", "abcé", "abd"]
    assert await store.ids_with_prefix("abc-1", limit=10) == ["abc-1"]
    assert await store.ids_with_prefix("nope", limit=10) == []


# --- history and earlier attempts' output -----------------------------------------------------


async def test_history_keeps_every_attempt_and_its_output(store: Store) -> None:
    await store.add_jobs([new("a", max_retries=5)])
    await run_once(store, "a", ended(JobState.FAILED, stdout=b"one\xff", stderr=b"e1", exit_code=3))
    (first,) = (await store.get_job("a")).history
    await run_once(store, "a", ended(JobState.FAILED, exit_code=4))  # no output at all
    await run_once(store, "a", ended(JobState.COMPLETED, stdout=b"three", worker="w2"))
    job = await store.get_job("a")
    assert job.history[0] == first  # the same entry, to the microsecond, once others followed
    assert job.state is JobState.COMPLETED and job.attempts == 3
    assert [(entry.outcome, entry.exit_code, entry.error, entry.worker) for entry in job.history] == [
        (AttemptOutcome.FAILED, 3, "exit code 3", "w1"),
        (AttemptOutcome.FAILED, 4, "exit code 4", "w1"),
        (AttemptOutcome.COMPLETED, 0, None, "w2"),
    ]
    latest = job.history[-1]
    assert (latest.host, latest.pid, latest.finished_at) == ("h", 4242, job.finished_at)
    assert latest.started_at is not None and latest.finished_at is not None
    assert latest.finished_at - latest.started_at == timedelta(seconds=1)
    assert await entries(store, "a") == 3
    assert await store.attempt_output("a", 1) == (b"one\xff", b"e1")
    assert await store.attempt_output("a", 2) == (b"", b"")
    assert await store.attempt_output("a", 3) == (b"three", b"") == (job.stdout, job.stderr)
    for missing in (0, 4, -1):
        assert await store.attempt_output("a", missing) == (b"", b"")
    with pytest.raises(JobNotFound):
        await store.attempt_output("ghost", 1)


async def test_history_survives_a_retry(store: Store) -> None:
    await store.add_jobs([new("a", max_retries=0)])
    await run_once(store, "a", ended(JobState.DEAD, stdout=b"first"))
    retried = await store.retry_job("a")
    assert retried.state is JobState.PENDING and retried.attempts == 0
    await run_once(store, "a", ended(JobState.COMPLETED, stdout=b"second"))
    job = await store.get_job("a")
    assert [entry.outcome for entry in job.history] == [AttemptOutcome.FAILED, AttemptOutcome.COMPLETED]
    assert job.attempts == 1
    assert await store.attempt_output("a", 1) == (b"first", b"")
    assert await store.attempt_output("a", 2) == (b"second", b"")


async def test_history_keeps_the_latest_entries_and_their_outputs(store: Store) -> None:
    total = HISTORY_LIMIT + 5
    await store.add_jobs([new("a", max_retries=total)])
    for number in range(1, total + 1):
        state = JobState.COMPLETED if number == total else JobState.FAILED
        await run_once(store, "a", ended(state, stdout=f"run {number}".encode(), exit_code=number % 256))
    job = await store.get_job("a")
    assert len(job.history) == HISTORY_LIMIT
    assert await entries(store, "a") == total
    first_kept = total - HISTORY_LIMIT + 1
    assert [entry.exit_code for entry in job.history] == [n % 256 for n in range(first_kept, total + 1)]
    assert await store.attempt_output("a", first_kept - 1) == (b"", b"")
    assert await store.attempt_output("a", first_kept) == (f"run {first_kept}".encode(), b"")
    assert await store.attempt_output("a", total) == (f"run {total}".encode(), b"")


async def test_release_records_a_stopped_attempt_that_does_not_count(store: Store) -> None:
    await store.add_jobs([new("a")])
    await run_once(store, "a", ended(JobState.FAILED, stdout=b"first"))
    claim = await claim_one(store)
    assert claim.job.attempts == 2
    assert await store.release(claim, stopped())
    job = await store.get_job("a")
    assert job.state is JobState.PENDING and job.attempts == 1
    assert [entry.outcome for entry in job.history] == [AttemptOutcome.FAILED, AttemptOutcome.STOPPED]
    assert (job.stdout, job.stderr) == (b"", b"")  # the stopped attempt kept none
    assert await store.attempt_output("a", 1) == (b"first", b"")
    assert await store.release(claim, stopped()) is False


# --- cancel ----------------------------------------------------------------------------------


async def test_cancel_a_waiting_job(store: Store) -> None:
    await store.add_jobs([new("pending"), new("failed", priority=1)])
    await store.finish(await claim_one(store), ended(JobState.FAILED, retry_in=3600.0))
    for job_id in ("pending", "failed"):
        job = await store.cancel_job(job_id)
        assert (job.id, job.state, job.last_error) == (job_id, JobState.CANCELLED, "cancelled")
    # The failed attempt's entry keeps its own error.
    assert [entry.error for entry in (await store.get_job("failed")).history] == ["exit code 1"]
    assert await store.claim(worker_id="w", queues=None, limit=5, lease=LONG_LEASE) == []
    assert await store.lapsed_claims() == []
    assert (await store.count_jobs())[JobState.CANCELLED] == 2


async def test_cancel_refuses_final_and_unknown_jobs(store: Store) -> None:
    await store.add_jobs([new("done")])
    await run_once(store, "done", ended(JobState.COMPLETED))
    with pytest.raises(JobStateConflict, match="completed"):
        await store.cancel_job("done")
    await store.add_jobs([new("twice")])
    await store.cancel_job("twice")
    with pytest.raises(JobStateConflict, match="cancelled"):
        await store.cancel_job("twice")
    with pytest.raises(JobNotFound, match="ghost"):
        await store.cancel_job("ghost")
    assert (await store.get_job("done")).state is JobState.COMPLETED


async def test_a_running_job_cancelled_stays_held_until_its_worker_records_it(store: Store) -> None:
    await store.add_jobs([new("a"), new("b")])
    claims = await store.claim(worker_id="w1", queues=None, limit=2, lease=LONG_LEASE)
    running = {claim.job.id: claim for claim in claims}
    cancelled = await store.cancel_job("a")
    assert cancelled.state is JobState.CANCELLED
    tokens = [claim.token for claim in claims]
    assert await store.cancelled_claims(tokens) == {running["a"].token}
    assert await store.cancelled_claims([]) == set()
    assert await store.has_unfinished(None)  # "b" still runs
    assert await store.renew(worker_id="w1", tokens=tokens, lease=LONG_LEASE) == set(tokens)
    # Its result is discarded, and it writes no output: the job is no longer processing.
    assert await store.finish(running["a"], ended(JobState.COMPLETED)) is False
    assert not await store.append_output(running["a"], [(1, 0, b"x")], progress=None, keep=100, lease=1)
    assert await store.finish(running["a"], ended(JobState.CANCELLED, stdout=b"partial"))
    job = await store.get_job("a")
    assert job.state is JobState.CANCELLED and job.last_error == "cancelled"
    assert job.finished_at is not None and job.stdout == b"partial"
    assert [entry.outcome for entry in job.history] == [AttemptOutcome.CANCELLED]
    assert await store.cancelled_claims(tokens) == set()
    assert await store.finish(running["a"], ended(JobState.CANCELLED)) is False
    assert await store.finish(running["b"], ended(JobState.COMPLETED))
    assert not await store.has_unfinished(None)


async def test_a_cancelled_outcome_needs_a_cancelled_job(store: Store) -> None:
    await store.add_jobs([new("a")])
    claim = await claim_one(store)
    assert await store.finish(claim, ended(JobState.CANCELLED)) is False
    assert (await store.get_job("a")).state is JobState.PROCESSING


async def test_a_cancelled_job_whose_worker_was_lost_lapses(store: Store) -> None:
    await store.add_jobs([new("a")])
    claim = await claim_one(store, lease=0.0)
    await store.cancel_job("a")
    lapsed = await wait_until_lapsed(store, "a")
    assert lapsed.token == claim.token and lapsed.job.state is JobState.CANCELLED
    assert await store.finish(lapsed, ended(JobState.CANCELLED, error="worker lost"))
    assert await store.lapsed_claims() == []
    assert (await store.get_job("a")).state is JobState.CANCELLED


async def test_release_of_a_cancelled_job_frees_it(store: Store) -> None:
    await store.add_jobs([new("a")])
    claim = await claim_one(store)
    await store.cancel_job("a")
    assert await store.release(claim, stopped())
    job = await store.get_job("a")
    assert job.state is JobState.CANCELLED and job.attempts == 0
    assert [entry.outcome for entry in job.history] == [AttemptOutcome.STOPPED]
    assert await store.cancelled_claims([claim.token]) == set()
    assert await store.claim(worker_id="w", queues=None, limit=1, lease=LONG_LEASE) == []


async def test_cancel_matching_takes_unfinished_jobs_by_state_and_queue(store: Store) -> None:
    await store.add_jobs([new("running", queue="q", priority=9), new("done", queue="q", priority=5)])
    await store.add_jobs([new("p1", queue="q"), new("p2", queue="other")])
    await claim_one(store)
    await run_once(store, "done", ended(JobState.COMPLETED))
    taken = await store.cancel_matching(state=[JobState.PENDING], queue=["q"])
    assert [(job.id, job.state) for job in taken] == [("p1", JobState.CANCELLED)]
    everything = await store.cancel_matching(state=[], queue=[])
    assert sorted(job.id for job in everything) == ["p2", "running"]
    assert (await store.get_job("running")).state is JobState.CANCELLED
    assert (await store.get_job("done")).state is JobState.COMPLETED
    assert await store.cancel_matching(state=[], queue=[]) == []
    with pytest.raises(ValueError, match="completed"):
        await store.cancel_matching(state=[JobState.COMPLETED], queue=[])


async def test_cancel_and_finish_race_one_wins(store_target: str) -> None:
    """A worker's result and a user's cancel, from two connections at once: either the job
    completed and the cancel was refused, or it was cancelled and the result discarded."""
    worker = await open_store(store_target)
    user = await open_store(store_target)
    outcomes: set[str] = set()
    try:
        for round_number in range(12):
            job_id = f"race-{round_number}"
            await worker.add_jobs([new(job_id)])
            claim = await claim_one(worker)
            results: dict[str, object] = {}

            async def finish(claim: Claim = claim, results: dict[str, object] = results) -> None:
                results["finished"] = await worker.finish(claim, ended(JobState.COMPLETED))

            async def cancel(job_id: str = job_id, results: dict[str, object] = results) -> None:
                try:
                    results["cancelled"] = await user.cancel_job(job_id)
                except JobStateConflict as error:
                    results["cancelled"] = error

            async with anyio.create_task_group() as group:
                if round_number % 2:
                    group.start_soon(finish)
                    group.start_soon(cancel)
                else:
                    group.start_soon(cancel)
                    group.start_soon(finish)
            job = await worker.get_job(job_id)
            if results["finished"]:
                assert isinstance(results["cancelled"], JobStateConflict)
                assert job.state is JobState.COMPLETED
                outcomes.add("completed")
            else:
                assert not isinstance(results["cancelled"], Exception)
                assert job.state is JobState.CANCELLED
                assert await worker.cancelled_claims([claim.token]) == {claim.token}
                assert await worker.finish(claim, ended(JobState.CANCELLED))
                outcomes.add("cancelled")
            assert len((await worker.get_job(job_id)).history) == 1
    finally:
        await worker.close()
        await user.close()
    assert outcomes  # either, never both: checked in each round


# --- retry -----------------------------------------------------------------------------------


async def test_retry_takes_final_jobs_back_with_their_history(store: Store) -> None:
    await store.add_jobs([new("done", priority=2), new("dead", priority=1, max_retries=0), new("cancelled")])
    await run_once(store, "done", ended(JobState.COMPLETED))
    await run_once(store, "dead", ended(JobState.DEAD))
    await store.cancel_job("cancelled")
    before = datetime.now(UTC) - timedelta(seconds=5)
    for job_id in ("done", "dead", "cancelled"):
        job = await store.retry_job(job_id)
        assert (job.id, job.state, job.attempts) == (job_id, JobState.PENDING, 0)
        assert before <= job.run_at <= datetime.now(UTC) + timedelta(seconds=5)
    assert [entry.outcome for entry in (await store.get_job("done")).history] == [AttemptOutcome.COMPLETED]
    with pytest.raises(JobStateConflict, match="pending"):
        await store.retry_job("done")
    with pytest.raises(JobNotFound, match="ghost"):
        await store.retry_job("ghost")
    assert (await claim_one(store)).job.id == "done"


async def test_a_job_still_being_cancelled_is_not_retried_yet(store: Store) -> None:
    await store.add_jobs([new("a")])
    claim = await claim_one(store)
    await store.cancel_job("a")
    with pytest.raises(JobStateConflict):
        await store.retry_job("a")
    assert await store.retry_matching(state=[], queue=[]) == []
    assert await store.finish(claim, ended(JobState.CANCELLED))
    assert (await store.retry_job("a")).state is JobState.PENDING


async def test_retry_matching_by_state_and_queue(store: Store) -> None:
    await store.add_jobs([new(f"c-{queue}", queue=queue) for queue in ("q", "other")])
    await store.add_jobs([new("pending", queue="q", run_at=datetime(2999, 1, 1, tzinfo=UTC))])
    for job_id in ("c-q", "c-other", "pending"):
        await store.cancel_job(job_id)
    await store.retry_job("pending")
    taken = await store.retry_matching(state=[JobState.CANCELLED], queue=["q"])
    assert [job.id for job in taken] == ["c-q"]
    assert await store.retry_matching(state=[JobState.DEAD], queue=[]) == []
    assert [job.id for job in await store.retry_matching(state=[], queue=[])] == ["c-other"]
    with pytest.raises(ValueError, match="pending"):
        await store.retry_matching(state=[JobState.PENDING], queue=[])


# --- purge -----------------------------------------------------------------------------------


async def test_purge_deletes_final_jobs_by_state_queue_and_age(store: Store) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=30)
    await store.add_jobs([new("old", queue="q"), new("new", queue="q"), new("elsewhere", queue="other")])
    await store.add_jobs(
        [new("dead", queue="q", max_retries=0), new("waiting", run_at=datetime(2999, 1, 1, tzinfo=UTC))]
    )
    await store.cancel_job("waiting")  # never ran: its age is its updated_at
    for _ in range(4):
        claim = await claim_one(store)
        state = JobState.DEAD if claim.job.id == "dead" else JobState.COMPLETED
        finished = long_ago if claim.job.id in ("old", "dead", "elsewhere") else None
        assert await store.finish(claim, ended(state, stdout=b"out", finished_at=finished))
    week_ago = datetime.now(UTC) - timedelta(days=7)
    completed = [JobState.COMPLETED]
    assert await store.purge_batch(state=completed, queue=["q"], finished_before=week_ago, limit=10) == 1
    with pytest.raises(JobNotFound):
        await store.get_job("old")
    with pytest.raises(JobNotFound):
        await store.attempt_output("old", 1)
    assert await store.purge_batch(state=completed, queue=[], finished_before=week_ago, limit=10) == 1
    assert {job.id for job in await store.list_jobs()} == {"new", "dead", "waiting"}
    cancelled = [JobState.CANCELLED]
    assert await store.purge_batch(state=cancelled, queue=[], finished_before=week_ago, limit=10) == 0
    future = datetime.now(UTC) + timedelta(hours=1)
    assert await store.purge_batch(state=cancelled, queue=[], finished_before=future, limit=10) == 1
    assert await store.purge_batch(state=completed, queue=["other"], finished_before=None, limit=10) == 0
    assert await store.purge_batch(state=completed, queue=[], finished_before=None, limit=10) == 1
    assert [job.id for job in await store.list_jobs()] == ["dead"]
    with pytest.raises(ValueError, match="pending"):
        await store.purge_batch(state=[JobState.PENDING], queue=[], finished_before=None, limit=10)


async def test_purge_goes_in_batches_and_spares_held_jobs(store: Store) -> None:
    await store.add_jobs([new("held", priority=9)])
    held = await claim_one(store)
    await store.cancel_job("held")
    await store.add_jobs([new(f"j{index}") for index in range(7)])
    for job_id in [f"j{index}" for index in range(7)]:
        await store.cancel_job(job_id)
    assert await store.purge_batch(state=[JobState.CANCELLED], queue=[], finished_before=None, limit=3) == 3
    assert await purge(store, batch=3) == 4
    assert [job.id for job in await store.list_jobs()] == ["held"]
    assert await store.finish(held, ended(JobState.CANCELLED))
    assert await purge(store) == 1
    assert await store.list_jobs() == []


# --- live output -----------------------------------------------------------------------------


async def test_live_output_follows_the_running_attempt(store: Store) -> None:
    await store.add_jobs([new("a", max_retries=3)])
    claim = await claim_one(store)
    live = await store.live_output("a", after=0)
    assert (live.entries, live.chunks, live.job.state) == (0, (), JobState.PROCESSING)
    assert await store.append_output(
        claim, [(1, 0, b"hello "), (2, 0, b"oops\n")], progress="1/3", keep=1000, lease=LONG_LEASE
    )
    live = await store.live_output("a", after=0)
    assert [(chunk.stream, chunk.offset, chunk.data) for chunk in live.chunks] == [
        (1, 0, b"hello "),
        (2, 0, b"oops\n"),
    ]
    assert live.chunks[0].seq < live.chunks[1].seq
    assert live.job.progress == "1/3" and (await store.get_job("a")).progress == "1/3"
    last = live.chunks[-1].seq
    assert await store.append_output(claim, [(1, 6, b"world\n")], progress=None, keep=1000, lease=LONG_LEASE)
    later = await store.live_output("a", after=last)
    assert [chunk.data for chunk in later.chunks] == [b"world\n"]
    assert later.job.progress == "1/3"  # None keeps the last one
    assert await store.finish(claim, ended(JobState.FAILED, stdout=b"hello world\n", streamed=True))
    live = await store.live_output("a", after=0)
    assert (live.entries, live.chunks, live.job.state) == (1, (), JobState.FAILED)
    second = await claim_one(store)
    assert second.job.progress is None  # a new attempt has reported nothing yet
    assert await store.append_output(second, [(1, 0, b"again")], progress=None, keep=1000, lease=LONG_LEASE)
    live = await store.live_output("a", after=0)
    assert live.entries == 1 and [chunk.data for chunk in live.chunks] == [b"again"]
    assert live.chunks[0].seq > later.chunks[-1].seq
    with pytest.raises(JobNotFound):
        await store.live_output("ghost", after=0)


async def test_live_output_keeps_the_end_of_each_stream(store: Store) -> None:
    await store.add_jobs([new("a")])
    claim = await claim_one(store)
    chunks = [(1, 0, b"aaaa"), (1, 4, b"bbbb"), (2, 0, b"x" * 10)]
    assert await store.append_output(claim, chunks, progress=None, keep=100, lease=LONG_LEASE)
    # stdout ends at 13: a chunk that ends before 13 - 5 = 8 goes; stderr is left as it was.
    assert await store.append_output(claim, [(1, 8, b"ccccc")], progress=None, keep=5, lease=LONG_LEASE)
    live = await store.live_output("a", after=0)
    assert [(chunk.stream, chunk.offset) for chunk in live.chunks] == [(1, 4), (2, 0), (1, 8)]
    assert await store.append_output(claim, [(2, 10, b"y")], progress=None, keep=0, lease=LONG_LEASE)
    live = await store.live_output("a", after=0)
    assert [(chunk.stream, chunk.offset) for chunk in live.chunks] == [(1, 4), (1, 8), (2, 10)]


async def test_output_is_a_sign_of_life(store: Store) -> None:
    await store.add_jobs([new("a")])
    claim = await claim_one(store, lease=0.0)
    await wait_until_lapsed(store, "a")
    assert await store.append_output(claim, [], progress="50%", keep=10, lease=LONG_LEASE)
    assert await store.lapsed_claims() == []
    assert (await store.get_job("a")).progress == "50%"


async def test_a_lost_claim_appends_nothing(store: Store) -> None:
    await store.add_jobs([new("a", max_retries=3)])
    first = await claim_one(store, lease=0.0)
    lapsed = await wait_until_lapsed(store, "a")
    assert await store.finish(lapsed, ended(JobState.FAILED, error="worker lost"))
    second = await claim_one(store, worker_id="w2")
    assert await store.append_output(second, [(1, 0, b"mine")], progress="2/2", keep=100, lease=LONG_LEASE)
    assert not await store.append_output(first, [(1, 0, b"late")], progress="1/2", keep=0, lease=LONG_LEASE)
    live = await store.live_output("a", after=0)
    assert [chunk.data for chunk in live.chunks] == [b"mine"] and live.job.progress == "2/2"


async def test_release_drops_the_live_output(store: Store) -> None:
    await store.add_jobs([new("a")])
    claim = await claim_one(store)
    assert await store.append_output(claim, [(1, 0, b"x")], progress=None, keep=10, lease=LONG_LEASE)
    assert await store.release(claim, stopped())
    live = await store.live_output("a", after=0)
    assert (live.entries, live.chunks) == (1, ())


# --- SQLite: its tables and its migrations ----------------------------------------------------


def _count(path: str, table: str) -> int:
    with sqlite3.connect(path) as connection:
        (count,) = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(count)


async def test_sqlite_keeps_earlier_output_only_when_there_is_some(sqlite_target: str) -> None:
    store = await open_store(sqlite_target)
    try:
        await store.add_jobs([new("a", max_retries=5)])
        await run_once(store, "a", ended(JobState.FAILED, stdout=b"one"))
        assert _count(sqlite_target, "job_outputs") == 0  # a first attempt moves nothing
        with closing(sqlite3.connect(sqlite_target)) as connection:
            kept = connection.execute("SELECT history, attempt_outcome FROM jobs WHERE id = 'a'").fetchone()
        assert kept == ("[]", "failed")  # nor does it append its entry to the array
        await run_once(store, "a", ended(JobState.FAILED))
        assert _count(sqlite_target, "job_outputs") == 1
        await run_once(store, "a", ended(JobState.FAILED, stdout=b"three"))
        assert _count(sqlite_target, "job_outputs") == 1  # the second had nothing to keep
        await store.add_jobs([new("quiet", max_retries=5, priority=1)])
        await run_once(store, "quiet", ended(JobState.FAILED))
        await run_once(store, "quiet", ended(JobState.FAILED))
        assert _count(sqlite_target, "job_outputs") == 1
        claim = await claim_one(store)
        assert await store.append_output(claim, [(1, 0, b"x")], progress=None, keep=10, lease=LONG_LEASE)
        assert _count(sqlite_target, "output_chunks") == 1
        await store.cancel_job("a")
        await store.cancel_job("quiet")
        await store.finish(claim, ended(JobState.CANCELLED))
        assert await purge(store) == 2
        assert (_count(sqlite_target, "job_outputs"), _count(sqlite_target, "output_chunks")) == (0, 0)
    finally:
        await store.close()


async def test_sqlite_direct_insert_stores_env(sqlite_target: str) -> None:
    from queuectl.storage.sqlite.direct import transaction

    env = {"A": "1", "B": "two words"}
    with transaction(Path(sqlite_target)) as writer:
        (job,) = writer.add_jobs([new("one", env=env, cwd="/tmp")])
        writer.add_commands(["bulk-1", "bulk-2"], ["true", "false"], new("shared", env=env))
    assert job.env == env
    store = await open_store(sqlite_target)
    try:
        jobs = {job.id: job for job in await store.list_jobs()}
        assert {job_id: job.env for job_id, job in jobs.items()} == dict.fromkeys(
            ["one", "bulk-1", "bulk-2"], env
        )
        assert jobs["one"].cwd == "/tmp" and jobs["bulk-2"].command == "false"
    finally:
        await store.close()


VERSION_2 = """
CREATE TABLE queuectl_schema (version INTEGER NOT NULL);
INSERT INTO queuectl_schema (version) VALUES (2);
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, command TEXT NOT NULL, queue TEXT NOT NULL,
    priority INTEGER NOT NULL, timeout REAL, max_retries INTEGER NOT NULL, run_at REAL NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, started_at REAL, finished_at REAL, exit_code INTEGER, last_error TEXT,
    worker_id TEXT, claim_token TEXT, lease_expires_at REAL, stdout BLOB, stderr BLOB
);
CREATE INDEX jobs_due ON jobs (priority DESC, run_at, created_at, seq) WHERE state IN ('pending', 'failed');
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE state = 'processing';
CREATE INDEX jobs_state ON jobs (state, created_at);
CREATE INDEX jobs_created ON jobs (created_at, seq);
CREATE TABLE workers (
    id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL, running INTEGER NOT NULL DEFAULT 0,
    stop_requested INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE INDEX jobs_waiting_run_at ON jobs (run_at) WHERE state IN ('pending', 'failed');
INSERT INTO settings VALUES ('max_retries', '5');
INSERT INTO jobs (id, command, queue, priority, timeout, max_retries, run_at, state, attempts,
    created_at, updated_at, started_at, finished_at, exit_code, last_error, stdout, stderr)
    VALUES ('done', 'echo hi', 'q', 3, 10.0, 2, 1700000000.0, 'completed', 1,
    1700000000.0, 1700000001.0, 1700000000.5, 1700000001.0, 0, NULL, X'68690a', X'');
INSERT INTO jobs (id, command, queue, priority, timeout, max_retries, run_at, state, attempts,
    created_at, updated_at, worker_id, claim_token, lease_expires_at, started_at)
    VALUES ('running', 'sleep 9', 'default', 0, NULL, 3, 1700000000.0, 'processing', 1,
    1700000000.0, 1700000000.0, 'w-old', 'tok', 1700000100.0, 1700000000.0);
INSERT INTO jobs (id, command, queue, priority, timeout, max_retries, run_at, state, attempts,
    created_at, updated_at) VALUES ('waiting', 'true', 'default', 0, NULL, 3, 1700000000.0,
    'pending', 0, 1700000000.0, 1700000000.0);
"""


async def test_sqlite_store_of_schema_version_2_is_migrated_with_its_jobs(sqlite_target: str) -> None:
    with sqlite3.connect(sqlite_target) as connection:
        connection.executescript(VERSION_2)
    connection.close()
    store = await open_store(sqlite_target)
    try:
        done = await store.get_job("done")
        assert (done.command, done.queue, done.priority, done.timeout, done.max_retries) == (
            "echo hi",
            "q",
            3,
            10.0,
            2,
        )
        assert (done.state, done.attempts, done.exit_code, done.stdout) == (JobState.COMPLETED, 1, 0, b"hi\n")
        assert done.finished_at == datetime.fromtimestamp(1700000001.0, UTC)
        assert (done.cwd, done.env, done.progress, done.schedule, done.history) == (
            None,
            None,
            None,
            None,
            (),
        )
        assert (await store.settings()).max_retries == 5
        counts = {state: count for state, count in (await store.count_jobs()).items() if count}
        assert counts == {JobState.COMPLETED: 1, JobState.PROCESSING: 1, JobState.PENDING: 1}
        # A claim held before the upgrade lapses as before, and its worker can still be recorded.
        (lapsed,) = await store.lapsed_claims()
        assert (lapsed.job.id, lapsed.token) == ("running", "tok")
        assert await store.finish(lapsed, ended(JobState.FAILED, error="worker lost", retry_in=3600))
        assert [entry.error for entry in (await store.get_job("running")).history] == ["worker lost"]
        await run_once(store, "waiting", ended(JobState.COMPLETED, stdout=b"ok"))
        assert await store.attempt_output("waiting", 1) == (b"ok", b"")
        assert (await store.retry_job("done")).state is JobState.PENDING
        await run_once(store, "done", ended(JobState.COMPLETED, stdout=b"again"))
        assert await entries(store, "done") == 1  # the attempt before the upgrade has no entry
    finally:
        await store.close()
    with sqlite3.connect(sqlite_target) as connection:
        assert connection.execute("SELECT version FROM queuectl_schema").fetchone() == (SCHEMA_VERSION,)
    connection.close()


def test_sqlite_history_entries_have_every_field_of_an_attempt_record() -> None:
    assert tuple(info.name for info in fields(AttemptRecord)) == sqlite_history.ENTRY_KEYS


#: An entry as version 3 of the SQLite store wrote it: times as ISO text.
VERSION_3_ENTRY = (
    '{"worker":"w-old","host":"old-host","pid":41,"started_at":"2023-11-14T22:13:20.500000Z",'
    '"finished_at":"2023-11-14T22:13:21.000000Z","exit_code":0,"outcome":"completed","error":null}'
)


async def test_sqlite_store_of_schema_version_3_keeps_its_history(sqlite_target: str) -> None:
    with sqlite3.connect(sqlite_target) as connection:
        connection.executescript(VERSION_2)
        connection.executescript(sqlite_schema.MIGRATIONS[2])
        connection.execute("UPDATE queuectl_schema SET version = 3")
        stored = f"[{VERSION_3_ENTRY}]"
        connection.execute("UPDATE jobs SET history = ?, entries = 1 WHERE id = 'done'", (stored,))
    connection.close()
    store = await open_store(sqlite_target)
    try:
        (before,) = (await store.get_job("done")).history
        assert (before.worker, before.host, before.pid, before.outcome) == (
            "w-old",
            "old-host",
            41,
            AttemptOutcome.COMPLETED,
        )
        assert before.started_at == datetime.fromtimestamp(1700000000.5, UTC)
        await store.retry_job("done")
        await run_once(store, "done", ended(JobState.FAILED, error="exit code 1", retry_in=0, stdout=b"2nd"))
        await run_once(store, "done", ended(JobState.COMPLETED, stdout=b"3rd"))
        history = (await store.get_job("done")).history
        assert history[0] == before
        assert [entry.outcome for entry in history[1:]] == [AttemptOutcome.FAILED, AttemptOutcome.COMPLETED]
        assert [await store.attempt_output("done", n) for n in (1, 2, 3)] == [
            (b"hi\n", b""),
            (b"2nd", b""),
            (b"3rd", b""),
        ]
    finally:
        await store.close()
