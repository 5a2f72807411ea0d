"""Enqueue into a SQLite store without an event loop: what the short-lived CLI process uses.

``queuectl enqueue`` does one insert; starting asyncio and aiosqlite for it would
cost more than the rest of the process. This is the same insert, the same
transaction and the same durability as ``SqliteStore.add_jobs``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Any

from queuectl.config import Settings
from queuectl.errors import DuplicateJob
from queuectl.storage.sqlite import schema as sqlite_schema
from queuectl.storage.sqlite.rows import INSERT, insert_rows, needs_settings, stored_job

if TYPE_CHECKING:
    from pathlib import Path

    from queuectl.models import Job, NewJob

#: Writes the rows inside the open transaction, given the stored settings (if asked for) and now.
Insert = Callable[[sqlite3.Connection, Settings | None, float], None]

#: The bulk insert as one statement: SQLite walks a JSON array of [id, command] pairs itself,
#: a third faster at 100,000 rows than ``executemany`` binding nine parameters a row.
INSERT_PAIRS = (
    "INSERT INTO jobs (id, command, queue, priority, timeout, max_retries, run_at, state,"
    " created_at, updated_at)"
    " SELECT value ->> 0, value ->> 1, 'default', 0, :timeout, :max_retries, :now, 'pending', :now, :now"
    " FROM json_each(:pairs) ORDER BY key"
)
#: JSON functions and ``->>`` are built into SQLite from 3.38; older ones take ``executemany``.
HAS_JSON = sqlite3.sqlite_version_info >= (3, 38, 0)
#: Well under SQLite's default limit of 1,000,000,000 bytes for one string; beyond, ``executemany``.
MAX_PAIRS_CHARS = 100_000_000


def add_jobs_now(path: Path, jobs: Sequence[NewJob]) -> list[Job]:
    """Insert all of ``jobs`` or none, in one fsynced transaction; return them as stored."""
    rows: list[tuple[Any, ...]] = []

    def insert(connection: sqlite3.Connection, settings: Settings | None, now: float) -> None:
        rows.extend(insert_rows(jobs, settings, now))
        connection.executemany(INSERT, rows)

    _write(path, insert, [job.id for job in jobs], with_settings=needs_settings(jobs))
    return [stored_job(row) for row in rows]


def add_commands_now(path: Path, ids: Sequence[str], commands: Sequence[str]) -> None:
    """Insert a job per command, with these ids and every other field at its default.

    The bulk path of ``enqueue-file``: the same transaction as ``add_jobs_now`` without a
    ``NewJob`` or a ``Job`` per row (at 100,000 rows those cost more than the insert).
    """

    def insert(connection: sqlite3.Connection, settings: Settings | None, now: float) -> None:
        assert settings is not None
        if HAS_JSON and sum(map(len, commands)) < MAX_PAIRS_CHARS:
            import json  # not at import: `queuectl enqueue` starts faster without it

            # ensure_ascii=False: strings pass through as they are, with no escapes to decode.
            pairs = json.dumps(list(zip(ids, commands, strict=True)), ensure_ascii=False)
            values = {"timeout": settings.default_timeout, "max_retries": settings.max_retries}
            connection.execute(INSERT_PAIRS, {**values, "now": now, "pairs": pairs})
            return
        defaults = ("default", 0, settings.default_timeout, settings.max_retries, now, now, now)
        connection.executemany(INSERT, zip(ids, commands, *map(repeat, defaults), strict=False))

    _write(path, insert, ids, with_settings=True)


def _write(path: Path, insert: Insert, ids: Sequence[str], *, with_settings: bool) -> None:
    """Run ``insert`` in one ``BEGIN IMMEDIATE`` transaction, fsynced on commit (``durable``)."""
    if not ids:
        return
    connection = sqlite_schema.connect(path, durable=True)
    try:
        with sqlite_schema.translate_errors(path):
            connection.execute("BEGIN IMMEDIATE")
            try:
                settings = _settings(connection) if with_settings else None
                insert(connection, settings, time.time())
                connection.execute("COMMIT")
            except sqlite3.IntegrityError as error:
                sqlite_schema.rollback(connection)
                raise _duplicate(connection, ids) from error
            except BaseException:
                sqlite_schema.rollback(connection)  # a full disk may have rolled back already
                raise
    finally:
        connection.close()


def _settings(connection: sqlite3.Connection) -> Settings:
    return Settings.from_stored(dict(connection.execute("SELECT key, value FROM settings").fetchall()))


def _duplicate(connection: sqlite3.Connection, ids: Sequence[str]) -> DuplicateJob:
    for job_id in ids:
        if connection.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone():
            return DuplicateJob(f"a job with id {job_id!r} already exists")
    return DuplicateJob()
