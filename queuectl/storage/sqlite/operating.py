"""Operating jobs on SQLite: cancel, retry and purge, as users (and retention) ask for them.

Each is one conditional statement on the store's durable connection, as everything users hand
over is (``SqliteStore``); a refusal is worded from a second read. Given the store's reads, its
durable writes, its wake-up and its clock, not the store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from queuectl.errors import JobNotFound, JobStateConflict
from queuectl.models import FINAL_STATES, UNFINISHED_STATES, Job, JobState
from queuectl.storage.sqlite import sql
from queuectl.storage.sqlite.rows import SUMMARY

#: Runs one statement with its parameters; returns its rows.
Fetch = Callable[[str, Sequence[Any]], Awaitable[list[Any]]]


class Operator:
    """Cancel, retry and purge on one SQLite store."""

    def __init__(
        self, *, read: Fetch, write: Fetch, wake: Callable[[], None], clock: Callable[[], float]
    ) -> None:
        self._read = read
        self._write = write  # the durable connection: what users hand over is fsynced
        self._wake = wake
        self._clock = clock

    async def cancel_job(self, job_id: str) -> Job:
        while True:
            rows = await self._write(sql.CANCEL, (self._clock(), job_id))
            if rows:
                self._wake()
                return SUMMARY.job(rows[0])
            state, _ = await self._state_of(job_id)
            if state in FINAL_STATES:
                raise JobStateConflict(f"job {job_id!r} is already {state.value}")
            # It left its final state in between (retried): cancel it as it is now.

    async def cancel_matching(self, *, state: Sequence[JobState], queue: Sequence[str]) -> list[Job]:
        states = _states(state, UNFINISHED_STATES, "cancelled")
        statement = sql.cancel_matching(len(states), len(queue))
        rows = await self._write(statement, (self._clock(), *states, *queue))
        if rows:
            self._wake()
        return _newest_first(rows)

    async def retry_job(self, job_id: str) -> Job:
        now = self._clock()
        while True:
            rows = await self._write(sql.RETRY, (now, now, job_id))
            if rows:
                self._wake()
                return SUMMARY.job(rows[0])
            state, held = await self._state_of(job_id)
            if state in FINAL_STATES and held:
                raise JobStateConflict(
                    f"job {job_id!r} is still being cancelled: its worker is stopping it; retry it then"
                )
            if state not in FINAL_STATES:
                raise JobStateConflict(f"job {job_id!r} is {state.value}: only final jobs can be retried")
            # It was being cancelled and its worker has just recorded it: retry it now.

    async def retry_matching(self, *, state: Sequence[JobState], queue: Sequence[str]) -> list[Job]:
        states = _states(state, FINAL_STATES, "retried")
        now = self._clock()
        rows = await self._write(sql.retry_matching(len(states), len(queue)), (now, now, *states, *queue))
        if rows:
            self._wake()
        return _newest_first(rows)

    async def purge_batch(
        self,
        *,
        state: Sequence[JobState],
        queue: Sequence[str],
        finished_before: datetime | None,
        limit: int,
    ) -> int:
        states = _states(state, FINAL_STATES, "purged")
        before = () if finished_before is None else (finished_before.timestamp(),)
        statement = sql.purge_batch(len(states), len(queue), before=bool(before))
        return len(await self._write(statement, (*states, *queue, *before, limit)))

    async def _state_of(self, job_id: str) -> tuple[JobState, bool]:
        """The job's state, and whether a claim holds it; ``JobNotFound``."""
        rows = await self._read(sql.STATE_AND_HOLD, (job_id,))
        if not rows:
            raise JobNotFound(f"no job with id {job_id!r}")
        return JobState(rows[0][0]), bool(rows[0][1])


def _states(given: Sequence[JobState], allowed: frozenset[JobState], verb: str) -> list[str]:
    """The states' texts (none given: every allowed one); ``ValueError`` for one not allowed."""
    for state in given:
        if JobState(state) not in allowed:
            raise ValueError(f"{JobState(state).value} jobs cannot be {verb}")
    return [JobState(state).value for state in given] or sorted(state.value for state in allowed)


def _newest_first(rows: list[Any]) -> list[Job]:
    return sorted((SUMMARY.job(row) for row in rows), key=lambda job: job.created_at, reverse=True)
