"""What the dashboard reads from a SQLite store: pages of jobs, attempts ended per minute, and
how long each queue's oldest due job has waited. Every statement walks an index.

Pages are read newest first by walking ``jobs_state`` (one state) or ``jobs_created`` backwards
(both end with ``created_at``, then the rowid, ``seq``), from the cursor on; filters that the
index does not serve are bounded to ``SEARCH_SCAN_ROWS`` rows of that walk: first the walk's
boundary is found (an index-only step of that many entries), then the page is read within it.

Given the store's ``Database`` and clock, not the store.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from queuectl.errors import InvalidInput
from queuectl.models import SUMMARY_FIELDS, JobPage, JobState, MinuteCount, minute_window
from queuectl.records import Record, record
from queuectl.storage.base import (
    FINISHED_KEPT_SECONDS,
    FINISHED_MAX_MINUTES,
    FINISHED_STATES,
    SEARCH_SCAN_ROWS,
    search_terms,
)
from queuectl.storage.sqlite import sql
from queuectl.storage.sqlite.connection import Database
from queuectl.storage.sqlite.results import transaction
from queuectl.storage.sqlite.rows import JobReader

#: Jobs as lists show them, then the walk's key (``created_at`` as stored: the exact float).
_PAGE = JobReader(SUMMARY_FIELDS, extra=("created_at", "seq"))
_NEWEST_FIRST = " ORDER BY created_at DESC, seq DESC"
#: The id range of a prefix: ``id`` >= it and < it followed by the greatest character.
_GREATEST = "\U0010ffff"

# --- pages of jobs -------------------------------------------------------------------------------

Key = tuple[float, int]


@record
class Search(Record):
    """One ``search_jobs`` call: its filters, page size, and where its walk starts."""

    states: tuple[str, ...]
    queues: tuple[str, ...]
    text: str | None
    limit: int
    after: Key | None

    @property
    def walk(self) -> tuple[str, str, tuple[Any, ...]]:
        """The index walked, its condition, and the condition's parameters."""
        if len(self.states) == 1:
            return "jobs_state", "state = ?", (self.states[0],)
        return "jobs_created", "1", ()

    @property
    def filters(self) -> tuple[str, tuple[Any, ...]]:
        """What the walk's index does not serve, and its parameters ("" for nothing)."""
        parts: list[str] = []
        parameters: list[Any] = []
        if len(self.states) > 1:
            parts.append(f"state IN ({', '.join('?' * len(self.states))})")
            parameters += self.states
        if self.queues:
            parts.append(f"queue IN ({', '.join('?' * len(self.queues))})")
            parameters += self.queues
        if self.text:
            parts.append("(id >= ? AND id < ? OR instr(command, ?) > 0)")
            parameters += (self.text, self.text + _GREATEST, self.text)
        return " AND ".join(parts), tuple(parameters)


def search(
    *, state: Sequence[JobState], queue: Sequence[str], text: str | None, limit: int, cursor: str | None
) -> Search:
    """The call checked: ``InvalidInput`` for a bad cursor or limit."""
    states, queues, text, limit = search_terms(state=state, queue=queue, text=text, limit=limit)
    return Search(states=states, queues=queues, text=text, limit=limit, after=parse_cursor(cursor))


def parse_cursor(cursor: str | None) -> Key | None:
    """``created_at`` (the stored float) and ``seq`` of the last job a page looked at."""
    if cursor is None:
        return None
    created, _, seq = cursor.partition("_")
    try:
        key = (float(created), int(seq))
    except ValueError:
        key = None
    if key is None or not math.isfinite(key[0]) or not seq.isdigit():
        raise InvalidInput(f"invalid cursor {cursor[:40]!r}: pass a next_cursor this store returned")
    return key


def cursor_of(key: Key) -> str:
    return f"{key[0]!r}_{key[1]}"


