"""``store copy`` on PostgreSQL: reading a schema as a source, writing one as a target.

The source is read in one ``REPEATABLE READ READ ONLY`` transaction (one moment of the store,
and nothing written) and never migrated: it must be at this queuectl's schema version. The
target is created or migrated as any store is, then written in one transaction, each table
by one ``COPY`` per batch: a copy that is killed, or loses its connection, is rolled back by
the server. Both use a connection of their own, outside the store's pool: a transaction this
long must not be retried on a fresh connection as the store's work is.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from queuectl.config import Settings
from queuectl.copying.tables import (
    JOBS,
    LIVE_OUTPUT,
    REPLACED,
    Kind,
    Table,
    first_batch_size,
    next_batch_size,
)
from queuectl.errors import StoreCorrupt, StoreError, StoreUnavailable
from queuectl.models import AttemptRecord
from queuectl.storage.postgres.connection import describe_target, reason, server_settings
from queuectl.storage.postgres.listen import channel_name
from queuectl.storage.postgres.rows import seconds, to_json
from queuectl.storage.postgres.schema import SCHEMA_VERSION, migrate
from queuectl.storage.postgres.sql import LIVE_WORKERS

Row = tuple[Any, ...]

#: Where each canonical table is kept in a PostgreSQL store.
_TABLE_NAMES = {"outputs": "job_outputs", "live_output": "job_chunks", "dependencies": "job_dependencies"}
#: The tables whose ``seq`` is a sequence that must go on after the copied rows.
_SEQUENCED = (JOBS, LIVE_OUTPUT)


def table_name(table: Table) -> str:
    return _TABLE_NAMES.get(table.name, table.name)


# --- values ---------------------------------------------------------------------------------
#
# The server reads times as epoch seconds and empty arrays as NULL (``_SELECTED``): most rows
# then need no Python work on the way out. COPY takes no expressions: on the way in, Python
# makes each value what its column takes.


def _history(text: str) -> tuple[AttemptRecord, ...]:
    return tuple(AttemptRecord.from_dict(entry) for entry in json.loads(text))


def _history_text(records: tuple[AttemptRecord, ...] | None) -> str:
    """As the store writes entries (``history.entry_of``): times as ISO text with a Z."""
    return "[]" if not records else to_json([record.to_dict() for record in records])


def _moment(epoch: float | None) -> datetime | None:
    """A ``timestamptz`` from epoch seconds, never past the calendar's ends."""
    if epoch is None:
        return None
    try:
        return datetime.fromtimestamp(epoch, UTC)
    except (OverflowError, ValueError):
        return (datetime.max if epoch > 0 else datetime.min).replace(tzinfo=UTC)


#: Columns read through SQL that makes them canonical.
_SELECTED = {
    Kind.TIME: "extract(epoch FROM {})::float8",
    Kind.MINUTE: "extract(epoch FROM {})::float8",
    Kind.LIST: "NULLIF({}, '[]')",
    Kind.HISTORY: "NULLIF({}, '[]'::jsonb)",
}
#: Canonical values (not ``None``) from what the server sends.
_READ: dict[Kind, Callable[[Any], Any]] = {Kind.HISTORY: _history}
#: What the columns take, from canonical values, ``None`` included.
_WRITE: dict[Kind, Callable[[Any], Any]] = {
    Kind.TIME: _moment,
    Kind.MINUTE: _moment,
    Kind.BYTES: lambda value: b"" if value is None else value,
    Kind.LIST: lambda value: "[]" if value is None else value,
    Kind.HISTORY: _history_text,
}


def _converter(
    table: Table, by_kind: dict[Kind, Callable[[Any], Any]], *, nulls: bool
) -> Callable[[Any], Row]:
    """One row of ``table`` with the values of converted kinds converted (``None`` too if ``nulls``)."""
    places = tuple(
        (place, by_kind[column.kind]) for place, column in enumerate(table.columns) if column.kind in by_kind
    )
    if not places:
        return tuple

    def convert(row: Any) -> Row:
        if not nulls and all(row[place] is None for place, _ in places):
            return tuple(row)
        values = list(row)
        for place, function in places:
            value = values[place]
            if nulls or value is not None:
                values[place] = function(value)
        return tuple(values)

    return convert


def _selected(table: Table) -> str:
    return ", ".join(_SELECTED.get(column.kind, "{}").format(f'"{column.name}"') for column in table.columns)


# --- connections --------------------------------------------------------------------------------


@contextlib.contextmanager
def _failures(url: str) -> Iterator[None]:
    """The driver's errors as ``StoreError`` naming the server (never its password)."""
    import asyncpg

    try:
        yield
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise StoreError(f"PostgreSQL at {describe_target(url)} failed: {reason(error, url)}") from error


async def _connect(url: str, *, application_name: str | None = None) -> Any:
    try:
        import asyncpg
    except ImportError as missing:
        raise StoreUnavailable(
            "PostgreSQL support needs the extra: pip install 'queuectl[postgres]'"
        ) from missing
    settings = server_settings(url)
    if application_name is not None:
        settings = {"application_name": application_name}
    try:
        return await asyncpg.connect(url, timeout=10.0, command_timeout=None, server_settings=settings)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as error:
        raise StoreUnavailable(
            f"cannot connect to PostgreSQL at {describe_target(url)}: {reason(error, url)}"
        ) from error


async def _version(connection: Any) -> int:
    """The schema version, 0 when there are no queuectl tables (nothing is created)."""
    import asyncpg

    try:
        version = await connection.fetchval("SELECT max(version) FROM queuectl_schema")
    except asyncpg.UndefinedTableError:
        return 0
    return int(version or 0)


# --- the source ---------------------------------------------------------------------------------


