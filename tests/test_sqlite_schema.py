"""Opening SQLite stores: migrations of existing files, and files that are not ours."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from test_store import new

from queuectl.errors import StoreCorrupt
from queuectl.models import JobState
from queuectl.storage import open_store
from queuectl.storage.sqlite import schema as sqlite_schema


def make_version_1_store(path: Path) -> None:
    """A store as the first release wrote it: schema version 1, with one job."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("CREATE TABLE queuectl_schema (version INTEGER NOT NULL)")
    connection.execute("INSERT INTO queuectl_schema (version) VALUES (1)")
    for statement in sqlite_schema.MIGRATIONS[0].split(";"):
        if statement.strip():
            connection.execute(statement)
    connection.execute(
        "INSERT INTO jobs (id, command, queue, priority, timeout, max_retries, run_at, state,"
        " created_at, updated_at) VALUES ('old', 'echo old', 'default', 0, NULL, 3, 0, 'pending', 0, 0)"
    )
    connection.close()


async def test_an_existing_store_is_migrated_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    make_version_1_store(path)
    store = await open_store(str(path))
    try:
        old = await store.get_job("old")
        assert old.command == "echo old" and old.state is JobState.PENDING
        await store.add_jobs([new("new", delay=60)])
        assert await store.next_run_at() is not None  # served by the index migration 8 made
        (claim,) = await store.claim(worker_id="w", queues=None, limit=1, lease=30)
        assert claim.job.id == "old"
    finally:
        await store.close()
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT version FROM queuectl_schema").fetchall() == [
        (sqlite_schema.SCHEMA_VERSION,)
    ]
    indexes = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "jobs_queue_due" in indexes and "jobs_waiting_run_at" not in indexes  # replaced, not added
    connection.close()


async def test_reopening_a_current_store_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    store = await open_store(str(path))
    await store.add_jobs([new("a")])
    await store.close()
    reopened = await open_store(str(path))
    try:
        assert [job.id for job in await reopened.list_jobs()] == ["a"]
    finally:
        await reopened.close()


async def test_a_store_from_a_newer_queuectl_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    store = await open_store(str(path))
    await store.close()
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("UPDATE queuectl_schema SET version = 999")
    connection.close()
    before = path.read_bytes()
    with pytest.raises(StoreCorrupt, match="999"):
        await open_store(str(path))
    assert path.read_bytes() == before


async def test_recent_starts_of_a_rate_limited_queue_still_count_once_kept_per_bucket(tmp_path: Path) -> None:
    # Migration 9 keeps a rated queue's starts per hundredth of its window: the starts recorded
    # one row each before it must still spend the queue's rate afterwards.
    path = tmp_path / "queue.db"
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("CREATE TABLE queuectl_schema (version INTEGER NOT NULL)")
    connection.execute("INSERT INTO queuectl_schema (version) VALUES (8)")
    for script in sqlite_schema.MIGRATIONS[:8]:
        for statement in sqlite_schema.statements(script):
            connection.execute(statement)
    now = time.time()
    connection.execute("INSERT INTO queues (name, rate_count, rate_seconds) VALUES ('api', 2, 3600)")
    connection.executemany(
        "INSERT INTO queue_starts (queue, started_at) VALUES (?, ?)",
        [("api", now - 600), ("api", now - 60), ("api", now - 7200)],  # the last one is out of the window
    )
    connection.close()
    store = await open_store(str(path))
    try:
        await store.add_jobs([new("limited", queue="api"), new("free", queue="other")])
        claims = await store.claim(worker_id="w", queues=None, limit=2, lease=30, flow=True)
        assert [claim.job.id for claim in claims] == ["free"]
    finally:
        await store.close()
    connection = sqlite3.connect(path)
    assert connection.execute(
        "SELECT sum(starts) FROM queue_starts WHERE started_at > ?", (now - 3700,)
    ).fetchone() == (2,)
    connection.close()
