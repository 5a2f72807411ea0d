"""How the PostgreSQL store keeps a job's ``history``, as SQL expressions over the job's row.

As on SQLite (``storage/sqlite/history``): the latest entry of a plain result is kept in
columns (``attempt_worker``, ``attempt_host``, ``attempt_pid``, ``attempt_started`` and
``attempt_outcome``, with the row's ``finished_at``, ``exit_code`` and ``last_error``), which
costs the worker's hot path much less than building a jsonb entry and appending it. Earlier
entries are the jsonb array ``history``; ``attempt_outcome`` NULL means there is no latest entry
in columns. A write that appends another entry, or changes ``last_error`` (a cancel), first
folds the columns' entry into the array (``FOLDED``); readers see the whole history (``HISTORY``).
"""

from __future__ import annotations

from queuectl.models import AttemptRecord
from queuectl.records import fields
from queuectl.storage.base import HISTORY_LIMIT

#: How a history entry's timestamps read in JSON: as ``queuectl.models.isoformat`` writes them.
_ISO_UTC = """'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"""
#: The parameter types of the kinds of value an ``AttemptRecord`` field holds.
_ENTRY_TYPES = {"str": "text", "int": "integer", "AttemptOutcome": "text", "datetime": "timestamptz"}


def entry_of(values: list[str]) -> str:
    """A jsonb entry of ``values``, one SQL expression per field of ``AttemptRecord``, in order."""
    pairs = []
    for info, value in zip(fields(AttemptRecord), values, strict=True):
        if info.annotation.startswith("datetime"):
            value = f"to_char({value} AT TIME ZONE 'UTC', {_ISO_UTC})"
        pairs.append(f"'{info.name}', {value}")
    return f"jsonb_build_object({', '.join(pairs)})"


def entry(first: int) -> str:
    """An entry built from parameters ``$first``... (``ENTRY_PARAMETERS`` of them, the fields of
    ``AttemptRecord`` in order: ``rows.entry_arguments``), the keys of ``AttemptRecord.to_dict``."""
    return entry_of(
        [
            f"${number}::{_ENTRY_TYPES[info.annotation.split('|')[0].strip()]}"
            for number, info in enumerate(fields(AttemptRecord), first)
        ]
    )


ENTRY_PARAMETERS = len(fields(AttemptRecord))
_LATEST = entry_of(
    [
        "attempt_worker",
        "attempt_host",
        "attempt_pid",
        "attempt_started",
        "finished_at",
        "exit_code",
        "attempt_outcome",
        "last_error",
    ]
)
#: Every kept entry, oldest first: the array and, after it, the columns' entry if there is one.
HISTORY = f"CASE WHEN attempt_outcome IS NULL THEN history ELSE history || {_LATEST} END"
#: The history as an array of at most ``HISTORY_LIMIT - 1`` entries (room for one more), the
#: columns' entry included: set it with ``attempt_outcome = NULL``, or new columns.
FOLDED = f"""CASE WHEN jsonb_array_length({HISTORY}) < {HISTORY_LIMIT} THEN {HISTORY}
            ELSE ({HISTORY}) - 0 END"""
#: ``history`` and ``attempt_outcome`` after the columns' entry is folded into the array.
FOLD = f"history = {FOLDED}, attempt_outcome = NULL"


def append(first: int) -> str:
    """``FOLD``, then the entry of parameters ``$first``... (``entry``) appended to the array."""
    return f"history = {FOLDED} || {entry(first)}, attempt_outcome = NULL, entries = entries + 1"
