"""Operating jobs on PostgreSQL: cancelling and retrying one job, with the reasons for a refusal.

Each is one conditional update (``sql.CANCEL_JOB``, ``sql.RETRY_JOB``); only when it changes
nothing does a second read say why (no such job, a state that does not allow it). The bulk
forms and ``purge`` are one statement each, called by the store directly.
"""

from __future__ import annotations

from collections.abc import Sequence

from queuectl.errors import JobNotFound, JobStateConflict
from queuectl.models import FINAL_STATES, Job, JobState
from queuectl.storage.postgres import sql
from queuectl.storage.postgres.connection import Work
from queuectl.storage.postgres.rows import job_from_row
from queuectl.storage.postgres.schema import Connection


def cancel_work(job_id: str, channel: str) -> Work[Job]:
    """``Store.cancel_job`` as retryable work: after a lost reply, a job found cancelled was."""

    async def cancel(connection: Connection, retried: bool) -> Job:
        while True:
            found = await connection.fetch(sql.CANCEL_JOB, channel, job_id)
            if found:
                return job_from_row(found[0])
            state, _ = await _state_of(connection, job_id)
            if retried and state is JobState.CANCELLED:  # the first try did it
                return await _job(connection, job_id)
            if state in FINAL_STATES:
                raise JobStateConflict(f"job {job_id!r} is already {state.value}")
            # It left its final state in between (retried): cancel it as it is now.

    return cancel


def retry_work(job_id: str, channel: str) -> Work[Job]:
    """``Store.retry_job`` as retryable work: after a lost reply, a job found pending was."""

    async def retry(connection: Connection, retried: bool) -> Job:
        while True:
            found = await connection.fetch(sql.RETRY_JOB, channel, job_id)
            if found:
                return job_from_row(found[0])
            state, held = await _state_of(connection, job_id)
            if retried and state is JobState.PENDING:  # the first try did it
                return await _job(connection, job_id)
            if state in FINAL_STATES and held:
                raise JobStateConflict(
                    f"job {job_id!r} is still being cancelled: its worker is stopping it; retry it then"
                )
            if state not in FINAL_STATES:
                raise JobStateConflict(f"job {job_id!r} is {state.value}: only final jobs can be retried")
            # It was being cancelled and its worker has just recorded it: retry it now.

    return retry


def states_among(given: Sequence[JobState], allowed: frozenset[JobState], verb: str) -> list[str]:
    """The states of a bulk operation as text (none given: every allowed one); ``ValueError``
    for one not allowed."""
    for state in given:
        if JobState(state) not in allowed:
            raise ValueError(f"{JobState(state).value} jobs cannot be {verb}")
    return sorted(JobState(state).value for state in (given or allowed))


async def _state_of(connection: Connection, job_id: str) -> tuple[JobState, bool]:
    """The state of a job a conditional write left alone, and whether a claim holds it;
    ``JobNotFound`` if there is none."""
    found = await connection.fetch(sql.STATE_AND_HOLD, job_id)
    if not found:
        raise JobNotFound(f"no job with id {job_id!r}")
    return JobState(found[0]["state"]), bool(found[0]["held"])


async def _job(connection: Connection, job_id: str) -> Job:
    found = await connection.fetch(sql.GET_JOB, job_id)
    if not found:
        raise JobNotFound(f"no job with id {job_id!r}")
    return job_from_row(found[0])
