"""Schedules on SQLite: what users change (add, pause, resume, remove) and what workers enqueue.

A due time's job is inserted, and the schedule's ``next_run_at`` moved past now, in one
``BEGIN IMMEDIATE`` transaction on the lane: SQLite lets one writer in at a time across every
process, and the due schedules are read again inside it, so a due time that another worker took
is no longer due when the next one gets in. Every worker looks about once a second; when nothing
is due that is one read of the ``schedules_due`` index and no lock.

Given the store's ``Database``, its clock and its wake-up, not the store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from queuectl.models import UNFINISHED_STATES, Job, JobState
from queuectl.scheduling import (
    MakeJob,
    NewSchedule,
    Schedule,
    ScheduleNotFound,
    ScheduleTick,
    Timing,
    due_job,
)
from queuectl.scheduling import template_fields as _template_fields
from queuectl.storage.sqlite.connection import Database
from queuectl.storage.sqlite.results import transaction
from queuectl.storage.sqlite.rows import INSERT_COLUMNS, JobReader, at, insert_row

_COLUMNS = "name, cron, every, tz, job, no_overlap, paused, next_run_at, last_job, created_at, updated_at"

UPSERT = f"""
INSERT INTO schedules ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 0, ?, NULL, ?, ?)
ON CONFLICT (name) DO UPDATE SET
    cron = excluded.cron, every = excluded.every, tz = excluded.tz, job = excluded.job,
    no_overlap = excluded.no_overlap, next_run_at = excluded.next_run_at, updated_at = excluded.updated_at
