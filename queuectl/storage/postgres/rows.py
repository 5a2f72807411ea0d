"""PostgreSQL rows to and from queuectl's records, by column name, following the job field table.

asyncpg hands back values already typed (aware datetimes, floats, bytes) under their column
names, so a column fills the record field of the same name; only the fields whose type the
driver does not know (the state, a ``JobState``; the JSON fields, ``env`` and ``history``, which
arrive as text) are converted. Which fields those are is worked out once, at import, from the
annotations in ``queuectl.models``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from queuectl.models import (
    JOB_FIELDS,
    SETTING_DEFAULTS,
    SUMMARY_FIELDS,
    UNSET,
    AttemptEntry,
    AttemptRecord,
    Claim,
    Holder,
    Job,
    JobState,
    NewJob,
    OutputChunk,
    WorkerInfo,
)
from queuectl.records import fields
from queuectl.storage.postgres.schema import Row
from queuectl.storage.postgres.sql import GIVEN_FIELDS

# --- rows to records ---------------------------------------------------------------------------


def _items(text: str) -> tuple[Any, ...]:
    if text == "[]":  # nearly every job's after and no_retry_exit_codes: no parse on the claim path
        return ()
    return tuple(json.loads(text))


def _history(text: str) -> tuple[AttemptRecord, ...]:
    return tuple(AttemptRecord.from_dict(entry) for entry in json.loads(text))


#: Kinds of field value the driver does not return as such, and how to make them.
_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "JobState": JobState,
    "bytes": bytes,
    "dict[str, str]": json.loads,
    "tuple[str, ...]": _items,
    "tuple[int, ...]": _items,
    "tuple[AttemptRecord, ...]": _history,
}

#: The fields of a row read as they are, and those converted (a NULL stays ``None``).
_Reading = tuple[tuple[str, ...], tuple[tuple[str, Callable[[Any], Any]], ...]]


def _reading(names: Sequence[str]) -> _Reading:
    annotations = {info.name: info.annotation for info in fields(Job)}
    converted: list[tuple[str, Callable[[Any], Any]]] = []
    for name in names:
        kinds = [kind.strip() for kind in annotations[name].split("|")]
        converted.extend((name, _CONVERTERS[kind]) for kind in kinds if kind in _CONVERTERS)
    as_they_are = tuple(name for name in names if name not in dict(converted))
    return as_they_are, tuple(converted)


_SUMMARY = _reading(SUMMARY_FIELDS)
_FULL = _reading(JOB_FIELDS)
_WORKER_FIELDS = tuple(info.name for info in fields(WorkerInfo))


def job_from_row(row: Row, *, with_output: bool = False) -> Job:
    """A ``Job`` from a row of ``sql.JOB_COLUMNS`` (``sql.FULL_COLUMNS`` when ``with_output``)."""
    as_they_are, converted = _FULL if with_output else _SUMMARY
    values = {name: row[name] for name in as_they_are}
    for name, convert in converted:
        value = row[name]
        values[name] = None if value is None else convert(value)
    return Job(**values)


def claim_from_row(row: Row) -> Claim:
    """A ``Claim`` from a row of ``sql.CLAIM_COLUMNS``."""
    return Claim(job=job_from_row(row), token=row["claim_token"])


def lapsed_claim_from_row(row: Row) -> Claim:
    """A ``Claim`` with its ``holder`` from a row of ``sql.LAPSED``."""
    holder = Holder(worker=row["holder"], host=row["holder_host"], pid=row["holder_pid"])
    return Claim(job=job_from_row(row), token=row["claim_token"], holder=holder)


def chunk_from_row(row: Row) -> OutputChunk:
    """An ``OutputChunk`` from a row of ``sql.LIVE_OUTPUT``."""
    return OutputChunk(seq=row["chunk_seq"], stream=row["stream"], offset=row["offset"], data=row["data"])


def newest_first(found: list[Row]) -> list[Job]:
    """Jobs of rows of ``sql.JOB_COLUMNS, seq`` (RETURNING gives no order), as lists show them."""
    found.sort(key=lambda row: (row["created_at"], row["seq"]), reverse=True)
    return [job_from_row(row) for row in found]


def best_first(row: Row) -> tuple[Any, ...]:
    """Sort key of claimed rows: the order the claim takes them in."""
    return (-row["priority"], row["run_at"], row["created_at"], row["seq"])


def worker_from_row(row: Row) -> WorkerInfo:
    """A ``WorkerInfo`` from a row of ``sql.WORKER_COLUMNS``."""
    return WorkerInfo(**{name: row[name] for name in _WORKER_FIELDS})


# --- records to parameters ---------------------------------------------------------------------

#: Longest span of seconds passed to the server (a lease, a delay, a backoff): 200 years.
_MAX_SECONDS = 200 * 365.25 * 86400

#: The given fields that are ``UNSET`` until the façade resolves them, by place in ``GIVEN_FIELDS``.
_RESOLVED_ABOVE = tuple((GIVEN_FIELDS.index(name), name) for name in SETTING_DEFAULTS)
#: The given fields stored as JSON text (``env``), by place in ``GIVEN_FIELDS``.
_AS_JSON = tuple(
    GIVEN_FIELDS.index(info.name)
    for info in fields(NewJob)
    if info.meta.get("json") and info.name in GIVEN_FIELDS
)


def seconds(value: float) -> float:
    """A span the server can add to ``now()`` without overflowing a timestamp."""
    return max(-_MAX_SECONDS, min(float(value), _MAX_SECONDS))


def insert_arguments(jobs: Sequence[NewJob]) -> list[list[Any]]:
    """The arrays of ``sql.INSERT_JOBS`` for ``jobs``, one per ``sql.INSERT_FIELDS``.

    Raises ``TypeError`` for a job with a field still ``UNSET`` (``timeout``, ``max_retries``):
    the façade gives them their settings' values; a store never reads settings to fill them.
    """
    arrays = [[getattr(job, name) for job in jobs] for name in GIVEN_FIELDS]
    for place in _AS_JSON:
        # An empty tuple (no after, no exit codes: nearly every job) needs no encoder.
        arrays[place] = [
            None if value is None else "[]" if value == () else to_json(value) for value in arrays[place]
        ]
    for place, name in _RESOLVED_ABOVE:
        if UNSET in arrays[place]:
            job_id = next(job.id for job in jobs if getattr(job, name) is UNSET)
            raise TypeError(f"add_jobs() got job {job_id!r} with {name} UNSET: resolve it before the store")
    arrays.append([job.run_at for job in jobs])
    arrays.append([seconds(job.delay or 0.0) for job in jobs])
    return arrays


def entry_arguments(attempt: AttemptEntry) -> tuple[Any, ...]:
    """The parameters of a history entry (``history.ENTRY_PARAMETERS``): its fields, in order."""
    return (
        attempt.worker,
        attempt.host,
        attempt.pid,
        attempt.started_at,
        attempt.finished_at,
        attempt.exit_code,
        attempt.outcome.value,
        attempt.error,
    )


def to_json(value: Any) -> str:
    """A JSON field's text, as stored (compact, in the order given)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def given(arrays: Sequence[Sequence[Any]]) -> set[tuple[Any, ...]]:
    """The jobs of ``insert_arguments(...)`` as tuples of their ``GIVEN_FIELDS``."""
    return set(zip(*arrays[: len(GIVEN_FIELDS)], strict=True))


def stored(rows: Iterable[Row]) -> set[tuple[Any, ...]]:
    """Rows of ``sql.JOB_COLUMNS`` as tuples of their ``GIVEN_FIELDS``, to compare with ``given``."""
    return {tuple(row[name] for name in GIVEN_FIELDS) for row in rows}
