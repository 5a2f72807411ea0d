"""Adding jobs that use flow control to a PostgreSQL store: unique keys and dependencies (``after``).

The rules are ``storage.flow``'s; the jobs go in one by one, in one transaction. Two things
differ from SQLite, where the write lock serialises everything:

- The jobs named in ``after`` are locked (``FOR NO KEY UPDATE``, in id order, so that two
  enqueues never deadlock) before their states are read: an unfinished one cannot end, and a
  final one cannot be retried, until this transaction commits. A worker recording its end
  waits, then its trigger (``jobs_dependency_ended``, migration 4) sees the new dependents.
- A unique key's holder is found after the insert skipped (``ON CONFLICT DO NOTHING``, which
  waits for a concurrent insert of the same key to commit or roll back). The holder may end
  between the skipped insert and the read: then the key is free, and the insert is tried again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from queuectl.models import Job, NewJob
from queuectl.storage.flow import CANCELLING, UNFINISHED, ended, pick, unknown
from queuectl.storage.postgres import rows, sql
from queuectl.storage.postgres.schema import Connection, Row

_UNFINISHED = f"state IN {UNFINISHED}"
_AFTER = sql.GIVEN_FIELDS.index("after")
_COUNT = len(sql.INSERT_FIELDS)
#: One job from the arrays of ``rows.insert_arguments``, then its state, waiting and last_error.
_INSERT = f"""
INSERT INTO jobs ({", ".join(sql.GIVEN_FIELDS)}, run_at, state, attempts, created_at, updated_at,
    waiting, last_error)
SELECT {", ".join(f"t.{name}" for name in sql.GIVEN_FIELDS)},
       coalesce(t.run_at, now() + t.delay * interval '1 second'), ${_COUNT + 1}, 0, now(), now(),
       ${_COUNT + 2}::integer, ${_COUNT + 3}::text
FROM unnest({", ".join(f"${n}::{sql.array_type(name)}" for n, name in enumerate(sql.INSERT_FIELDS, 1))})
     AS t({", ".join(sql.INSERT_FIELDS)})
"""
INSERT = f"{_INSERT} RETURNING {sql.JOB_COLUMNS}"
#: Inserts nothing while an unfinished job holds the key (the partial unique index ``jobs_unique_key``).
INSERT_UNLESS_HELD = (
    f"{_INSERT} ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND {_UNFINISHED}"
    f" DO NOTHING RETURNING {sql.JOB_COLUMNS}"
)
HOLDER = f"SELECT {sql.JOB_COLUMNS} FROM jobs WHERE unique_key = $1 AND {_UNFINISHED}"
#: Jobs whose id may start with a prefix: a range of the primary key (its collation is "C").
STATES_WITH_PREFIX = (
    "SELECT id, state FROM jobs WHERE id >= $1 AND id < $1 || chr(1114111) ORDER BY id LIMIT 10"
)
LOCK = "SELECT id, state FROM jobs WHERE id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE"
ADD_DEPENDENCIES = """
WITH counted AS (
    UPDATE jobs SET dependents = dependents + 1 WHERE id = ANY($1::text[]) RETURNING id
)
INSERT INTO job_dependencies (depends_on, job_id) SELECT id, $2 FROM counted
"""


async def add_jobs(connection: Connection, jobs: Sequence[NewJob]) -> list[Job]:
    """Insert ``jobs`` (resolved), inside the caller's transaction; return them as stored, in
    order (the holder of a job's unique key in its place). ``JobNotFound``, ``AmbiguousId``."""
    added: list[Job] = []
    held_by: dict[str, str] = {}  # a job not inserted -> the job that holds its key
    for job in jobs:
        arrays = rows.insert_arguments([job])
        waits: list[str] = []
        cancelled_by: str | None = None
        if job.after:
            named = await _dependencies(connection, [held_by.get(text, text) for text in job.after])
            for dependency, state in named:
                if state in UNFINISHED:
                    waits.append(dependency)
                elif state in CANCELLING and cancelled_by is None:
                    cancelled_by = ended(dependency, state)
            arrays[_AFTER] = [rows.to_json([dependency for dependency, _ in named])]
        if cancelled_by is not None:
            extra: tuple[Any, ...] = ("cancelled", 0, cancelled_by)
            waits = []
        else:
            extra = ("pending", len(waits), None)
        if job.unique_key is None or cancelled_by is not None:
            inserted = await connection.fetch(INSERT, *arrays, *extra)
        else:
            found = await _insert_unless_held(connection, job.unique_key, [*arrays, *extra])
            if found[0]["id"] != job.id:
                held_by[job.id] = found[0]["id"]
                added.append(rows.job_from_row(found[0]))
                continue
            inserted = found
        if waits:
            await connection.execute(ADD_DEPENDENCIES, waits, job.id)
        added.append(rows.job_from_row(inserted[0]))
    return added


async def _insert_unless_held(connection: Connection, key: str, arguments: list[Any]) -> list[Row]:
    """The job inserted, or the unfinished job that holds ``key`` (tried again if it just ended)."""
    while True:
        inserted = await connection.fetch(INSERT_UNLESS_HELD, *arguments)
        if inserted:
            return inserted
        holders = await connection.fetch(HOLDER, key)
        if holders:
            return holders


async def _dependencies(connection: Connection, texts: list[str]) -> list[tuple[str, str]]:
    """The ids and states, locked, of the jobs ``texts`` name (``flow.pick``), each once, in order."""
    ids: list[str] = []
    for text in texts:
        found = await connection.fetch(STATES_WITH_PREFIX, text)
        job_id, _ = pick(text, [(row["id"], row["state"]) for row in found])
        if job_id not in ids:
            ids.append(job_id)
    locked = {row["id"]: row["state"] for row in await connection.fetch(LOCK, ids)}
    missing = [job_id for job_id in ids if job_id not in locked]
    if missing:  # deleted (purged) between the two reads
        raise unknown(missing[0])
    return [(job_id, locked[job_id]) for job_id in ids]


async def added_before(
    connection: Connection, jobs: Sequence[NewJob], found: Sequence[Row]
) -> list[Job] | None:
    """What an earlier try of ``add_jobs`` returned, if it committed before its reply was lost:
    ``found`` holds the batch's jobs stored lately, and every other job's key has a holder."""
    by_id = {row["id"]: row for row in found}
    added: list[Job] = []
    for job in jobs:
        row = by_id.get(job.id)
        if row is None and job.unique_key is not None:
            holders = await connection.fetch(HOLDER, job.unique_key)
            row = holders[0] if holders else None
        if row is None:
            return None
        added.append(rows.job_from_row(row))
    return added
