"""Queues' pauses and limits on SQLite: their settings, and the claim that honours them.

The claim that honours them (``flow_claim``) is work for the lane, run inside a ``BEGIN
IMMEDIATE`` transaction: SQLite lets one writer at a time into the file, so what it counts (the
queue's held jobs, its recent starts) cannot change before it commits, whatever other processes
claim meanwhile. It reads the clock inside the transaction, after the lock, so that the starts
it records are in commit order. Workers use it only while some queue has a setting; the plain
claim (``sql.claim``) stays as it is. The claim of one job, which a worker makes each time a
slot frees, is one statement (``_claim_one``) plus, in a rate-limited queue, the start's.

Settings are what users hand over: written on the durable connection, in one transaction each.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import anyio

from queuectl.models import SUMMARY_FIELDS, UNSET, Unset
from queuectl.queues import QueueInfo, QueueSettings, Rate, queue_infos, settings_from_row
from queuectl.storage.sqlite import sql
from queuectl.storage.sqlite.connection import Database
from queuectl.storage.sqlite.results import Rows, transaction
from queuectl.storage.sqlite.rows import CLAIMED
from queuectl.storage.sqlite.schema import BUSY_TIMEOUT_SECONDS, translate_errors

_SETTINGS = "SELECT name, paused, concurrency, rate_count, rate_seconds FROM queues"
_WITH_SETTINGS = (
    f"{_SETTINGS} WHERE paused OR concurrency IS NOT NULL OR rate_count IS NOT NULL ORDER BY name"
)
_COUNTS = "SELECT queue, state, count(*) FROM jobs GROUP BY queue, state"
_ADD = "INSERT INTO queues (name) VALUES (?) ON CONFLICT (name) DO NOTHING"
_PAUSE = "UPDATE queues SET paused = ? WHERE name = ?"
_CONCURRENCY = "UPDATE queues SET concurrency = ? WHERE name = ?"
_RATE = "UPDATE queues SET rate_count = ?, rate_seconds = ? WHERE name = ?"
_FORGET_STARTS = "DELETE FROM queue_starts WHERE queue = ?"
_ONE = f"{_SETTINGS} WHERE name = ?"
#: A queue with nothing set has no row: workers go back to the plain claim.
_DROP_EMPTY = (
    "DELETE FROM queues WHERE name = ? AND NOT paused AND concurrency IS NULL AND rate_count IS NULL"
)

# --- the claim ---------------------------------------------------------------------------------

#: A limited queue's jobs that hold a claim (``jobs_held``: only held jobs are read). A
#: cancelled job still held counts: its command runs until its worker has stopped it.
_HELD = "SELECT count(*) FROM jobs INDEXED BY jobs_held WHERE claim_token IS NOT NULL AND queue = ?"
#: A rate-limited queue's starts are kept per bucket, a hundredth of its window (migration 9):
#: a window's count sums at most 101 rows however fast the queue runs. The oldest bucket may
#: begin before the window and is counted whole: the count errs high, so the rate holds, at the
#: cost of a start up to a hundredth of the window later than strictly allowed.
BUCKETS_PER_WINDOW = 100
_LOOKBACK = 1 + 1 / BUCKETS_PER_WINDOW  # the window and its oldest bucket's start
_STARTED = "SELECT coalesce(sum(starts), 0) FROM queue_starts WHERE queue = ? AND started_at > ?"
#: ``?3`` starts of queue ``?2`` at ``?1``, added to its bucket if it is rate-limited.
_RECORD_STARTS = (
    "INSERT INTO queue_starts (queue, started_at, starts)"
    f" SELECT name, CAST(?1 / (rate_seconds / {BUCKETS_PER_WINDOW}) AS INTEGER)"
    f" * (rate_seconds / {BUCKETS_PER_WINDOW}), ?3 FROM queues WHERE name = ?2 AND rate_count IS NOT NULL"
    " ON CONFLICT (queue, started_at) DO UPDATE SET starts = starts + excluded.starts"
)
#: The buckets of queue ``?2`` that the window at ``?1`` no longer reaches.
_TRIM_STARTS = (
    "DELETE FROM queue_starts WHERE queue = ?2"
    f" AND started_at <= ?1 - {_LOOKBACK!r} * (SELECT rate_seconds FROM queues WHERE name = ?2)"
)


#: Where a claimed row (``CLAIMED``) has the job's queue.
_QUEUE_COLUMN = SUMMARY_FIELDS.index("queue")


@cache
def _claim_one(queue_count: int) -> str:
    """A claim of one job (a worker's slot came free), within every queue's settings, in one
    statement: any due job of a queue that is not paused and can start one more will do, so
    the walk needs no allowance per queue. Parameters: worker, lease end, now x3, the queues.
    """
    return sql.CLAIM_SET + (
        " WHERE seq = (SELECT seq FROM jobs INDEXED BY jobs_due WHERE state IN ('pending', 'failed')"
        f" AND waiting = 0 AND run_at <= ?5{sql.queue_filter(queue_count)} AND queue NOT IN ("
        # Each count only for a queue with that limit: SQLite runs both sides of a comparison.
        "SELECT name FROM queues AS q WHERE q.paused OR q.concurrency IS NOT NULL AND q.concurrency <= ("
        "SELECT count(*) FROM jobs AS h INDEXED BY jobs_held"
        " WHERE h.claim_token IS NOT NULL AND h.queue = q.name)"
        " OR q.rate_count IS NOT NULL AND q.rate_count <= ("
        "SELECT coalesce(sum(s.starts), 0) FROM queue_starts AS s"
        f" WHERE s.queue = q.name AND s.started_at > ?5 - {_LOOKBACK!r} * q.rate_seconds))"
        f" ORDER BY priority DESC, run_at, created_at, seq LIMIT 1) RETURNING {CLAIMED.sql}"
    )


_DUE = (
    "SELECT seq, queue, priority, run_at, created_at FROM jobs INDEXED BY jobs_due"
    " WHERE state IN ('pending', 'failed') AND waiting = 0 AND run_at <= ?"
)
_ORDER = " ORDER BY priority DESC, run_at, created_at, seq LIMIT ?"


def _names(count: int) -> str:
    return ", ".join("?" * count)


def flow_claim(
    *,
    worker_id: str,
    queues: Sequence[str] | None,
    limit: int,
    lease: float,
    clock: Callable[[], float],
) -> Callable[[sqlite3.Connection], Rows]:
    """Work that claims up to ``limit`` due jobs as ``sql.claim`` does, within the queues'
    settings, inside the caller's transaction (``claim`` below opens one)."""
    served = set(queues) if queues else None

    def work(connection: sqlite3.Connection) -> Rows:
        now = clock()  # inside the transaction: after every start committed before it
        if limit == 1:
            one = connection.execute(
                _claim_one(len(queues or ())), (worker_id, now + lease, now, now, now, *(queues or ()))
            ).fetchall()
            if one:
                _record_starts(connection, Counter(row[_QUEUE_COLUMN] for row in one), now)
            return one
        flow = [settings_from_row(*row) for row in connection.execute(_WITH_SETTINGS)]
        allowances = {
            item.name: _allowance(connection, item, limit, now)
            for item in flow
            if not item.paused and (served is None or item.name in served)
        }
        chosen = _choose(connection, flow, allowances, queues, limit, now)
        if not chosen:
            return []
        claimed = connection.execute(
            f"{sql.CLAIM_SET} WHERE seq IN ({_names(len(chosen))}) RETURNING {CLAIMED.sql}",
            (worker_id, now + lease, now, now, *(row[0] for row in chosen)),
        ).fetchall()
        rated = {item.name for item in flow if item.rate is not None}
        if rated:
            _record_starts(connection, Counter(row[1] for row in chosen if row[1] in rated), now)
        return claimed

    return work


def _record_starts(connection: sqlite3.Connection, started: Counter[str], now: float) -> None:
    """Add ``started`` (jobs per queue) to the rate-limited ones' buckets of ``now``; drop the
    buckets their windows no longer reach."""
    for name, count in started.items():
        if connection.execute(_RECORD_STARTS, (now, name, count)).rowcount:
            connection.execute(_TRIM_STARTS, (now, name))


def _choose(
    connection: sqlite3.Connection,
    flow: Sequence[QueueSettings],
    allowances: dict[str, int],
    queues: Sequence[str] | None,
    limit: int,
    now: float,
) -> Rows:
    """Up to ``limit`` due jobs (``seq, queue``) in claim order, no more of a limited queue's
    than its allowance (``allowances``, used up here), none of a paused queue's.

    One walk of the claim order that skips only the queues that can take nothing, and stops at
    ``limit`` jobs: a limited queue within its limit costs no more than any other. Only when a
    walk hands a limited queue more jobs than it may start does another walk follow, past that
    queue's jobs, for the other queues' (the price of a queue at its limit with a backlog).
    """
    blocked = {item.name for item in flow if item.paused}
    blocked |= {name for name, allowance in allowances.items() if allowance <= 0}
    served = list(queues or ())
    chosen: Rows = []
    while len(chosen) < limit:
        found = connection.execute(
            f"{_DUE}{sql.queue_filter(len(served))} AND queue NOT IN ({_names(len(blocked))})"
            f" AND seq NOT IN ({_names(len(chosen))}){_ORDER}",
            (now, *served, *blocked, *(row[0] for row in chosen), limit - len(chosen)),
        ).fetchall()
        overflowed = False
        for row in found:
            queue = row[1]
            if queue in allowances:
                if allowances[queue] <= 0:
                    overflowed = True
                    continue
                allowances[queue] -= 1
                if allowances[queue] == 0:
                    blocked.add(queue)
            chosen.append(row)
        if not overflowed:
            break
    return chosen


def _allowance(connection: sqlite3.Connection, item: QueueSettings, limit: int, now: float) -> int:
    """How many more of the queue's jobs may start now (at most ``limit``)."""
    allowed = limit
    if item.concurrency is not None:
        (held,) = connection.execute(_HELD, (item.name,)).fetchone()
        allowed = min(allowed, item.concurrency - held)
    if item.rate is not None:
        (started,) = connection.execute(_STARTED, (item.name, now - _LOOKBACK * item.rate.seconds)).fetchone()
        allowed = min(allowed, item.rate.count - started)
    return allowed


def in_transaction(work: Callable[[sqlite3.Connection], Rows]) -> Callable[[sqlite3.Connection], Rows]:
    """``work`` in a ``BEGIN IMMEDIATE`` transaction of its own (a claim without a result)."""
    return lambda connection: transaction(connection, lambda: work(connection))


def _count_by_queue(path: Path) -> list[Any]:
    """The jobs per queue and state: a pass over every job (half a second for a million), so on a
    connection of its own, in a worker thread: the store's other reads do not wait behind it."""
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS)
    try:
        return connection.execute(_COUNTS).fetchall()
    finally:
        connection.close()