class PostgresSource:
    """A PostgreSQL store read as it is at one moment, never written."""

    def __init__(self, url: str, connection: Any, *, schema: str | None, tag: str) -> None:
        self.url = url
        self.where = describe_target(url)
        self.schema = schema
        #: The connection's ``application_name``: how a target on the same server recognises it.
        self.tag = tag
        self._connection = connection

    @classmethod
    async def open(cls, url: str) -> PostgresSource:
        tag = f"queuectl copy {uuid.uuid4()}"
        connection = await _connect(url, application_name=tag)
        try:
            with _failures(url):
                version = await _version(connection)
                _check_version(version, describe_target(url))
                await connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                schema = await connection.fetchval("SELECT current_schema()")
        except BaseException:
            connection.terminate()
            raise
        return cls(url, connection, schema=schema, tag=tag)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._connection.close(timeout=5)
        self._connection.terminate()

    async def live_workers(self) -> int:
        with _failures(self.url):
            stored = {
                row["key"]: row["value"]
                for row in await self._connection.fetch("SELECT key, value FROM settings")
            }
            lease = Settings.from_stored(stored).lease
            return len(await self._connection.fetch(LIVE_WORKERS, seconds(lease)))

    async def count_jobs(self) -> int:
        with _failures(self.url):
            return int(await self._connection.fetchval("SELECT count(*) FROM jobs"))

    async def read(self, table: Table) -> AsyncIterator[list[Row]]:
        """The rows of ``table``, canonical, in batches (in the table's physical order: no sort)."""
        convert = _converter(table, _READ, nulls=False)
        size = first_batch_size(table)
        with _failures(self.url):
            cursor = await self._connection.cursor(f"SELECT {_selected(table)} FROM {table_name(table)}")
        while True:
            with _failures(self.url):
                records = await cursor.fetch(size)
            if not records:
                return
            rows = [convert(record) for record in records]
            yield rows
            size = next_batch_size(table, rows, size)


def _check_version(version: int, where: str) -> None:
    if version == 0:
        raise StoreCorrupt(f"there is no queuectl store at {where}")
    if version > SCHEMA_VERSION:
        raise StoreCorrupt(
            f"the store at {where} has schema version {version}; this queuectl knows up to {SCHEMA_VERSION}"
        )
    if version < SCHEMA_VERSION:
        raise StoreUnavailable(
            f"the store at {where} has schema version {version}, older than this queuectl's"
            f" ({SCHEMA_VERSION}); copying never writes to the source: run any command on it first"
            " (queuectl --db URL status) to migrate it, then copy"
        )


# --- the target ---------------------------------------------------------------------------------


class PostgresTarget:
    """A PostgreSQL store written in one transaction: ``begin``, ``write`` each table, ``commit``."""

    def __init__(self, url: str, connection: Any) -> None:
        self.url = url
        self.where = describe_target(url)
        self._connection = connection
        self._transaction: Any = None

    @classmethod
    async def connect(cls, url: str) -> PostgresTarget:
        """Connect, changing nothing yet (``holds_jobs``, ``is_source``, then ``prepare``)."""
        return cls(url, await _connect(url))

    async def holds_jobs(self) -> bool:
        with _failures(self.url):
            if await _version(self._connection) == 0:
                return False
            return bool(await self._connection.fetchval("SELECT EXISTS (SELECT 1 FROM jobs)"))

    async def is_source(self, source: PostgresSource) -> bool:
        """Whether this is ``source``'s store: the same server, database and schema."""
        with _failures(self.url):
            schema = await self._connection.fetchval("SELECT current_schema()")
            if schema is None or schema != source.schema:
                return False
            return bool(
                await self._connection.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity"
                    " WHERE application_name = $1 AND datname = current_database())",
                    source.tag,
                )
            )

    async def prepare(self) -> None:
        """Create or migrate the schema, as opening the store for any command would."""
        with _failures(self.url):
            await migrate(self._connection, self.where)

    async def close(self) -> None:
        """Roll back what is not committed (closing the connection does), and close."""
        with contextlib.suppress(Exception):
            await self._connection.close(timeout=5)
        self._connection.terminate()

    async def begin(self, refuse_jobs: Callable[[], Exception]) -> None:
        """Lock out other writers of jobs; raise ``refuse_jobs()`` if the store holds a job;
        empty the tables the copy replaces."""
        with _failures(self.url):
            self._transaction = self._connection.transaction()
            await self._transaction.start()
            await self._connection.execute("LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE")
            if await self._connection.fetchval("SELECT EXISTS (SELECT 1 FROM jobs)"):
                raise refuse_jobs()
            for table in REPLACED:
                await self._connection.execute(f"DELETE FROM {table_name(table)}")

    async def write(self, table: Table, batches: AsyncIterator[list[Row]]) -> int:
        """``COPY`` every row of ``batches`` in; how many there were."""
        convert = _converter(table, _WRITE, nulls=True)
        written = 0
        async for rows in batches:
            with _failures(self.url):
                await self._connection.copy_records_to_table(
                    table_name(table), records=[convert(row) for row in rows], columns=table.column_names
                )
            written += len(rows)
        return written

    async def commit(self) -> None:
        """Move the sequences past the copied rows, wake the target's idle workers, commit."""
        with _failures(self.url):
            for table in _SEQUENCED:
                name = table_name(table)
                await self._connection.execute(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'seq'), max(seq)) FROM {name}"
                    " HAVING max(seq) IS NOT NULL"
                )
            schema = await self._connection.fetchval("SELECT current_schema()")
            await self._connection.execute("SELECT pg_notify($1, 'added')", channel_name(schema))
            await self._transaction.commit()
