"""The SQLite store's hot path runs in the event loop's thread, but never blocks it on a lock."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from helpers import wait_until
from test_store import new

from queuectl.models import JobState, Outcome
from queuectl.storage.sqlite.store import SqliteStore

LEASE = 300.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "queue.db")
    try:
        yield opened
    finally:
        await opened.close()


def completed() -> Outcome:
    now = datetime.now(UTC)
    return Outcome(
        state=JobState.COMPLETED,
        exit_code=0,
        error=None,
        started_at=now,
        finished_at=now,
        stdout=b"",
        stderr=b"",
        retry_in=0.0,
    )


async def test_a_locked_store_makes_claims_wait_without_blocking_the_loop(store: SqliteStore) -> None:
    await store.add_jobs([new("a"), new("b")])
    with closing(sqlite3.connect(store.path, isolation_level=None)) as other:
        for _ in range(2):  # twice: after the first wait the lane must be back to not waiting
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            claiming = asyncio.create_task(store.claim(worker_id="w", queues=None, limit=1, lease=LEASE))
            ticks = 0
            with anyio.fail_after(30):
                while ticks < 20:  # the loop keeps running while the claim waits for the lock
                    await asyncio.sleep(0.01)
                    ticks += 1
            assert not claiming.done()
            other.execute("COMMIT")
            with anyio.fail_after(30):
                claims = await claiming
            assert len(claims) == 1 and claims[0].job.state is JobState.PROCESSING


async def test_finish_and_claim_waits_for_the_lock_and_is_all_or_nothing(store: SqliteStore) -> None:
    await store.add_jobs([new("a"), new("b")])
    (first,) = await store.claim(worker_id="w", queues=None, limit=1, lease=LEASE)
    with closing(sqlite3.connect(store.path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        writing = asyncio.create_task(
            store.finish_and_claim(first, completed(), worker_id="w", queues=None, limit=1, lease=LEASE)
        )
        await asyncio.sleep(0.1)
        states = dict(other.execute("SELECT id, state FROM jobs").fetchall())
        assert states == {"a": "processing", "b": "pending"}  # nothing written while it waits
        other.execute("COMMIT")
    with anyio.fail_after(30):
        accepted, claims = await writing
    assert accepted and [claim.job.id for claim in claims] == ["b"]
    assert (await store.get_job("a")).state is JobState.COMPLETED


async def test_the_wal_stays_bounded_without_checkpoints_in_the_loop(store: SqliteStore) -> None:
    # The lane never checkpoints; the store does, in the background. Without that, 1,200 results
    # and claims would leave a WAL of some 30 MiB (each writes six or seven 4 KiB pages).
    count = 1200
    await store.add_jobs([new(f"job-{n}") for n in range(count + 1)])
    (claim,) = await store.claim(worker_id="w", queues=None, limit=1, lease=LEASE)
    for _ in range(count):
        accepted, (claim,) = await store.finish_and_claim(
            claim, completed(), worker_id="w", queues=None, limit=1, lease=LEASE
        )
        assert accepted
        await asyncio.sleep(0)  # a worker waits for its jobs in between: the loop gets a turn
    wal = store.path.with_name(store.path.name + "-wal")
    assert wal.stat().st_size < 16 * 1024 * 1024
    counts = await store.count_jobs()
    assert (counts[JobState.COMPLETED], counts[JobState.PROCESSING]) == (count, 1)


async def test_the_durable_connection_is_opened_once_however_many_ask_at_once(tmp_path: Path) -> None:
    """A worker's first retention purge and an application's first enqueue come together: a second
    connection, never closed, would keep its thread alive and the process from exiting."""
    import threading

    def connection_threads() -> int:
        return sum("_connection_worker_thread" in thread.name for thread in threading.enumerate())

    before = connection_threads()
    store = await SqliteStore.open(tmp_path / "q.db")
    database = store._db
    connections = await asyncio.gather(*(database.durable() for _ in range(5)))
    assert all(connection is connections[0] for connection in connections)
    await store.close()
    # aiosqlite's threads end just after their connection closes.
    wait_until(lambda: connection_threads() <= before, what="the connections' threads to end")
