"""What the dashboard reads from a PostgreSQL store: pages of jobs, attempts ended per minute,
and how long each queue's oldest due job has waited. Every statement walks an index; every time
is the server's.

Pages are read newest first by walking ``jobs_state_newest`` (one state) or ``jobs_newest``
from the cursor on; filters that the index does not serve are bounded to ``SEARCH_SCAN_ROWS``
rows of that walk: first the walk's boundary is found (an index-only step of that many
entries), then the page is read within it.

Given the store's ``Database``, not the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from queuectl.errors import InvalidInput
from queuectl.models import JobPage, JobState, MinuteCount, minute_window
from queuectl.records import Record, record
from queuectl.storage.base import (
    FINISHED_KEPT_SECONDS,
    FINISHED_MAX_MINUTES,
    FINISHED_STATES,
    SEARCH_SCAN_ROWS,
    search_terms,
)
from queuectl.storage.postgres.connection import Database
from queuectl.storage.postgres.rows import job_from_row
from queuectl.storage.postgres.schema import Connection
from queuectl.storage.postgres.sql import JOB_COLUMNS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_NEWEST_FIRST = " ORDER BY created_at DESC, seq DESC"

# --- pages of jobs -------------------------------------------------------------------------------

Key = tuple[datetime, int]


class _Parameters:
    """Numbered parameters (``$1``, ``$2``...) in the order the statement names them."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any, cast: str) -> str:
        self.values.append(value)
        return f"${len(self.values)}::{cast}"


@record
class Search(Record):
    """One ``search_jobs`` call: its filters, page size, and where its walk starts."""

    states: tuple[str, ...]
    queues: tuple[str, ...]
    text: str | None
    limit: int
    after: Key | None

    def walk(self, given: _Parameters) -> str:
        """The condition of the index walked (one state: ``jobs_state_newest``), from the cursor."""
        where = f"state = {given(self.states[0], 'text')}" if len(self.states) == 1 else "true"
        if self.after is not None:
            created, seq = given(self.after[0], "timestamptz"), given(self.after[1], "bigint")
            where += f" AND (created_at, seq) < ({created}, {seq})"
        return where

    @property
    def filtered(self) -> bool:
        """Whether some filter is not served by the walk's index (the walk is then bounded)."""
        return len(self.states) > 1 or bool(self.queues) or bool(self.text)

    def filters(self, given: _Parameters) -> str:
        """What the walk's index does not serve ("" for nothing)."""
        parts: list[str] = []
        if len(self.states) > 1:
            parts.append(f"state = ANY({given(list(self.states), 'text[]')})")
        if self.queues:
            parts.append(f"queue = ANY({given(list(self.queues), 'text[]')})")
        if self.text:
            text = given(self.text, "text")
            parts.append(f"(starts_with(id, {text}) OR strpos(command, {text}) > 0)")
        return " AND ".join(parts)


def search(
    *, state: Sequence[JobState], queue: Sequence[str], text: str | None, limit: int, cursor: str | None
) -> Search:
    """The call checked: ``InvalidInput`` for a bad cursor or limit."""
    states, queues, text, limit = search_terms(state=state, queue=queue, text=text, limit=limit)
    return Search(states=states, queues=queues, text=text, limit=limit, after=parse_cursor(cursor))


def parse_cursor(cursor: str | None) -> Key | None:
    """``created_at`` (to the microsecond, as stored) and ``seq`` of the last job a page looked at."""
    if cursor is None:
        return None
    micros, _, seq = cursor.partition("_")
    try:
        if not seq.isdigit() or not micros.lstrip("-").isdigit():
            raise ValueError(cursor)
        return _EPOCH + int(micros) * _MICROSECOND, int(seq)
    except (ValueError, OverflowError):
        raise InvalidInput(
            f"invalid cursor {cursor[:40]!r}: pass a next_cursor this store returned"
        ) from None


def cursor_of(key: Key) -> str:
    return f"{(key[0] - _EPOCH) // _MICROSECOND}_{key[1]}"


