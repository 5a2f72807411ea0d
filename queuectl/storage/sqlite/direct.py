"""Writing jobs into a SQLite store with plain ``sqlite3``, without an event loop.

``queuectl.enqueue`` inserts through ``transaction``: the same insert (``rows.INSERT``), the same
one transaction and the same durability as ``SqliteStore.add_jobs``, in a short-lived process
that never starts asyncio (jobs with a unique key or dependencies: ``flow_insert``, the same plan
as the store's). ``duplicate_of`` words the refusal of a taken id for both.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import chain, repeat
from typing import TYPE_CHECKING

from queuectl.errors import DuplicateJob
from queuectl.storage.flow import uses_flow
from queuectl.storage.sqlite import schema as sqlite_schema
from queuectl.storage.sqlite.rows import (
    INSERT,
    INSERT_PAIRS,
    SELECT_SETTINGS,
    insert_row,
    insert_rows,
    pairs_parameters,
    settings_from_rows,
    stored_job,
)

if TYPE_CHECKING:
    from pathlib import Path

    from queuectl.config import Settings
    from queuectl.models import Job, NewJob

#: JSON functions and ``->>`` are built into SQLite from 3.38; older ones take ``executemany``.
HAS_JSON = sqlite3.sqlite_version_info >= (3, 38, 0)
#: Well under SQLite's default limit of 1,000,000,000 bytes for one string; beyond, ``executemany``.
MAX_PAIRS_CHARS = 100_000_000
#: Ids looked up at once when an insert hit a taken one (SQLite allows 32,766 parameters).
_LOOKUP_CHUNK = 500


class Writer:
    """What one ``transaction`` does: read the settings, insert jobs (as they are: resolved)."""

    __slots__ = ("_connection", "_now", "ids")

    def __init__(self, connection: sqlite3.Connection, now: float) -> None:
        self._connection = connection
        self._now = now
        #: The ids inserted so far, to name a taken one.
        self.ids: list[Sequence[str]] = []

    def settings(self) -> Settings:
        """The store's settings, read in this transaction."""
        return settings_from_rows(self._connection.execute(SELECT_SETTINGS).fetchall())

    def add_jobs(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Insert ``jobs``; return them as stored (``storage.flow``: a key's holder in a job's place)."""
        self.ids.append([job.id for job in jobs])
        if uses_flow(jobs):
            from queuectl.storage.sqlite import flow_insert

            return flow_insert.run(flow_insert.add_jobs(jobs, self._now), self._connection)
        rows = insert_rows(jobs, self._now)
        self._connection.executemany(INSERT, rows)
        return [stored_job(row) for row in rows]

    def add_commands(self, ids: Sequence[str], commands: Sequence[str], shared: NewJob) -> None:
        """Insert a job per id and command, every other field as in ``shared`` (its id and command unused).

        The bulk path of ``enqueue-file``: no ``NewJob`` or ``Job`` per row.
        """
        self.ids.append(ids)
        if HAS_JSON and sum(map(len, commands)) < MAX_PAIRS_CHARS:
            import json  # not at import: `queuectl enqueue` starts faster without it

            # ensure_ascii=False: strings pass through as they are, with no escapes to decode.
            pairs = json.dumps(list(zip(ids, commands, strict=True)), ensure_ascii=False)
            self._connection.execute(INSERT_PAIRS, {**pairs_parameters(shared, self._now), "pairs": pairs})
            return
        others = insert_row(shared, self._now)[2:]
        self._connection.executemany(INSERT, zip(ids, commands, *map(repeat, others), strict=False))


@contextmanager
def transaction(path: Path) -> Iterator[Writer]:
    """One ``BEGIN IMMEDIATE`` transaction on the store at ``path`` (checked, created or migrated).

    Committed when the block ends, fsynced (a ``durable`` connection: enqueued jobs survive
    power loss), rolled back if it raises. An insert of a taken id raises ``DuplicateJob``.
    """
    connection = sqlite_schema.connect(path, durable=True)
    try:
        with sqlite_schema.translate_errors(path):
            # Waits for another writer in slices, so that Ctrl-C is not held up (``patiently``).
            sqlite_schema.patiently(lambda: connection.execute("BEGIN IMMEDIATE"))
            writer = Writer(connection, time.time())
            try:
                yield writer
                connection.execute("COMMIT")
            except sqlite3.IntegrityError as error:
                sqlite_schema.rollback(connection)
                raise duplicate_of(connection, list(chain.from_iterable(writer.ids))) from error
            except BaseException:
                sqlite_schema.rollback(connection)  # a full disk may have rolled back already
                raise
    finally:
        connection.close()


def duplicate_of(connection: sqlite3.Connection, ids: Sequence[str]) -> DuplicateJob:
    """The refusal of an insert of ``ids`` that broke the unique index: it names the first taken id.

    Run after the insert rolled back, so a taken id is one stored before.
    """
    for start in range(0, len(ids), _LOOKUP_CHUNK):
        chunk = ids[start : start + _LOOKUP_CHUNK]
        marks = ", ".join("?" * len(chunk))
        taken = {row[0] for row in connection.execute(f"SELECT id FROM jobs WHERE id IN ({marks})", chunk)}
        for job_id in chunk:
            if job_id in taken:
                return DuplicateJob(f"a job with id {job_id!r} already exists")
    return DuplicateJob()
