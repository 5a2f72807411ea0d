"""Enqueue into a SQLite store without an event loop: what the short-lived CLI process uses.

``queuectl enqueue`` does one insert; starting asyncio and aiosqlite for it would
cost more than the rest of the process. This is the same insert, the same
transaction and the same durability as ``SqliteStore.add_jobs``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from queuectl.config import Settings
from queuectl.errors import DuplicateJob
from queuectl.models import Job, NewJob
from queuectl.storage import sqlite_schema
from queuectl.storage.sqlite_rows import INSERT, insert_rows, needs_settings, stored_job


def add_jobs_now(path: Path, jobs: Sequence[NewJob]) -> list[Job]:
    """Insert all of ``jobs`` or none, in one fsynced transaction; return them as stored."""
    if not jobs:
        return []
    connection = sqlite_schema.connect(path, durable=True)
    try:
        with sqlite_schema.translate_errors(path):
            connection.execute("BEGIN IMMEDIATE")
            try:
                settings = _settings(connection) if needs_settings(jobs) else None
                rows = insert_rows(jobs, settings, time.time())
                connection.executemany(INSERT, rows)
                connection.execute("COMMIT")
            except sqlite3.IntegrityError as error:
                sqlite_schema.rollback(connection)
                raise _duplicate(connection, jobs) from error
            except BaseException:
                sqlite_schema.rollback(connection)  # a full disk may have rolled back already
                raise
    finally:
        connection.close()
    return [stored_job(row) for row in rows]


def _settings(connection: sqlite3.Connection) -> Settings:
    return Settings.from_stored(dict(connection.execute("SELECT key, value FROM settings").fetchall()))


def _duplicate(connection: sqlite3.Connection, jobs: Sequence[NewJob]) -> DuplicateJob:
    for job in jobs:
        if connection.execute("SELECT 1 FROM jobs WHERE id = ?", (job.id,)).fetchone():
            return DuplicateJob(f"a job with id {job.id!r} already exists")
    return DuplicateJob()
