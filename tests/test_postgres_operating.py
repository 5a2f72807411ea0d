"""What only the PostgreSQL store does for operating jobs (version 2 of the SPEC): its migration,
the statements' plans and plain paths, and the checks after a lost reply.

The behaviour both stores share (cancel, retry, purge, history, live output) is proven in
``test_store_operating.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from queuectl.config import Settings
from queuectl.models import AttemptOutcome, AttemptRecord, Claim, JobState, NewJob, Outcome
from queuectl.storage.postgres import results, rows, schema, sql
from queuectl.storage.postgres.store import PostgresStore

pytestmark = pytest.mark.postgres

RESOLVED = {"timeout": Settings().default_timeout, "max_retries": Settings().max_retries}


def new(job_id: str, **fields: object) -> NewJob:
    return NewJob(id=job_id, command="true", **{**RESOLVED, **fields})  # type: ignore[arg-type]


def ended(state: JobState, out: bytes = b"", *, streamed: bool = False) -> Outcome:
    now = datetime.now(UTC)
    return Outcome(
        state=state,
        exit_code=0 if state is JobState.COMPLETED else 1,
        error=None if state in (JobState.COMPLETED, JobState.CANCELLED) else "exit code 1",
        started_at=now,
        finished_at=now,
        stdout=out,
        stderr=b"",
        worker="w",
        host="h",
        pid=7,
        streamed=streamed,
    )


def stopped() -> AttemptRecord:
    now = datetime.now(UTC)
    return AttemptRecord(
        worker="w",
        host="h",
        pid=7,
        started_at=None,
        finished_at=now,
        exit_code=None,
        outcome=AttemptOutcome.STOPPED,
        error=None,
    )


@pytest.fixture
async def store(postgres_target: str) -> AsyncIterator[PostgresStore]:
    opened = await PostgresStore.open(postgres_target)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def connection(postgres_target: str) -> AsyncIterator[Any]:
    """A plain connection to the test schema (for the tables the store does not show)."""
    import asyncpg

    connected = await asyncpg.connect(postgres_target)
    try:
        yield connected
    finally:
        await connected.close()


async def claim_one(store: PostgresStore) -> Claim:
    (claim,) = await store.claim(worker_id="w", queues=None, limit=1, lease=300)
    return claim


async def plan(connection: Any, statement: str, *arguments: object) -> str:
    """``EXPLAIN`` of ``statement``, sequential scans off: an index that can serve it is used."""
    async with connection.transaction():
        await connection.execute("SET LOCAL enable_seqscan = off")
        found = await connection.fetch(f"EXPLAIN {statement}", *arguments)
    return "\n".join(row[0] for row in found)


# --- the migration -------------------------------------------------------------------------------


async def test_a_version_1_store_migrates_with_its_jobs(postgres_target: str, connection: Any) -> None:
    await connection.execute(schema._MIGRATIONS[0])
    await connection.execute("CREATE TABLE queuectl_schema (version integer NOT NULL)")
    await connection.execute("INSERT INTO queuectl_schema (version) VALUES (1)")
    at = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    for job_id, state, token, out in (
        ("waits", "pending", None, b""),
        ("runs", "processing", "t.1", b""),
        ("done", "completed", None, b"old output\n"),
    ):
        await connection.execute(
            "INSERT INTO jobs (id, command, queue, priority, timeout, max_retries, run_at, state,"
            " attempts, created_at, updated_at, finished_at, stdout, claim_token, worker_id,"
            " lease_expires_at) VALUES ($1, 'true', 'default', 0, NULL, 3, $2, $3, 1, $2, $2,"
            " $4, $5, $6, $7, $8)",
            job_id,
            at,
            state,
            at if state == "completed" else None,
            out,
            token,
            "w" if token else None,
            at - timedelta(days=3650) if token else None,  # a lease that lapsed long ago
        )

    store = await PostgresStore.open(postgres_target)
    try:
        version = await connection.fetchval("SELECT version FROM queuectl_schema")
        assert version == schema.SCHEMA_VERSION
        done = await store.get_job("done")
        assert (done.state, done.stdout, done.finished_at, done.run_at) == (
            JobState.COMPLETED,
            b"old output\n",
            at,
            at,
        )
        assert done.history == () and done.env is None and done.cwd is None
        assert done.progress is None and done.schedule is None
        # The job held before the upgrade lapsed long ago, and is taken back as before.
        (lapsed,) = await store.lapsed_claims()
        assert (lapsed.job.id, lapsed.token) == ("runs", "t.1")
        assert await store.finish(lapsed, ended(JobState.FAILED))
        assert len((await store.get_job("runs")).history) == 1
        # The old check on the state knows 'cancelled' now.
        assert (await store.cancel_job("waits")).state is JobState.CANCELLED
        assert (await store.count_jobs())[JobState.CANCELLED] == 1
        indexes = {
            row["indexname"]
            for row in await connection.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            )
        }
        assert {"jobs_held", "jobs_cancelled_held", "job_chunks_job"} <= indexes
        assert "jobs_lease" not in indexes
    finally:
        await store.close()


async def test_a_version_2_store_migrates_with_its_history(postgres_target: str, connection: Any) -> None:
    for migration in schema._MIGRATIONS[:2]:
        await connection.execute(migration)
    await connection.execute("CREATE TABLE queuectl_schema (version integer NOT NULL)")
    await connection.execute("INSERT INTO queuectl_schema (version) VALUES (2)")
    at = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    entry = (
        '{"worker": "w-old", "host": "old-host", "pid": 41,'
        ' "started_at": "2030-01-02T03:04:05.678901Z", "finished_at": "2030-01-02T03:04:05.678901Z",'
        ' "exit_code": 0, "outcome": "completed", "error": null}'
    )
    await connection.execute(
        "INSERT INTO jobs (id, command, queue, priority, timeout, max_retries, run_at, state, attempts,"
        " created_at, updated_at, finished_at, stdout, history, entries) VALUES ('done', 'true',"
        " 'default', 0, NULL, 3, $1, 'completed', 1, $1, $1, $1, 'old', $2::jsonb, 1)",
        at,
        f"[{entry}]",
    )
    store = await PostgresStore.open(postgres_target)
    try:
        (before,) = (await store.get_job("done")).history
        assert (before.worker, before.host, before.pid, before.started_at) == ("w-old", "old-host", 41, at)
        await store.retry_job("done")
        assert await store.finish(await claim_one(store), ended(JobState.FAILED, b"2nd"))
        assert await store.finish(await claim_one(store), ended(JobState.COMPLETED, b"3rd"))
        history = (await store.get_job("done")).history
        assert history[0] == before
        assert [entry.outcome for entry in history[1:]] == [AttemptOutcome.FAILED, AttemptOutcome.COMPLETED]
        assert [(await store.attempt_output("done", n))[0] for n in (1, 2, 3)] == [b"old", b"2nd", b"3rd"]
    finally:
        await store.close()


# --- statements and plans ------------------------------------------------------------------------


async def test_a_prefix_is_a_range_of_the_primary_key(store: PostgresStore, connection: Any) -> None:
    ids = ["abc", "abc-1", "abcé", "ab-c", "abd", "abb", "ABC", "xabc"]
    await store.add_jobs([new(job_id) for job_id in ids])
    assert await store.ids_with_prefix("abc", limit=10) == ["abc", "abc-1", "abcé"]
    assert await store.ids_with_prefix("ab", limit=2) == ["ab-c", "abb"]
    assert await store.ids_with_prefix("é", limit=10) == []
    explained = await plan(connection, sql.IDS_WITH_PREFIX, "abc", 10)
    assert "Scan using jobs_pkey" in explained and "Index Cond: ((id >= 'abc'::text) AND (id < " in explained


async def test_cancelled_claims_read_their_own_tiny_index(store: PostgresStore, connection: Any) -> None:
    await store.add_jobs([new("a"), new("b")])
    first, second = await store.claim(worker_id="w", queues=None, limit=2, lease=300)
    await store.cancel_job(second.job.id)
    assert await store.cancelled_claims([first.token, second.token, "other"]) == {second.token}
    assert "jobs_cancelled_held" in await plan(connection, sql.CANCELLED_CLAIMS, [first.token])
    assert "jobs_held" in await plan(connection, sql.LAPSED)


def test_the_plain_path_of_a_result_is_one_update() -> None:
    """A first attempt without live output: no earlier output to move, no chunks to drop."""
    plain = results.finish(first=True, streamed=False)
    assert "job_outputs" not in plain and "job_chunks" not in plain
    assert plain.count("UPDATE") == 1
    assert "job_outputs" in results.finish() and "job_chunks" in results.finish(first=True, streamed=True)
    claim_part = results.finish_and_claim(queues=True, first=True)
    assert "job_outputs" not in claim_part and f"${results.FINISH_PARAMETERS + 5}::text[]" in claim_part


async def test_only_a_later_entry_moves_the_output_before_it(store: PostgresStore, connection: Any) -> None:
    await store.add_jobs([new("a", max_retries=5)])
    claim = await claim_one(store)
    assert claim.job.finished_at is None  # the store takes the plain path by this
    assert await store.finish(claim, ended(JobState.FAILED, b"first\n"))
    assert await connection.fetchval("SELECT count(*) FROM job_outputs") == 0
    # Its entry is in the latest entry's columns, not yet appended to the array.
    kept = await connection.fetchrow("SELECT history::text, attempt_outcome FROM jobs WHERE id = 'a'")
    assert tuple(kept) == ("[]", "failed")
    claim = await claim_one(store)
    assert claim.job.finished_at is not None
    accepted, _ = await store.finish_and_claim(
        claim, ended(JobState.FAILED, b""), worker_id="w", queues=None, limit=1, lease=300
    )
    assert accepted
    stored = await connection.fetch("SELECT entry, stdout FROM job_outputs")
    assert [(row["entry"], bytes(row["stdout"])) for row in stored] == [(1, b"first\n")]
    # The second entry had no output: nothing to move for it.
    claim = await claim_one(store)
    assert await store.finish(claim, ended(JobState.COMPLETED, b"third\n"))
    assert await connection.fetchval("SELECT count(*) FROM job_outputs") == 1
    outputs = [(await store.attempt_output("a", entry))[0] for entry in (1, 2, 3)]
    assert outputs == [b"first\n", b"", b"third\n"]


async def test_the_history_keeps_the_latest_entries_and_their_outputs(
    store: PostgresStore, connection: Any
) -> None:
    total = 103
    await store.add_jobs([new("a", max_retries=1000)])
    for number in range(1, total + 1):
        state = JobState.COMPLETED if number == total else JobState.FAILED
        assert await store.finish(await claim_one(store), ended(state, b"%d" % number))
    job = await store.get_job("a")
    assert len(job.history) == 100 and job.stdout == b"%d" % total
    assert (await store.live_output("a", after=0)).entries == total
    assert await store.attempt_output("a", total - 99) == (b"%d" % (total - 99), b"")
    assert await store.attempt_output("a", total - 100) == (b"", b"")
    assert await connection.fetchval("SELECT min(entry) FROM job_outputs") == total - 99
    assert await connection.fetchval("SELECT count(*) FROM job_outputs") == 99


# --- after a lost reply ----------------------------------------------------------------------------


async def test_a_release_whose_reply_was_lost_is_recognised(store: PostgresStore, connection: Any) -> None:
    await store.add_jobs([new("a")])
    claim = await claim_one(store)
    attempt = stopped()
    entry = rows.entry_arguments(attempt)
    assert not await connection.fetch(results.RELEASED_AS, "a", *entry)
    assert await store.release(claim, attempt)
    # The check compares what the server built from the same values: timestamps included.
    assert await connection.fetch(results.RELEASED_AS, "a", *entry)
    job = await store.get_job("a")
    assert job.history == (attempt,) and job.state is JobState.PENDING and job.attempts == 0


async def test_output_appended_again_after_a_lost_reply_is_not_doubled(
    store: PostgresStore, connection: Any
) -> None:
    await store.add_jobs([new("a")])
    claim = await claim_one(store)
    arguments = ("a", claim.token, "1/2", 300.0, [1, 2], [0, 0], [b"out", b"err"], 1000, "nobody")
    assert (await connection.fetch(results.APPEND_OUTPUT, *arguments))[0]["held"] == 1
    assert (await connection.fetch(results.APPEND_OUTPUT_AGAIN, *arguments))[0]["held"] == 1
    chunks = (await store.live_output("a", after=0)).chunks
    assert [(chunk.stream, chunk.offset, chunk.data) for chunk in chunks] == [(1, 0, b"out"), (2, 0, b"err")]


# --- live output and its wake-ups -------------------------------------------------------------------


async def test_output_wakes_a_follower_on_another_connection(postgres_target: str) -> None:
    writer = await PostgresStore.open(postgres_target)
    follower = await PostgresStore.open(postgres_target)
    try:
        await writer.add_jobs([new("a")])
        claim = await claim_one(writer)
        await follower.wait_for_change(10)  # returns once its LISTEN connection is up
        for write in (
            lambda: writer.append_output(claim, [(1, 0, b"hello\n")], progress=None, keep=100, lease=300),
            lambda: writer.cancel_job("a"),
        ):
            waiting = asyncio.create_task(follower.wait_for_change(30))
            await asyncio.sleep(0.1)
            began = time.monotonic()
            await write()
            await asyncio.wait_for(waiting, 10)
            assert time.monotonic() - began < 5  # woken by the NOTIFY, not the 30 s timeout
    finally:
        await writer.close()
        await follower.close()


async def test_chunks_of_a_lost_attempt_go_with_the_next_ones(store: PostgresStore, connection: Any) -> None:
    await store.add_jobs([new("a")])
    lost = await claim_one(store)
    assert await store.append_output(lost, [(1, 0, b"lost\n")], progress=None, keep=100, lease=300)
    assert await store.finish(lost, ended(JobState.FAILED))  # its worker never dropped its chunks
    again = await claim_one(store)
    assert (await store.live_output("a", after=0)).chunks == ()  # not the running attempt's
    assert await store.append_output(again, [(1, 0, b"new\n")], progress="50%", keep=100, lease=300)
    stored = await connection.fetch("SELECT entry, data FROM job_chunks")
    assert [(row["entry"], bytes(row["data"])) for row in stored] == [(2, b"new\n")]
    assert (await store.get_job("a")).progress == "50%"


async def test_purge_takes_the_outputs_and_chunks_along(store: PostgresStore, connection: Any) -> None:
    await store.add_jobs([new("a", max_retries=1, priority=1), new("b")])
    claim = await claim_one(store)
    await store.append_output(claim, [(1, 0, b"x")], progress=None, keep=100, lease=300)
    assert await store.finish(claim, ended(JobState.FAILED, b"one"))  # chunks left behind
    claim = await claim_one(store)
    assert claim.job.id == "a"
    assert await store.finish(claim, ended(JobState.COMPLETED, b"two"))
    assert await connection.fetchval("SELECT count(*) FROM job_outputs") == 1
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert await store.purge_batch(state=[JobState.COMPLETED], queue=[], finished_before=later, limit=10) == 1
    assert [job.id for job in await store.list_jobs()] == ["b"]
    assert await connection.fetchval("SELECT count(*) FROM job_outputs") == 0
    assert await connection.fetchval("SELECT count(*) FROM job_chunks") == 0


# --- JSON fields -----------------------------------------------------------------------------------


async def test_env_reads_back_in_the_order_given(store: PostgresStore, postgres_target: str) -> None:
    env = {"ZED": "1", "ALPHA": "é ü", "EMPTY": ""}
    (added,) = await store.add_jobs([new("a", env=env, cwd="/srv/app")])
    assert list(added.env or {}) == ["ZED", "ALPHA", "EMPTY"]
    assert (await store.get_job("a")).env == env
    # What add_jobs compares after a lost reply: the rows as given, JSON fields too.
    arrays = rows.insert_arguments([new("a", env=env, cwd="/srv/app")])
    found = await store._database.fetch(sql.ADDED_RECENTLY, ["a"], 60.0)
    assert rows.stored(found) == rows.given(arrays)
    assert urlsplit(postgres_target).scheme == "postgresql"