async def read_page(db: Database, query: Search) -> JobPage:
    """One page: the walk's boundary first, if a filter needs one, then the jobs within it.

    Two statements, not one transaction: a job added in between is newer than the cursor (or,
    on the first page, than the boundary), and one deleted is simply not shown.
    """
    index, walk, walk_parameters = query.walk
    filters, filter_parameters = query.filters
    where = f" FROM jobs INDEXED BY {index} WHERE {walk}"
    parameters: tuple[Any, ...] = walk_parameters
    if query.after is not None:
        where += " AND (created_at, seq) < (?, ?)"
        parameters += query.after
    boundary: Key | None = None
    if filters:
        # The oldest row this call may look at: the walk's SEARCH_SCAN_ROWS-th (index only).
        found = await db.fetch(
            f"SELECT created_at, seq{where}{_NEWEST_FIRST} LIMIT 1 OFFSET ?",
            (*parameters, SEARCH_SCAN_ROWS - 1),
        )
        if found:
            boundary = (found[0][0], found[0][1])
            where += " AND (created_at, seq) >= (?, ?)"
            parameters += boundary
        where += f" AND {filters}"
        parameters += filter_parameters
    rows = await db.fetch(f"SELECT {_PAGE.sql}{where}{_NEWEST_FIRST} LIMIT ?", (*parameters, query.limit + 1))
    jobs = [_PAGE.job(row) for row in rows[: query.limit]]
    if len(rows) > query.limit:
        created, seq = _PAGE.extra(rows[query.limit - 1])
        return JobPage(jobs=jobs, next_cursor=cursor_of((created, seq)))
    return JobPage(jobs=jobs, next_cursor=None if boundary is None else cursor_of(boundary))


# --- attempts ended per minute -------------------------------------------------------------------

_ADD_FINISHED = (
    "INSERT INTO finished_counts (minute, state, n) VALUES (?, ?, ?)"
    " ON CONFLICT (minute, state) DO UPDATE SET n = n + excluded.n"
)
_PRUNE_FINISHED = "DELETE FROM finished_counts WHERE minute < ?"
_FINISHED = "SELECT minute, state, n FROM finished_counts WHERE minute > ? AND minute <= ?"


def minute_of(moment: float) -> int:
    """The epoch second its minute starts at."""
    return int(moment // 60) * 60


def finished_rows(counts: Mapping[tuple[datetime, str], int]) -> list[tuple[int, str, int]]:
    """``(minute start, state, n)`` rows, one per minute and state; ``ValueError`` for a bad one."""
    summed: dict[tuple[int, str], int] = {}
    for (moment, state), n in counts.items():
        value = JobState(state).value
        if value not in FINISHED_STATES or n < 0:
            raise ValueError(
                f"add_finished: {value} {n}: the states are {', '.join(FINISHED_STATES)}, n >= 0"
            )
        key = (minute_of(moment.timestamp()), value)
        summed[key] = summed.get(key, 0) + n
    return [(minute, state, n) for (minute, state), n in summed.items() if n]


def add_finished(rows: list[tuple[int, str, int]], now: float) -> Callable[[sqlite3.Connection], None]:
    """Work for the lane: the rows added and the old minutes pruned, in one transaction."""

    def work(connection: sqlite3.Connection) -> None:
        def write() -> None:
            connection.executemany(_ADD_FINISHED, rows)
            connection.execute(_PRUNE_FINISHED, (minute_of(now) - FINISHED_KEPT_SECONDS,))

        transaction(connection, write)

    return work


def check_minutes(minutes: int) -> int:
    if not 1 <= minutes <= FINISHED_MAX_MINUTES:
        raise InvalidInput(f"minutes must be between 1 and {FINISHED_MAX_MINUTES}, not {minutes}")
    return minutes


async def finished_per_minute(db: Database, minutes: int, now: float) -> list[MinuteCount]:
    end = minute_of(now)
    rows = await db.fetch(_FINISHED, (end - check_minutes(minutes) * 60, end))
    counts = {(datetime.fromtimestamp(minute, UTC), state): n for minute, state, n in rows}
    return minute_window(datetime.fromtimestamp(end, UTC), minutes, counts)


# --- each queue's oldest due job -----------------------------------------------------------------

#: Each queue with waiting jobs (``sql.WAITING_QUEUES``), then the earliest due ``run_at`` of
#: each: another index step. Parameter: now.
_OLDEST_DUE = f"""{sql.WAITING_QUEUES}
SELECT name, (SELECT min(run_at) {sql.WAITING} AND queue = waiting_queues.name AND run_at <= ?1)
FROM waiting_queues WHERE name IS NOT NULL
"""


async def oldest_due(db: Database, now: float) -> dict[str, float]:
    rows = await db.fetch(_OLDEST_DUE, (now,))
    return {name: now - earliest for name, earliest in rows if earliest is not None}
