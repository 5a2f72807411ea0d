"""What a claim writes on SQLite: an attempt's result, its release, its live output.

Each is work for the ``lane`` (a function of the connection, run in the event loop's thread):
one transaction, whose every write is conditional on the claim's token.

The plain result (a job's first attempt, no live output) stays one statement, as it was before
jobs had a history: the entry (``attempt_json``) is appended by the same UPDATE that records the
result. Only a job that may have an earlier entry moves that entry's output aside first
(``sql.move_output``), in the same transaction. Which jobs may have one is known without reading
the row: every write that appends an entry sets ``finished_at`` (``sql.FINISH``,
``FINISH_CANCELLED``, ``RELEASE``), so a claimed job whose ``finished_at`` is still unset has none.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring
from operator import attrgetter
from typing import Any, TypeVar

from queuectl.models import AttemptEntry, AttemptRecord, Claim, JobState, Outcome
from queuectl.records import fields
from queuectl.storage.sqlite import schema as sqlite_schema
from queuectl.storage.sqlite import sql
from queuectl.storage.sqlite.rows import epoch

#: The rows a statement returned; a statement with its parameters (the claim that follows a result).
Rows = list[Any]
Take = tuple[str, tuple[Any, ...]]
T = TypeVar("T")

_MOVE_IF_PROCESSING = sql.move_output("'processing'")
_MOVE_IF_CANCELLED = sql.move_output("'cancelled'")
_MOVE_IF_HELD = sql.move_output("'processing', 'cancelled'")


# --- history entries ---------------------------------------------------------------------------


#: The second ``_json_moment`` wrote last, and its text up to the microseconds: attempts start
#: and end many to a second, and writing out a date and time costs more than the rest of an
#: entry. One tuple, replaced whole: safe from any thread.
_last_second: tuple[tuple[int, ...], str] = ((), "")


def _json_moment(value: datetime | None) -> str:
    """``models.isoformat(value)`` as a JSON string: the same text in a half of the time."""
    global _last_second
    if value is None:
        return "null"
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    second = (value.year, value.month, value.day, value.hour, value.minute, value.second)
    known, text = _last_second
    if second != known:
        # Percent formatting: half the time of an f-string with format specs.
        text = '"%04d-%02d-%02dT%02d:%02d:%02d.' % second  # noqa: UP031
        _last_second = (second, text)
    return f'{text}{value.microsecond:06d}Z"'


def _json_text(value: str | None) -> str:
    return "null" if value is None else str(encode_basestring(value))


_attempt_values = attrgetter(
    "worker", "host", "pid", "started_at", "finished_at", "exit_code", "outcome", "error"
)


def attempt_json(attempt: AttemptEntry) -> str:
    """``attempt`` (an ``AttemptRecord``, or the ``Outcome`` that appends it) as the JSON text of
    ``AttemptRecord.to_dict()``, which the history stores.

    Made here, in one expression, because it is made for every attempt on the worker's hot
    path: ``json.dumps(attempt.to_dict())`` costs twice as much, and having SQLite build the
    object from a parameter per key costs more still (binding a parameter costs more than
    writing a key). The outcomes' words need no escaping.
    """
    worker, host, pid, started_at, finished_at, exit_code, outcome, error = _attempt_values(attempt)
    return (
        f'{{"worker":{_json_text(worker)},"host":{_json_text(host)},'
        f'"pid":{"null" if pid is None else int(pid)},'
        f'"started_at":{_json_moment(started_at)},"finished_at":{_json_moment(finished_at)},'
        f'"exit_code":{"null" if exit_code is None else int(exit_code)},'
        f'"outcome":"{outcome.value}","error":{_json_text(error)}}}'
    )


#: What ``attempt_json`` writes: every field of ``AttemptRecord``, in order. Refuse to import
#: when the record no longer matches.
_WRITTEN = (
    ("worker", "str | None"),
    ("host", "str | None"),
    ("pid", "int | None"),
    ("started_at", "datetime | None"),
    ("finished_at", "datetime | None"),
    ("exit_code", "int | None"),
    ("outcome", "AttemptOutcome"),
    ("error", "str | None"),
)
if tuple((info.name, info.annotation) for info in fields(AttemptRecord)) != _WRITTEN:
    raise TypeError("AttemptRecord changed: say in sqlite/results.py (attempt_json) how to store it")


# --- the lane's work -----------------------------------------------------------------------------


class Finishing:
    """The statements that record one attempt's ``outcome`` for ``claim`` at ``now``."""

    __slots__ = ("_key", "_move", "_parameters", "_statement", "_streamed")

    def __init__(self, claim: Claim, outcome: Outcome, now: float) -> None:
        self._key = (claim.job.id, claim.token)
        self._streamed = outcome.streamed
        entry = attempt_json(outcome)
        state = outcome.state
        if state is JobState.CANCELLED:
            self._statement = sql.FINISH_CANCELLED
            self._parameters: tuple[Any, ...] = (
                epoch(outcome.finished_at),
                outcome.stdout,
                outcome.stderr,
                entry,
                now,
                *self._key,
            )
            move = _MOVE_IF_CANCELLED
        else:
            failed = state is JobState.FAILED
            self._statement = sql.FINISH_RETRY if failed else sql.FINISH
            self._parameters = (
                state.value,
                *((now + outcome.retry_in,) if failed else ()),
                outcome.exit_code,
                outcome.error,
                epoch(outcome.started_at),
                epoch(outcome.finished_at),
                outcome.stdout,
                outcome.stderr,
                entry,
                now,
                *self._key,
            )
            move = _MOVE_IF_PROCESSING
        # No finished_at yet: no entry yet, so no output to move (see the module's docstring).
        self._move = None if claim.job.finished_at is None else move

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
            claimed = connection.execute(*take).fetchall()
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
        attempt_json(attempt),
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
