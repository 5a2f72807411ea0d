"""Schedules on PostgreSQL: what users change (add, pause, resume, remove) and what workers enqueue.

Due times are the server's: every comparison and every new ``next_run_at`` starts from ``now()``,
so workers on hosts whose clocks disagree still agree on what is due. A due schedule's row is
locked (``FOR UPDATE SKIP LOCKED``) in the transaction that inserts its job (the store's
``INSERT_JOBS``, which wakes idle workers) and moves ``next_run_at`` past now: a worker that
comes second skips the row, or, once the first commits, no longer finds it due. Every worker
looks about once a second; when nothing is due that is one read of the ``schedules_due`` index.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from queuectl.models import UNFINISHED_STATES, Job
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
from queuectl.storage.postgres import rows, sql
from queuectl.storage.postgres.connection import Database, UniqueViolation
from queuectl.storage.postgres.rows import job_from_row
from queuectl.storage.postgres.schema import Connection, Row

_COLUMNS = "name, cron, every, tz, job, no_overlap, paused, next_run_at, last_job, created_at, updated_at"

UPSERT = f"""
INSERT INTO schedules ({_COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6, false, $7, NULL, now(), now())
ON CONFLICT (name) DO UPDATE SET
    cron = excluded.cron, every = excluded.every, tz = excluded.tz, job = excluded.job,
    no_overlap = excluded.no_overlap, next_run_at = excluded.next_run_at, updated_at = now()
RETURNING {_COLUMNS}
"""
LIST = f'SELECT {_COLUMNS} FROM schedules ORDER BY name COLLATE "C"'
GET = f"SELECT {_COLUMNS} FROM schedules WHERE name = $1"
REMOVE = f"DELETE FROM schedules WHERE name = $1 RETURNING {_COLUMNS}"
PAUSE = f"UPDATE schedules SET paused = true, updated_at = now() WHERE name = $1 RETURNING {_COLUMNS}"
#: Only a paused schedule: a resume of a running one changes nothing.
RESUME = f"""
UPDATE schedules SET paused = false, next_run_at = $2, updated_at = now() WHERE name = $1 AND paused
RETURNING {_COLUMNS}
"""
NOW = "SELECT now()"
#: Seconds from the server's now to the earliest due time of an active schedule (NULL: none).
EARLIEST = "SELECT extract(epoch FROM min(next_run_at) - now())::float8 FROM schedules WHERE NOT paused"
DUE = """
SELECT name, cron, every, tz, job, no_overlap, next_run_at, last_job FROM schedules
WHERE NOT paused AND next_run_at <= now()
ORDER BY next_run_at
FOR UPDATE SKIP LOCKED
"""
STATE_OF = "SELECT state FROM jobs WHERE id = $1"
NAME_JOB = f"UPDATE jobs SET schedule = $2 WHERE id = $1 RETURNING {sql.JOB_COLUMNS}"
ADVANCE = """
UPDATE schedules SET next_run_at = $2, last_job = coalesce($3, last_job), updated_at = now()
WHERE name = $1
"""

_UNFINISHED = frozenset(state.value for state in UNFINISHED_STATES)


def schedule_from_row(row: Row) -> Schedule:
    return Schedule(
        name=row["name"],
        cron=row["cron"],
        every=row["every"],
        tz=row["tz"],
        job=_template_fields(row["job"]),
        no_overlap=row["no_overlap"],
        paused=row["paused"],
        next_run_at=row["next_run_at"],
        last_job=row["last_job"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class Schedules:
    """The schedules of one PostgreSQL store; ``channel`` is what new jobs notify."""

    def __init__(self, database: Database, *, channel: str) -> None:
        self._database = database
        self._channel = channel

    async def add(self, schedule: NewSchedule) -> Schedule:
        timing = schedule.timing

        async def add(connection: Connection, _retried: bool) -> Schedule:
            first = timing.first_after(await connection.fetchval(NOW))
            found = await connection.fetch(
                UPSERT,
                schedule.name,
                timing.cron,
                timing.every,
                timing.tz,
                schedule.job,
                schedule.no_overlap,
                first,
            )
            return schedule_from_row(found[0])

        return await self._database.run(add)

    async def list_all(self) -> list[Schedule]:
        return [schedule_from_row(row) for row in await self._database.fetch(LIST)]

    async def remove(self, name: str) -> Schedule:
        return _found(name, await self._database.fetch(REMOVE, name))

    async def pause(self, name: str) -> Schedule:
        return _found(name, await self._database.fetch(PAUSE, name))

    async def resume(self, name: str) -> Schedule:
        async def resume(connection: Connection, _retried: bool) -> Schedule:
            async with connection.transaction():
                current = _found(name, await connection.fetch(GET + " FOR UPDATE", name))
                if not current.paused:
                    return current
                timing = Timing(cron=current.cron, every=current.every, tz=current.tz)
                first = timing.first_after(await connection.fetchval(NOW))
                return _found(name, await connection.fetch(RESUME, name, first))

        return await self._database.run(resume)

    async def enqueue_due(self, make_job: MakeJob) -> ScheduleTick:
        channel = self._channel

        async def enqueue(connection: Connection, _retried: bool) -> ScheduleTick:
            # A retry after a lost reply is safe: what the first try committed is no longer due.
            earliest: float | None = await connection.fetchval(EARLIEST)
            if earliest is None or earliest > 0:
                return ScheduleTick([], earliest)
            async with connection.transaction():
                now: datetime = await connection.fetchval(NOW)
                enqueued = [
                    job
                    for row in await connection.fetch(DUE)
                    if (job := await _enqueue_one(connection, row, now, make_job, channel)) is not None
                ]
                return ScheduleTick(enqueued, await connection.fetchval(EARLIEST))

        return await self._database.run(enqueue)


async def _enqueue_one(
    connection: Connection, row: Row, now: datetime, make_job: MakeJob, channel: str
) -> Job | None:
    """Enqueue the latest due time of one due schedule (unless it must skip it); move it on."""
    timing = Timing(cron=row["cron"], every=row["every"], tz=row["tz"])
    due = timing.latest_due(row["next_run_at"], now)
    job: Job | None = None
    last_job = row["last_job"]
    overlaps = row["no_overlap"] and last_job is not None and await _unfinished(connection, last_job)
    new = None if overlaps else due_job(make_job, row["job"], due)
    if new is not None:
        try:
            async with connection.transaction():  # a savepoint: a taken unique key undoes only this
                await connection.fetch(sql.INSERT_JOBS, *rows.insert_arguments([new]), channel)
                job = job_from_row((await connection.fetch(NAME_JOB, new.id, row["name"]))[0])
        except UniqueViolation:
            pass  # its unique key is taken by an unfinished job: this due time is skipped
    following = timing.after_due(due, now)
    await connection.execute(ADVANCE, row["name"], following, None if job is None else job.id)
    return job


async def _unfinished(connection: Connection, job_id: str) -> bool:
    state: Any = await connection.fetchval(STATE_OF, job_id)
    return state is not None and state in _UNFINISHED


def _found(name: str, found: list[Row]) -> Schedule:
    if not found:
        raise ScheduleNotFound(f"no schedule named {name!r}")
    return schedule_from_row(found[0])
