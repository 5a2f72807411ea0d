"""SQLite rows to and from queuectl's records: columns, the insert, timestamps as epoch seconds.

Plain code with no driver import, shared by the async store and the CLI's direct enqueue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from queuectl.config import Settings
from queuectl.models import UNSET, Claim, Job, JobState, NewJob

SUMMARY_COLUMNS = (
    "id, command, queue, priority, timeout, max_retries, run_at, state, attempts,"
    " created_at, updated_at, started_at, finished_at, exit_code, last_error"
)
FULL_COLUMNS = SUMMARY_COLUMNS + ", stdout, stderr"
CLAIM_COLUMNS = SUMMARY_COLUMNS + ", claim_token"

INSERT = (
    "INSERT INTO jobs (id, command, queue, priority, timeout, max_retries, run_at, state,"
    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)"
)


def moment(epoch: float | None) -> datetime | None:
    return None if epoch is None else at(epoch)


def at(epoch: float) -> datetime:
    """The stored epoch seconds as an aware UTC datetime, never past the calendar's ends.

    A float holds a time near year 9999 only to some 30 µs: a ``run_at`` asked for in the
    last microseconds of 9999-12-31 is stored as a moment in year 10000, which would make
    every read of that row fail.
    """
    try:
        return datetime.fromtimestamp(epoch, UTC)
    except (OverflowError, ValueError):
        return (datetime.max if epoch > 0 else datetime.min).replace(tzinfo=UTC)


def epoch(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def job_from_row(row: Sequence[Any]) -> Job:
    """A ``Job`` from a row of ``SUMMARY_COLUMNS`` (plus stdout, stderr when present)."""
    return Job(
        id=row[0],
        command=row[1],
        queue=row[2],
        priority=row[3],
        timeout=row[4],
        max_retries=row[5],
        run_at=at(row[6]),
        state=JobState(row[7]),
        attempts=row[8],
        created_at=datetime.fromtimestamp(row[9], UTC),
        updated_at=datetime.fromtimestamp(row[10], UTC),
        started_at=moment(row[11]),
        finished_at=moment(row[12]),
        exit_code=row[13],
        last_error=row[14],
        stdout=bytes(row[15] or b"") if len(row) > 16 else b"",
        stderr=bytes(row[16] or b"") if len(row) > 16 else b"",
    )


def claim_from_row(row: Sequence[Any]) -> Claim:
    return Claim(job=job_from_row(row[:15]), token=row[15])


def insert_rows(jobs: Iterable[NewJob], settings: Settings | None, now: float) -> list[tuple[Any, ...]]:
    """Parameters for ``INSERT``; ``settings`` fill the fields left ``UNSET``."""
    rows = []
    for job in jobs:
        timeout = job.timeout
        max_retries = job.max_retries
        if timeout is UNSET or max_retries is UNSET:
            assert settings is not None
            timeout = settings.default_timeout if timeout is UNSET else timeout
            max_retries = settings.max_retries if max_retries is UNSET else max_retries
        run_at = epoch(job.run_at) if job.run_at is not None else now + (job.delay or 0.0)
        rows.append((job.id, job.command, job.queue, job.priority, timeout, max_retries, run_at, now, now))
    return rows


def needs_settings(jobs: Iterable[NewJob]) -> bool:
    return any(job.timeout is UNSET or job.max_retries is UNSET for job in jobs)


def stored_job(row: tuple[Any, ...]) -> Job:
    """The job as just inserted, without reading it back."""
    job_id, command, queue, priority, timeout, max_retries, run_at, now, _ = row
    created = datetime.fromtimestamp(now, UTC)
    return Job(
        id=job_id,
        command=command,
        queue=queue,
        priority=priority,
        timeout=timeout,
        max_retries=max_retries,
        run_at=at(run_at),
        state=JobState.PENDING,
        attempts=0,
        created_at=created,
        updated_at=created,
    )