RETURNING {_COLUMNS}
"""
LIST = f"SELECT {_COLUMNS} FROM schedules ORDER BY name"
GET = f"SELECT {_COLUMNS} FROM schedules WHERE name = ?"
REMOVE = f"DELETE FROM schedules WHERE name = ? RETURNING {_COLUMNS}"
PAUSE = f"UPDATE schedules SET paused = 1, updated_at = ? WHERE name = ? RETURNING {_COLUMNS}"
#: Only a paused schedule: a resume of a running one changes nothing.
RESUME = f"""
UPDATE schedules SET paused = 0, next_run_at = ?, updated_at = ? WHERE name = ? AND paused = 1
RETURNING {_COLUMNS}
"""
EARLIEST = "SELECT min(next_run_at) FROM schedules WHERE paused = 0"
DUE = (
    "SELECT name, cron, every, tz, job, no_overlap, next_run_at, last_job FROM schedules"
    " WHERE paused = 0 AND next_run_at <= ? ORDER BY next_run_at"
)
STATE_OF = "SELECT state FROM jobs WHERE id = ?"
#: The store's normal insert of a job (``rows.INSERT``), naming the schedule that made it.
INSERT_SCHEDULED = (
    f"INSERT INTO jobs ({', '.join(INSERT_COLUMNS)}, schedule, state)"
    f" VALUES ({', '.join('?' * len(INSERT_COLUMNS))}, ?, 'pending')"
)
#: The job as just inserted by ``INSERT_SCHEDULED``, from its parameters.
_INSERTED = JobReader((*INSERT_COLUMNS, "schedule"), constants={"state": JobState.PENDING, "attempts": 0})
ADVANCE = (
    "UPDATE schedules SET next_run_at = ?, last_job = coalesce(?, last_job), updated_at = ? WHERE name = ?"
)

_UNFINISHED = frozenset(state.value for state in UNFINISHED_STATES)


def schedule_from_row(row: Sequence[Any]) -> Schedule:
    name, cron, every, tz, job, no_overlap, paused, next_run_at, last_job, created_at, updated_at = row
    return Schedule(
        name=name,
        cron=cron,
        every=every,
        tz=tz,
        job=_template_fields(job),
        no_overlap=bool(no_overlap),
        paused=bool(paused),
        next_run_at=at(next_run_at),
        last_job=last_job,
        created_at=at(created_at),
        updated_at=at(updated_at),
    )


class Schedules:
    """The schedules of one SQLite store."""

    def __init__(self, db: Database, *, clock: Callable[[], float], wake: Callable[[], None]) -> None:
        self._db = db
        self._clock = clock
        self._wake = wake

    async def add(self, schedule: NewSchedule) -> Schedule:
        now = self._clock()
        timing = schedule.timing
        first = timing.first_after(at(now)).timestamp()
        rows = await self._db.fetch_durably(
            UPSERT,
            (
                schedule.name,
                timing.cron,
                timing.every,
                timing.tz,
                schedule.job,
                int(schedule.no_overlap),
                first,
                now,
                now,
            ),
        )
        return schedule_from_row(rows[0])

    async def list_all(self) -> list[Schedule]:
        return [schedule_from_row(row) for row in await self._db.fetch(LIST)]

    async def remove(self, name: str) -> Schedule:
        return _found(name, await self._db.fetch_durably(REMOVE, (name,)))

    async def pause(self, name: str) -> Schedule:
        return _found(name, await self._db.fetch_durably(PAUSE, (self._clock(), name)))

    async def resume(self, name: str) -> Schedule:
        current = _found(name, await self._db.fetch(GET, (name,)))
        if not current.paused:
            return current
        now = self._clock()
        timing = Timing(cron=current.cron, every=current.every, tz=current.tz)
        first = timing.first_after(at(now)).timestamp()
        rows = await self._db.fetch_durably(RESUME, (first, now, name))
        return schedule_from_row(rows[0]) if rows else _found(name, await self._db.fetch(GET, (name,)))

    async def enqueue_due(self, make_job: MakeJob) -> ScheduleTick:
        earliest = (await self._db.fetch_on_lane(EARLIEST, writes=False))[0][0]
        if earliest is None or earliest > self._clock():
            return ScheduleTick([], None if earliest is None else earliest - self._clock())
        enqueued, earliest = await self._db.on_lane(self._enqueue_due(make_job))
        if enqueued:
            self._wake()
        return ScheduleTick(enqueued, None if earliest is None else earliest - self._clock())

    def _enqueue_due(
        self, make_job: MakeJob
    ) -> Callable[[sqlite3.Connection], tuple[list[Job], float | None]]:
        clock = self._clock

        def work(connection: sqlite3.Connection) -> tuple[list[Job], float | None]:
            def enqueue() -> tuple[list[Job], float | None]:
                now = clock()
                enqueued = [
                    job
                    for row in connection.execute(DUE, (now,)).fetchall()
                    if (job := _enqueue_one(connection, row, now, make_job)) is not None
                ]
                return enqueued, connection.execute(EARLIEST).fetchone()[0]

            return transaction(connection, enqueue)

        return work


def _enqueue_one(
    connection: sqlite3.Connection, row: Sequence[Any], now: float, make_job: MakeJob
) -> Job | None:
    """Enqueue the latest due time of one due schedule (unless it must skip it); move it on."""
    name, cron, every, tz, template, no_overlap, next_run_at, last_job = row
    timing = Timing(cron=cron, every=every, tz=tz)
    due = timing.latest_due(at(next_run_at), at(now))
    job: Job | None = None
    overlaps = no_overlap and last_job is not None and _unfinished(connection, last_job)
    new = None if overlaps else due_job(make_job, template, due)
    if new is not None:
        values = (*insert_row(new, now), name)
        try:
            connection.execute(INSERT_SCHEDULED, values)
        except sqlite3.IntegrityError:
            pass  # its unique key is taken by an unfinished job: this due time is skipped
        else:
            job = _INSERTED.job(values)
    following = timing.after_due(due, at(now)).timestamp()
    connection.execute(ADVANCE, (following, None if job is None else job.id, now, name))
    return job


def _unfinished(connection: sqlite3.Connection, job_id: str) -> bool:
    found = connection.execute(STATE_OF, (job_id,)).fetchone()
    return found is not None and found[0] in _UNFINISHED


def _found(name: str, rows: list[Any]) -> Schedule:
    if not rows:
        raise ScheduleNotFound(f"no schedule named {name!r}")
    return schedule_from_row(rows[0])