# --- settings ----------------------------------------------------------------------------------


class QueueSettingsStore:
    """Reads and writes the ``queues`` table of one SQLite store; ``wake`` wakes idle workers."""

    def __init__(self, database: Database, wake: Callable[[], None]) -> None:
        self._db = database
        self._wake = wake

    async def list_queues(self) -> list[QueueInfo]:
        with translate_errors(self._db.path):
            counts = await anyio.to_thread.run_sync(_count_by_queue, self._db.path)
        settings = [settings_from_row(*row) for row in await self._db.fetch(_SETTINGS)]
        return queue_infos(counts, settings)

    async def queue_settings(self) -> list[QueueSettings]:
        return [settings_from_row(*row) for row in await self._db.fetch(_WITH_SETTINGS)]

    async def pause_queues(self, names: Sequence[str], *, paused: bool) -> None:
        work: list[tuple[str, tuple[Any, ...]]] = []
        for name in dict.fromkeys(names):
            work += [(_ADD, (name,)), (_PAUSE, (int(paused), name)), (_DROP_EMPTY, (name,))]
        await self._write(work)
        if not paused:
            self._wake()

    async def limit_queue(
        self,
        name: str,
        *,
        concurrency: int | Unset | None = UNSET,
        rate: Rate | Unset | None = UNSET,
    ) -> QueueSettings:
        work: list[tuple[str, tuple[Any, ...]]] = [(_ADD, (name,))]
        if not isinstance(concurrency, Unset):
            work.append((_CONCURRENCY, (concurrency, name)))
        if isinstance(rate, Rate):
            work.append((_RATE, (rate.count, rate.seconds, name)))
        elif rate is None:
            work += [(_RATE, (None, None, name)), (_FORGET_STARTS, (name,))]
        work += [(_ONE, (name,)), (_DROP_EMPTY, (name,))]
        found = (await self._write(work))[-2]
        self._wake()
        return settings_from_row(*found[0])

    async def _write(self, work: Sequence[tuple[str, tuple[Any, ...]]]) -> list[list[Any]]:
        """The statements in one durable transaction; the rows each returned."""
        db = await self._db.durable()
        with translate_errors(self._db.path):
            await self._db.patiently(lambda: db.execute("BEGIN IMMEDIATE"))
            try:
                found = [list(await db.execute_fetchall(statement, values)) for statement, values in work]
                await db.execute("COMMIT")
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._db.rollback(db)
                raise
        return found