async def read_page(database: Database, query: Search) -> JobPage:
    """One page: the walk's boundary first, if a filter needs one, then the jobs within it.

    Two statements, not one snapshot: a job added in between is newer than the cursor (or, on
    the first page, than the boundary), and one deleted is simply not shown.
    """

    async def read(connection: Connection, _retried: bool) -> JobPage:
        given = _Parameters()
        where = query.walk(given)
        boundary: Key | None = None
        if query.filtered:
            # The oldest row this call may look at: the walk's SEARCH_SCAN_ROWS-th (index only).
            found = await connection.fetchrow(
                f"SELECT created_at, seq FROM jobs WHERE {where}{_NEWEST_FIRST}"
                f" OFFSET {SEARCH_SCAN_ROWS - 1} LIMIT 1",
                *given.values,
            )
            if found is not None:
                boundary = (found["created_at"], found["seq"])
                where += (
                    f" AND (created_at, seq) >= ({given(boundary[0], 'timestamptz')},"
                    f" {given(boundary[1], 'bigint')})"
                )
            where += f" AND {query.filters(given)}"
        limit = given(query.limit + 1, "bigint")
        rows = await connection.fetch(
            f"SELECT {JOB_COLUMNS}, seq FROM jobs WHERE {where}{_NEWEST_FIRST} LIMIT {limit}", *given.values
        )
        jobs = [job_from_row(row) for row in rows[: query.limit]]
        if len(rows) > query.limit:
            last = rows[query.limit - 1]
            return JobPage(jobs=jobs, next_cursor=cursor_of((last["created_at"], last["seq"])))
        return JobPage(jobs=jobs, next_cursor=None if boundary is None else cursor_of(boundary))

    return await database.run(read)


# --- attempts ended per minute -------------------------------------------------------------------

#: The rows added (``n`` summed per minute and state) and the old minutes pruned: one statement.
_ADD_FINISHED = f"""
WITH added AS (
    INSERT INTO finished_counts (minute, state, n)
    SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::bigint[])
    ON CONFLICT (minute, state) DO UPDATE SET n = finished_counts.n + excluded.n
    RETURNING 1
), pruned AS (
    DELETE FROM finished_counts WHERE minute < now() - interval '{FINISHED_KEPT_SECONDS} seconds'
    RETURNING 1
)
SELECT (SELECT count(*) FROM added) AS added, (SELECT count(*) FROM pruned) AS pruned
"""
#: The current minute's start (UTC, by the server's clock), and the counts of the $1 minutes
#: ending with it (one row with NULL counts when there are none).
_FINISHED = """
WITH current AS (SELECT date_trunc('minute', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS minute)
SELECT current.minute AS current, f.minute, f.state, f.n
FROM current LEFT JOIN finished_counts AS f
    ON f.minute > current.minute - $1::integer * interval '1 minute' AND f.minute <= current.minute
"""


def finished_arrays(counts: Mapping[tuple[datetime, str], int]) -> list[list[Any]]:
    """The arrays of ``_ADD_FINISHED``: one row per minute and state; ``ValueError`` for a bad one."""
    summed: dict[tuple[datetime, str], int] = {}
    for (moment, state), n in counts.items():
        value = JobState(state).value
        if value not in FINISHED_STATES or n < 0:
            raise ValueError(
                f"add_finished: {value} {n}: the states are {', '.join(FINISHED_STATES)}, n >= 0"
            )
        start = moment.astimezone(UTC).replace(second=0, microsecond=0)
        summed[(start, value)] = summed.get((start, value), 0) + n
    kept = [(start, state, n) for (start, state), n in summed.items() if n]
    return [list(column) for column in zip(*kept, strict=True)] if kept else []


async def add_finished(database: Database, counts: Mapping[tuple[datetime, str], int]) -> None:
    arrays = finished_arrays(counts)
    if arrays:
        await database.fetch(_ADD_FINISHED, *arrays)


async def finished_per_minute(database: Database, minutes: int) -> list[MinuteCount]:
    if not 1 <= minutes <= FINISHED_MAX_MINUTES:
        raise InvalidInput(f"minutes must be between 1 and {FINISHED_MAX_MINUTES}, not {minutes}")
    rows = await database.fetch(_FINISHED, minutes)
    counts = {(row["minute"], row["state"]): int(row["n"]) for row in rows if row["minute"] is not None}
    return minute_window(rows[0]["current"], minutes, counts)


# --- each queue's oldest due job -----------------------------------------------------------------

#: The earliest due ``run_at`` of each queue: one pass over the due jobs of ``jobs_due`` (about
#: 0.15 s with a million waiting). No index of its own: it would cost every enqueue and claim
#: for a figure only the dashboard reads. Seconds by ``extract``: a ``run_at`` of -infinity gives
#: an infinite number, not an error.
_OLDEST_DUE = """
SELECT queue AS name, (extract(epoch FROM now()) - extract(epoch FROM min(run_at)))::float8 AS seconds
FROM jobs WHERE state IN ('pending', 'failed') AND waiting = 0 AND run_at <= now()
GROUP BY queue
"""


async def oldest_due(database: Database) -> dict[str, float]:
    rows = await database.fetch(_OLDEST_DUE)
    return {row["name"]: row["seconds"] for row in rows if row["seconds"] is not None}
