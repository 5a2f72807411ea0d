"""``store copy`` on a SQLite file: reading one as a source, writing one as a target.

The source is opened read-only (a ``mode=ro`` URI) and never migrated: it must be at this
queuectl's schema version. All its tables are read in one read transaction, so the copy is one
moment of the store even if something writes to it meanwhile. The target is created or
migrated as any store is, then written in one ``BEGIN IMMEDIATE`` transaction: a copy that is
killed leaves uncommitted pages in the write-ahead log, which SQLite discards on the next open.

Plain ``sqlite3`` calls run in a worker thread (``asyncio.to_thread``), one at a time per
connection, so that the other store's driver works meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from itertools import compress
from operator import is_not
from pathlib import Path
from typing import Any, TypeVar

from queuectl.config import Settings
from queuectl.copying.tables import (
    JOBS,
    REPLACED,
    Kind,
    Table,
    first_batch_size,
    next_batch_size,
)
from queuectl.errors import StoreCorrupt, StoreUnavailable
from queuectl.models import AttemptRecord
from queuectl.storage.sqlite import schema
from queuectl.storage.sqlite.history import ENTRY_KEYS
from queuectl.storage.sqlite.sql import LIVE_WORKERS

Row = tuple[Any, ...]
T = TypeVar("T")

#: Where each canonical table is kept in a SQLite store.
_TABLE_NAMES = {"outputs": "job_outputs", "live_output": "output_chunks", "dependencies": "job_dependencies"}
#: Writing many rows: a bigger page cache spills fewer pages to the log before the commit.
_CACHE_KIB = 256 * 1024


def table_name(table: Table) -> str:
    return _TABLE_NAMES.get(table.name, table.name)


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


# --- values ---------------------------------------------------------------------------------
#
# Times are epoch seconds here as in the row stream, and an empty history is NULL in SQL
# (``NULLIF`` on the way out, ``coalesce`` on the way in): most rows need no Python work.


def _history(text: str) -> tuple[AttemptRecord, ...]:
    return tuple(AttemptRecord.from_dict(entry) for entry in json.loads(text))


def _entry_text(record: AttemptRecord) -> str:
    """An entry as SQLite's ``json_object`` writes it (``history.entry_object``): times as JSON
    numbers of epoch seconds with six decimals."""
    pairs = []
    for key in ENTRY_KEYS:
        value = getattr(record, key)
        if isinstance(value, datetime):
            text = f"{value.timestamp():.6f}"
        elif value is not None and key == "outcome":
            text = json.dumps(value.value, ensure_ascii=False)
        else:
            text = json.dumps(value, ensure_ascii=False)
        pairs.append(f'"{key}":{text}')
    return "{" + ",".join(pairs) + "}"


def _history_text(records: tuple[AttemptRecord, ...]) -> str:
    return "[" + ",".join(_entry_text(record) for record in records) + "]"


#: Columns read through SQL that makes them canonical.
_SELECTED = {Kind.HISTORY: "NULLIF({}, '[]')"}
#: Values written through SQL that makes them SQLite's.
_INSERTED = {Kind.HISTORY: "coalesce(?, '[]')"}
#: Values (not ``None``) converted in Python, read and written.
_READ: dict[Kind, Callable[[Any], Any]] = {Kind.BOOL: bool, Kind.HISTORY: _history}
_WRITE: dict[Kind, Callable[[Any], Any]] = {
    Kind.MINUTE: int,
    Kind.BOOL: int,
    Kind.HISTORY: _history_text,
    Kind.BYTES: bytearray,  # bound as it is; bytes take the adapter lookup (see ``write``)
}


def _converter(table: Table, by_kind: dict[Kind, Callable[[Any], Any]]) -> Callable[[list[Row]], list[Row]]:
    """Rows of ``table`` with each value of a converted kind converted (``None`` stays)."""
    places = tuple(
        (place, by_kind[column.kind]) for place, column in enumerate(table.columns) if column.kind in by_kind
    )

    def convert(rows: list[Row]) -> list[Row]:
        if not places:
            return rows
        converted = []
        for row in rows:
            if all(row[place] is None for place, _ in places):
                converted.append(row)
                continue
            values = list(row)
            for place, function in places:
                value = values[place]
                if value is not None:
                    values[place] = function(value)
            converted.append(tuple(values))
        return converted

    return convert


class _Inserts:
    """The ``INSERT`` statements of ``table``, one per set of columns that are NULL."""

    def __init__(self, table: Table) -> None:
        self._prefix = f"INSERT INTO {table_name(table)} ({_quoted(table.column_names)}) VALUES"
        self._values = [_INSERTED.get(column.kind, "?") for column in table.columns]
        self._made: dict[tuple[bool, ...], str] = {}

    def of(self, present: tuple[bool, ...]) -> str:
        """The statement binding the values ``present`` says are there, NULL for the others."""
        statement = self._made.get(present)
        if statement is None:
            values = (
                value if there else value.replace("?", "NULL")
                for value, there in zip(self._values, present, strict=True)
            )
            statement = self._made[present] = f"{self._prefix} ({', '.join(values)})"
        return statement


def _selected(table: Table) -> str:
    return ", ".join(_SELECTED.get(column.kind, "{}").format(f'"{column.name}"') for column in table.columns)


# --- one connection, one thread at a time ----------------------------------------------------


class _Serial:
    """A plain ``sqlite3`` connection used from worker threads, one call at a time.

    A cancelled ``asyncio.to_thread`` call (Ctrl-C) goes on running in its thread: closing the
    connection, or rolling back, meanwhile would crash the process or let the rest of an insert
    commit row by row. Every call holds the lock, so ``close`` waits for the one in flight.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._connection = connection
        self._lock = threading.Lock()
        self._closed = False

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock, schema.translate_errors(self.path):
                if self._closed:
                    raise StoreUnavailable(f"the store {self.path} is closed")
                return work(self._connection)

        return await asyncio.to_thread(locked)

    async def close(self) -> None:
        """Roll back what is not committed, and close."""

        def close(connection: sqlite3.Connection) -> None:
            self._closed = True
            try:
                schema.rollback(connection)
            finally:
                connection.close()

        await self.run(close)


