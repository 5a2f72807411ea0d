"""What a claim writes on SQLite: an attempt's result, its release, its live output.

Each is work for the ``lane`` (a function of the connection, run in the event loop's thread):
one transaction, whose every write is conditional on the claim's token.

The plain result (a job's first attempt, no live output) stays one statement, as it was before
jobs had a history: the same UPDATE that records the result keeps its entry in the latest entry's
columns (``history``). Only a job that may have an earlier entry moves that entry's output aside first
(``sql.move_output``), in the same transaction. Which jobs may have one is known without reading
the row: every write that appends an entry sets ``finished_at`` (``sql.FINISH``,
``FINISH_CANCELLED``, ``RELEASE``), so a claimed job whose ``finished_at`` is still unset has none.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from queuectl.models import AttemptEntry, AttemptRecord, Claim, JobState, Outcome
from queuectl.storage.sqlite import schema as sqlite_schema
from queuectl.storage.sqlite import sql
from queuectl.storage.sqlite.history import time_text
from queuectl.storage.sqlite.rows import epoch

#: The rows a statement returned; the claim that follows a result: a statement with its
#: parameters (the plain claim), or work inside the transaction (``queues.flow_claim``).
Rows = list[Any]
Take = tuple[str, tuple[Any, ...]] | Callable[[sqlite3.Connection], Rows]
T = TypeVar("T")

_MOVE_IF_PROCESSING = sql.move_output("'processing'")
_MOVE_IF_CANCELLED = sql.move_output("'cancelled'")
_MOVE_IF_HELD = sql.move_output("'processing', 'cancelled'")


# --- history entries ---------------------------------------------------------------------------


def entry_values(attempt: AttemptEntry) -> tuple[Any, ...]:
    """The parameters of ``history.APPEND``: the entry's fields (``history.time_text``)."""
    return (
        attempt.worker,
        attempt.host,
        attempt.pid,
        time_text(epoch(attempt.started_at)),
        time_text(epoch(attempt.finished_at)),
        attempt.exit_code,
        attempt.outcome.value,
        attempt.error,
    )


# --- the lane's work -----------------------------------------------------------------------------


class Finishing:
    """The statements that record one attempt's ``outcome`` for ``claim`` at ``now``."""

    __slots__ = ("_key", "_move", "_parameters", "_statement", "_streamed")

    def __init__(self, claim: Claim, outcome: Outcome, now: float) -> None:
        self._key = (claim.job.id, claim.token)
        self._streamed = outcome.streamed
        # No finished_at yet: no entry yet, so no output to move (see the module's docstring).
        first = claim.job.finished_at is None
        state = outcome.state
        finished_at = epoch(outcome.finished_at)
        if state is JobState.CANCELLED:
            self._statement = sql.FINISH_CANCELLED
            self._parameters: tuple[Any, ...] = (
                finished_at,
                outcome.stdout,
                outcome.stderr,
                *entry_values(outcome),
                now,
                *self._key,
            )
            self._move = None if first else _MOVE_IF_CANCELLED
            return
        started_at = epoch(outcome.started_at)
        if state is JobState.FAILED:
            self._statement = sql.FINISH_RETRY_FIRST if first else sql.FINISH_RETRY
            retry_at: tuple[float, ...] = (now + outcome.retry_in,)
        else:
            self._statement = sql.FINISH_FIRST if first else sql.FINISH
            retry_at = ()
        # The entry's finished_at, exit code and error are the row's (``history``).
        self._parameters = (
            state.value,
            *retry_at,
            outcome.exit_code,
            outcome.error,
            started_at,
            finished_at,
            outcome.stdout,
            outcome.stderr,
            outcome.worker,
            outcome.host,
            outcome.pid,
            started_at,
            outcome.outcome.value,
            now,
            *self._key,
        )
        self._move = None if first else _MOVE_IF_PROCESSING

    @property
    def alone(self) -> bool:
        """Whether the result is one statement, which needs no transaction of its own."""
        return self._move is None and not self._streamed

    def run(self, connection: sqlite3.Connection) -> bool:
        """Record the result inside the caller's transaction (or alone, if ``alone``)."""
        if self._move is not None:
            connection.execute(self._move, self._key)
        if not connection.execute(self._statement, self._parameters).fetchall():
            return False  # the claim was lost: the move above matched nothing either
        if self._move is not None:
            connection.execute(sql.TRIM_OUTPUTS, self._key[:1])
        if self._streamed:
            connection.execute(sql.DROP_CHUNKS, self._key[:1])
        return True


def transaction(connection: sqlite3.Connection, work: Callable[[], T]) -> T:
    """``work()`` in one ``BEGIN IMMEDIATE`` transaction on ``connection``."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        connection.execute("COMMIT")
    except BaseException:
        sqlite_schema.rollback(connection)
        raise
    return result


def finish(finishing: Finishing) -> Callable[[sqlite3.Connection], bool]:
    def work(connection: sqlite3.Connection) -> bool:
        if finishing.alone:
            return finishing.run(connection)
        return transaction(connection, lambda: finishing.run(connection))

    return work


def finish_and_claim(finishing: Finishing, take: Take) -> Callable[[sqlite3.Connection], tuple[bool, Rows]]:
    def work(connection: sqlite3.Connection) -> tuple[bool, Rows]:
        connection.execute("BEGIN IMMEDIATE")
        try:
            accepted = finishing.run(connection)
            claimed = take(connection) if callable(take) else connection.execute(*take).fetchall()
            connection.execute("COMMIT")
        except BaseException:
            sqlite_schema.rollback(connection)
            raise
        return accepted, claimed

    return work


def release(claim: Claim, attempt: AttemptRecord, now: float) -> Callable[[sqlite3.Connection], bool]:
    key = (claim.job.id, claim.token)
    finished_at = epoch(attempt.finished_at)
    parameters = (
        epoch(attempt.started_at),
        now if finished_at is None else finished_at,  # an entry always sets it (module docstring)
        *entry_values(attempt),
        now,
        *key,
    )

    def run(connection: sqlite3.Connection) -> bool:
        connection.execute(_MOVE_IF_HELD, key)
        if not connection.execute(sql.RELEASE, parameters).fetchall():
            return False
        connection.execute(sql.TRIM_OUTPUTS, key[:1])
        connection.execute(sql.DROP_CHUNKS, key[:1])
        return True

    return lambda connection: transaction(connection, lambda: run(connection))


def append_output(
    claim: Claim,
    chunks: Sequence[tuple[int, int, bytes]],
    *,
    progress: str | None,
    keep: int,
    lease_end: float,
) -> Callable[[sqlite3.Connection], bool]:
    """Work for ``SqliteStore.append_output`` (see ``Store.append_output``)."""
    job_id = claim.job.id
    ends: dict[int, int] = {}
    for stream, offset, data in chunks:
        if stream not in (1, 2):
            raise ValueError(f"stream {stream}: 1 is stdout, 2 is stderr")
        ends[stream] = max(ends.get(stream, 0), offset + len(data))
    kept_from = [ends[stream] - keep if stream in ends else None for stream in (1, 2)]

    def run(connection: sqlite3.Connection) -> bool:
        held = connection.execute(sql.HOLD_FOR_OUTPUT, (lease_end, progress, job_id, claim.token)).fetchall()
        if not held:
            return False
        entry = held[0][0]
        connection.executemany(
            sql.INSERT_CHUNK, [(job_id, entry, stream, offset, data) for stream, offset, data in chunks]
        )
        connection.execute(sql.TRIM_CHUNKS, (job_id, entry, *kept_from))
        return True

    return lambda connection: transaction(connection, lambda: run(connection))
