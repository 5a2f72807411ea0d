"""How the SQLite store keeps a job's ``history``, as SQL expressions over the job's row.

The latest entry of a plain result (``sql.FINISH``) is kept in columns: ``attempt_worker``,
``attempt_host``, ``attempt_pid``, ``attempt_started`` and ``attempt_outcome``, with the row's
``finished_at``, ``exit_code`` and ``last_error``, which that result sets to the entry's values.
Writing a few values costs the worker's hot path much less than making an entry's JSON and
appending it. Earlier entries are a JSON array in ``history``. ``attempt_outcome`` NULL means
there is no latest entry in columns.

A write that appends another entry, or changes ``last_error`` (a cancel), first folds the
columns' entry into the array (``folded``). Readers see the whole history (``HISTORY``).
Times in entries made here are epoch seconds (``AttemptRecord.from_dict`` takes both those and
ISO text, which the store's version 3 wrote).
"""

from __future__ import annotations

from queuectl.storage.base import HISTORY_LIMIT


def _column_time(column: str) -> str:
    # Six decimals, written as a JSON number: json_object would keep only 15 digits.
    return f"iif({column} IS NULL, NULL, json(printf('%.6f', {column})))"


def entry_object(
    worker: str, host: str, pid: str, started: str, finished: str, exit_code: str, outcome: str, error: str
) -> str:
    """A history entry as a JSON object made by SQLite from the given expressions (the times'
    as JSON numbers)."""
    return (
        f"json_object('worker', {worker}, 'host', {host}, 'pid', {pid},"
        f" 'started_at', {started}, 'finished_at', {finished},"
        f" 'exit_code', {exit_code}, 'outcome', {outcome}, 'error', {error})"
    )


def time_text(epoch: float | None) -> str | None:
    """A time parameter of ``APPEND``: epoch seconds as a JSON number's text."""
    return None if epoch is None else f"{epoch:.6f}"


#: The keys ``entry_object`` writes, in order: every field of ``AttemptRecord`` (a test holds
#: them equal; not checked at import, which ``queuectl enqueue`` would pay for).
ENTRY_KEYS = ("worker", "host", "pid", "started_at", "finished_at", "exit_code", "outcome", "error")

#: The columns of the latest entry, where a plain result leaves it.
LATEST_COLUMNS = "attempt_worker, attempt_host, attempt_pid, attempt_started, attempt_outcome"
_LATEST = entry_object(
    "attempt_worker",
    "attempt_host",
    "attempt_pid",
    _column_time("attempt_started"),
    _column_time("finished_at"),
    "exit_code",
    "attempt_outcome",
    "last_error",
)
#: Every kept entry, oldest first: the array and, after it, the columns' entry if there is one.
HISTORY = f"iif(attempt_outcome IS NULL, history, json_insert(history, '$[#]', {_LATEST}))"
#: The history as an array of at most ``HISTORY_LIMIT - 1`` entries (room for one more), the
#: columns' entry included: set it with ``attempt_outcome = NULL``.
FOLDED = f"iif(json_array_length({HISTORY}) >= {HISTORY_LIMIT}, json_remove({HISTORY}, '$[0]'), {HISTORY})"
#: ``history`` and ``attempt_outcome`` after the columns' entry is folded into the array.
FOLD = f"history = {FOLDED}, attempt_outcome = NULL"
#: ``FOLD``, then the entry of parameters worker, host, pid, started, finished (``time_text``),
#: exit code, outcome, error appended to the array.
_GIVEN = entry_object("?", "?", "?", "json(?)", "json(?)", "?", "?", "?")
APPEND = f"history = json_insert({FOLDED}, '$[#]', {_GIVEN}), attempt_outcome = NULL, entries = entries + 1"