# --- the source -------------------------------------------------------------------------------


class SqliteSource:
    """A SQLite store read as it is at one moment, never written (``open`` says what it checks)."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._serial = _Serial(path, connection)

    @classmethod
    async def open(cls, path: Path) -> SqliteSource:
        return await asyncio.to_thread(cls._open, path)

    @classmethod
    def _open(cls, path: Path) -> SqliteSource:
        if not path.exists():
            raise StoreUnavailable(f"there is no store at {path}")
        schema.check_file(path)
        with schema.translate_errors(path):
            uri = f"{path.resolve().as_uri()}?mode=ro"
            connection = sqlite3.connect(
                uri,
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=schema.BUSY_TIMEOUT_SECONDS,
            )
            try:
                _check_version(connection, path)
                # One read transaction for every table: the copy is one moment of the store.
                connection.execute("BEGIN")
                connection.execute("SELECT count(*) FROM queuectl_schema").fetchone()
            except BaseException:
                connection.close()
                raise
        return cls(path, connection)

    async def close(self) -> None:
        await self._serial.close()

    async def live_workers(self) -> int:
        """How many workers have sent a heartbeat within the store's ``lease``."""

        def count(connection: sqlite3.Connection) -> int:
            stored = dict(connection.execute("SELECT key, value FROM settings").fetchall())
            lease = Settings.from_stored(stored).lease
            return len(connection.execute(LIVE_WORKERS, (time.time() - lease,)).fetchall())

        return await self._serial.run(count)

    async def count_jobs(self) -> int:
        def count(connection: sqlite3.Connection) -> int:
            (found,) = connection.execute("SELECT count(*) FROM jobs").fetchone()
            return int(found)

        return await self._serial.run(count)

    async def read(self, table: Table) -> AsyncIterator[list[Row]]:
        """The rows of ``table``, canonical, in batches."""
        convert = _converter(table, _READ)
        query = f"SELECT {_selected(table)} FROM {table_name(table)}"
        cursor = await self._serial.run(lambda connection: connection.execute(query))
        size = first_batch_size(table)

        def fetch(size: int) -> Callable[[sqlite3.Connection], list[Row]]:
            return lambda _: convert(cursor.fetchmany(size))

        # Not closed here if the copy stops early: another thread may be using it then; closing
        # the connection (``_Serial.close``, which waits for that thread) finalizes it.
        while rows := await self._serial.run(fetch(size)):
            yield rows
            size = next_batch_size(table, rows, size)


def _check_version(connection: sqlite3.Connection, path: Path) -> None:
    """Refuse a source that is not at this queuectl's schema version: migrating it would write."""
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "queuectl_schema" not in tables:
        raise StoreCorrupt(f"{path} is not a queuectl store; it was left untouched")
    row = connection.execute("SELECT version FROM queuectl_schema").fetchone()
    version = 0 if row is None else int(row[0])
    if version > schema.SCHEMA_VERSION:
        raise StoreCorrupt(
            f"the store {path} has schema version {version};"
            f" this queuectl knows up to {schema.SCHEMA_VERSION}"
        )
    if version < schema.SCHEMA_VERSION:
        raise StoreUnavailable(
            f"the store {path} has schema version {version}, older than this queuectl's"
            f" ({schema.SCHEMA_VERSION}); copying never writes to the source: run any command on it"
            f" first (queuectl --db {path} status) to migrate it, then copy"
        )


