"""Adding jobs that use flow control to a SQLite store: unique keys and dependencies (``after``).

The rules are ``storage.flow``'s. The work is written once as a plan, a generator that yields
each statement with its parameters and is sent back its rows, so that the same plan runs on
plain ``sqlite3`` (``run``: ``queuectl enqueue``, which never starts asyncio) and on aiosqlite
(``run_async``: ``SqliteStore.add_jobs``). Either runs it inside the caller's ``BEGIN
IMMEDIATE`` transaction: with the write lock held, no other process changes a dependency's
state or takes a unique key between a read here and the write that follows it.

A dependency is a row of ``job_dependencies`` and one more in the dependency's ``dependents``;
what happens when it ends is the trigger ``jobs_dependency_ended`` (migration 5).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

from queuectl.errors import InvalidInput
from queuectl.storage.flow import CANCELLING, UNFINISHED, ended, pick, unknown
from queuectl.storage.sqlite.rows import INSERT_COLUMNS, SUMMARY, insert_row, items_text

if TYPE_CHECKING:
    import aiosqlite

    from queuectl.models import Job, NewJob

#: The longest chain of jobs waiting on each other: SQLite nests at most 1,000 triggers, and a
#: cancel goes down a chain one nested trigger per link (``jobs_dependency_ended``).
MAX_LINKS = 900
#: A statement and its parameters; a plan yields them and is sent their rows.
Step = tuple[str, Sequence[Any]]
Plan = Generator[Step, list[Any], list["Job"]]

_UNFINISHED = f"state IN {UNFINISHED}"
_AFTER = INSERT_COLUMNS.index("after")
_COLUMNS = (*INSERT_COLUMNS, "state", "waiting", "last_error", "links")
_INSERT = f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
INSERT = f"{_INSERT} RETURNING {SUMMARY.sql}"
#: Inserts nothing while an unfinished job holds the key (the partial unique index ``jobs_unique_key``).
INSERT_UNLESS_HELD = (
    f"{_INSERT} ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND {_UNFINISHED}"
    f" DO NOTHING RETURNING {SUMMARY.sql}"
)
HOLDER = f"SELECT {SUMMARY.sql} FROM jobs WHERE unique_key = ? AND {_UNFINISHED}"
STATE = "SELECT id, state, links FROM jobs WHERE id = ?"
#: Jobs whose id may start with a prefix: a range of the unique index of ``id``.
STATES_WITH_PREFIX = "SELECT id, state, links FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT 10"
ADD_DEPENDENCY = "INSERT INTO job_dependencies (depends_on, job_id) VALUES (?, ?)"
COUNT_DEPENDENT = "UPDATE jobs SET dependents = dependents + 1 WHERE id = ?"


def add_jobs(jobs: Sequence[NewJob], now: float) -> Plan:
    """The plan that inserts ``jobs`` (resolved) at ``now``; it returns them as stored, in order
    (the holder of a job's unique key in its place). ``JobNotFound``, ``AmbiguousId``."""
    added: list[Job] = []
    held_by: dict[str, str] = {}  # a job not inserted -> the job that holds its key
    for job in jobs:
        row = list(insert_row(job, now))
        waits: list[str] = []
        cancelled_by: str | None = None
        links = 0
        if job.after:
            named, waits, cancelled_by, links = yield from _dependencies(job, held_by)
            row[_AFTER] = items_text(named)
        if cancelled_by is not None:
            inserted = yield (INSERT, (*row, "cancelled", 0, cancelled_by, 0))
        else:
            values = (*row, "pending", len(waits), None, links)
            if job.unique_key is None:
                inserted = yield (INSERT, values)
            else:
                inserted = yield (INSERT_UNLESS_HELD, values)
                if not inserted:
                    holder = yield from _holder(job.unique_key)
                    held_by[job.id] = holder.id
                    added.append(holder)
                    continue
        for dependency in waits:
            yield (ADD_DEPENDENCY, (dependency, job.id))
            yield (COUNT_DEPENDENT, (dependency,))
        added.append(SUMMARY.job(inserted[0]))
    return added


def _dependencies(
    job: NewJob, held_by: dict[str, str]
) -> Generator[Step, list[Any], tuple[tuple[str, ...], list[str], str | None, int]]:
    """What ``job.after`` names: the ids, in full and each once; those not ended, to wait on;
    the ``last_error`` that cancels the job if one ended dead or cancelled; its ``links``."""
    named: list[str] = []
    waits: list[str] = []
    cancelled_by: str | None = None
    links = 0
    for text in job.after:
        dependency, state, above = yield from _dependency(held_by.get(text, text))
        if dependency in named:
            continue
        named.append(dependency)
        if state in UNFINISHED:
            waits.append(dependency)
            links = max(links, above + 1)
        elif state in CANCELLING and cancelled_by is None:
            cancelled_by = ended(dependency, state)
    if links > MAX_LINKS and cancelled_by is None:
        raise InvalidInput(
            f"job {job.id!r} would wait on a chain of {links} jobs waiting on each other;"
            f" a SQLite store takes chains of at most {MAX_LINKS}"
        )
    return tuple(named), waits, cancelled_by, links


def _holder(key: str) -> Generator[Step, list[Any], Job]:
    """The unfinished job that holds ``key``, after an insert that it refused."""
    holders = yield (HOLDER, (key,))
    if not holders:  # cannot be: the write lock is held, so the holder cannot have ended
        raise RuntimeError(f"unique key {key!r} is held by no job")
    return SUMMARY.job(holders[0])


def _dependency(text: str) -> Generator[Step, list[Any], tuple[str, str, int]]:
    """The id, state and ``links`` of the job ``text`` names (``flow.pick``)."""
    found = yield (STATE, (text,))
    if not found:
        found = yield (STATES_WITH_PREFIX, (text, text + "\U0010ffff"))
        if not found:
            raise unknown(text)
    job_id, state = pick(text, [(job_id, state) for job_id, state, _ in found])
    links = {found_id: above for found_id, _, above in found}[job_id]
    return job_id, state, links


def run(plan: Plan, connection: sqlite3.Connection) -> list[Job]:
    """Run ``plan`` on a plain ``sqlite3`` connection, in the caller's transaction."""
    try:
        step = next(plan)
        while True:
            step = plan.send(connection.execute(*step).fetchall())
    except StopIteration as done:
        result: list[Job] = done.value
        return result


async def run_async(plan: Plan, db: aiosqlite.Connection) -> list[Job]:
    """Run ``plan`` on an aiosqlite connection, in the caller's transaction."""
    try:
        step = next(plan)
        while True:
            step = plan.send(list(await db.execute_fetchall(*step)))
    except StopIteration as done:
        result: list[Job] = done.value
        return result