# --- the target -------------------------------------------------------------------------------


def holds_jobs(path: Path) -> bool:
    """Whether an existing store at ``path`` holds any job, read without changing it."""
    if not path.exists():
        return False
    schema.check_file(path)
    with schema.translate_errors(path):
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        try:
            tables = {
                row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if "jobs" not in tables or "queuectl_schema" not in tables:
                return False
            return bool(connection.execute("SELECT EXISTS (SELECT 1 FROM jobs)").fetchone()[0])
        finally:
            connection.close()


class SqliteTarget:
    """A SQLite store written in one transaction: ``begin``, ``write`` each table, ``commit``."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._serial = _Serial(path, connection)

    @classmethod
    async def open(cls, path: Path) -> SqliteTarget:
        """Create or migrate the store (as opening it for any command would)."""
        connection = await asyncio.to_thread(schema.connect, path, durable=True)
        return cls(path, connection)

    async def close(self) -> None:
        """Roll back what is not committed, and close."""
        await self._serial.close()

    async def begin(self, refuse_jobs: Callable[[], Exception]) -> None:
        """Take the write lock; raise ``refuse_jobs()`` if the store holds a job; empty the
        tables the copy replaces."""

        def begin(connection: sqlite3.Connection) -> None:
            connection.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
            schema.patiently(lambda: connection.execute("BEGIN IMMEDIATE"))
            if connection.execute("SELECT EXISTS (SELECT 1 FROM jobs)").fetchone()[0]:
                raise refuse_jobs()
            for table in REPLACED:
                connection.execute(f"DELETE FROM {table_name(table)}")

        await self._serial.run(begin)

    async def write(self, table: Table, batches: AsyncIterator[list[Row]]) -> int:
        """Insert every row of ``batches``; how many there were."""
        convert = _converter(table, _WRITE)
        statements = _Inserts(table)
        nones = (None,) * len(table.columns)

        def insert_rows(connection: sqlite3.Connection, rows: list[Row]) -> None:
            if not connection.in_transaction:  # never a row outside the one transaction
                raise StoreUnavailable(f"the copy's transaction on {self.path} ended early")
            # Rows by which of their values are NULL, each group by a statement that writes
            # those NULLs itself: ``sqlite3`` binds ``None`` through its adapter lookup, several
            # times slower than a number, and most of a job's columns are NULL.
            groups: dict[tuple[bool, ...], list[Row]] = {}
            for row in convert(rows):
                present = tuple(map(is_not, row, nones))
                groups.setdefault(present, []).append(tuple(compress(row, present)))
            for present, values in groups.items():
                connection.executemany(statements.of(present), values)

        written = 0
        async for rows in batches:
            await self._serial.run(functools.partial(insert_rows, rows=rows))
            written += len(rows)
        return written

    async def commit(self) -> None:
        """Work out what SQLite keeps beside the copied columns, then commit."""

        def commit(connection: sqlite3.Connection) -> None:
            _set_links(connection)
            connection.execute("COMMIT")
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        await self._serial.run(commit)


def _set_links(connection: sqlite3.Connection) -> None:
    """Each waiting job's ``links`` (how many jobs are above it in its longest chain of waits,
    ``flow_insert``) from the dependencies copied: only a chain still waiting counts."""
    above: dict[str, list[str]] = {}
    for depends_on, job_id in connection.execute("SELECT depends_on, job_id FROM job_dependencies"):
        above.setdefault(job_id, []).append(depends_on)
    links: dict[str, int] = {}
    for start in above:
        # Depth first without recursion (a chain may be hundreds of jobs long): a job's links
        # once those of every job it waits on are known.
        stack, opened = [(start, False)], set()
        while stack:
            job_id, expanded = stack.pop()
            if job_id in links:
                continue
            if expanded:
                links[job_id] = max(links.get(up, 0) + 1 for up in above[job_id])
                continue
            opened.add(job_id)
            stack.append((job_id, True))
            stack.extend((up, False) for up in above[job_id] if up in above and up not in opened)
    connection.executemany(
        f"UPDATE {JOBS.name} SET links = ? WHERE id = ?", [(n, job) for job, n in links.items()]
    )
