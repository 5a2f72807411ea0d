"""SQLite rows to and from queuectl's records, by column name; times are stored as epoch seconds.

A job field is a column of the same name, so the column lists here derive from the field table
in ``models``, and a new field needs no edit here unless SQLite cannot store its type as it is
(then this module refuses to import until ``_FROM_SQLITE`` says how). Each ``JobReader`` works
out once, when it is made, how each of its columns becomes a field: reading a row is then one
pass over it, with no lookups (claims read rows on the worker's hot path).

Plain code with no driver import, shared by the async store and the direct insert.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from queuectl.config import Settings
from queuectl.models import (
    JOB_FIELDS,
    STORED_INPUT_FIELDS,
    SUMMARY_FIELDS,
    UNSET,
    Claim,
    Job,
    JobState,
    NewJob,
    WorkerInfo,
)
from queuectl.records import FieldInfo, fields, set_field
from queuectl.storage.sqlite.history import HISTORY

if TYPE_CHECKING:
    from queuectl.models import AttemptRecord

# --- values --------------------------------------------------------------------------------


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


def moment(epoch: float | None) -> datetime | None:
    return None if epoch is None else at(epoch)


def epoch(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def blob(value: bytes | None) -> bytes:
    return bytes(value or b"")


def mapping(text: str | None) -> dict[str, str] | None:
    """A JSON object column (``env``) read back: NULL, the common case, costs one comparison."""
    if text is None:
        return None
    import json  # not at import: `queuectl enqueue` starts faster without it

    value: dict[str, str] = json.loads(text)
    return value


def json_text(value: Mapping[str, str] | None) -> str | None:
    """A mapping (``env``) as the JSON text stored for it; ``None`` stays NULL."""
    if value is None:
        return None
    import json

    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def items(text: str | None) -> tuple[Any, ...]:
    """A JSON array column (``after``, ``no_retry_exit_codes``) read back: NULL is none."""
    if text is None:
        return ()
    import json

    return tuple(json.loads(text))


def items_text(value: tuple[Any, ...]) -> str | None:
    """A tuple field as the JSON array stored for it; none is NULL, the common case."""
    if not value:
        return None
    import json

    return json.dumps(list(value), ensure_ascii=False, separators=(",", ":"))


def history(text: str) -> tuple[AttemptRecord, ...]:
    """The ``history`` column (a JSON array of ``AttemptRecord.to_dict()``) read back."""
    if text == "[]":
        return ()
    import json

    from queuectl.models import AttemptRecord  # not at import: `queuectl enqueue` reads no history

    return tuple(AttemptRecord.from_dict(entry) for entry in json.loads(text))


#: How a stored value becomes a job field's value, by the field's annotation.
_FROM_SQLITE: dict[str, Callable[[Any], Any]] = {
    "datetime": at,
    "datetime | None": moment,
    "JobState": JobState,
    "bytes": blob,
    "dict[str, str] | None": mapping,
    "tuple[str, ...]": items,
    "tuple[int, ...]": items,
    "tuple[AttemptRecord, ...]": history,
}
#: How a new job's value becomes what SQLite stores, by annotation, where it is not as it is.
_TO_SQLITE: dict[str, Callable[[Any], Any]] = {
    "dict[str, str] | None": json_text,
    "tuple[str, ...]": items_text,
    "tuple[int, ...]": items_text,
}
#: Annotations whose values SQLite stores and returns as they are.
_AS_IS = frozenset({"str", "int", "float", "str | None", "int | None", "float | None"})


def _from_sqlite(info: FieldInfo) -> Callable[[Any], Any] | None:
    if info.annotation in _AS_IS:
        return None
    if info.annotation not in _FROM_SQLITE:
        raise TypeError(f"job field {info.name} ({info.annotation}): say in sqlite/rows.py how it is stored")
    return _FROM_SQLITE[info.annotation]


# --- rows to records -------------------------------------------------------------------------

#: What to select for a field that is not a column of its own name.
_SELECTED = {"history": HISTORY}

_JOB_FIELDS = {info.name: info for info in fields(Job)}
#: Each job field's converter from SQLite (``None``: read as it is).
_CONVERTERS = {name: _from_sqlite(info) for name, info in _JOB_FIELDS.items()}


class JobReader:
    """Reads rows of ``columns`` (job fields, in any order), then ``extra`` columns, into ``Job``s.

    ``sql`` is the column list to select or return. A field without a column takes the value
    ``constants`` gives it, else its default (the ``detail`` fields of lists).
    """

    __slots__ = ("_converters", "_names", "_rest", "_width", "sql")

    def __init__(
        self, columns: Sequence[str], *, extra: Sequence[str] = (), constants: Mapping[str, Any] | None = None
    ) -> None:
        self._names = tuple(columns)
        self._converters = tuple(_CONVERTERS[name] for name in columns)
        given = constants or {}
        rest = {
            name: given.get(name, info.default) for name, info in _JOB_FIELDS.items() if name not in columns
        }
        missing = [name for name in rest if name not in given and _JOB_FIELDS[name].required]
        if missing:
            raise TypeError(f"a reader of columns {columns} has no value for {missing}")
        self._rest = tuple(rest.items())
        self._width = len(self._names)
        self.sql = ", ".join((*(_SELECTED.get(name, name) for name in columns), *extra))

    def job(self, row: Sequence[Any]) -> Job:
        # One pass setting each field, as ``Job.__init__`` would: the same record, built faster
        # than by keyword (no dict of arguments to make and then look every field up in).
        job: Job = Job.__new__(Job)
        # strict=False: the row may go on with the extra columns.
        for name, convert, value in zip(self._names, self._converters, row, strict=False):
            set_field(job, name, value if convert is None else convert(value))
        for name, value in self._rest:
            set_field(job, name, value)
        return job

    def claim(self, row: Sequence[Any]) -> Claim:
        """A claim from a row whose first extra column is the ``claim_token``."""
        return Claim(job=self.job(row), token=row[self._width])

    def extra(self, row: Sequence[Any]) -> Sequence[Any]:
        """The ``extra`` columns of a row."""
        return row[self._width :]


#: Jobs as lists show them, without the detail fields (the output tails).
SUMMARY = JobReader(SUMMARY_FIELDS)
#: Jobs with every field (``show``).
FULL = JobReader(JOB_FIELDS)
#: Claimed jobs: the summary and the claim's token.
CLAIMED = JobReader(SUMMARY_FIELDS, extra=("claim_token",))


def best_first(claims: list[Claim]) -> list[Claim]:
    """RETURNING gives no order: hand out the best job first (the order the claim takes them in)."""
    if len(claims) > 1:
        claims.sort(key=lambda c: (-c.job.priority, c.job.run_at, c.job.created_at))
    return claims


# --- new jobs to rows --------------------------------------------------------------------------

#: The fields of a new job copied into its row, in order (``run_at`` is worked out, see ``insert_row``).
_GIVEN = tuple(name for name in STORED_INPUT_FIELDS if name != "run_at")
#: Where in ``_GIVEN`` a value is stored converted (``env`` as JSON text), and how.
_STORED_AS: tuple[tuple[int, Callable[[Any], Any]], ...] = tuple(
    (_GIVEN.index(name), _TO_SQLITE[_JOB_FIELDS[name].annotation])
    for name in _GIVEN
    if _JOB_FIELDS[name].annotation in _TO_SQLITE
)
for _name in _GIVEN:  # the others are copied as they are: SQLite must store them as they are
    if _CONVERTERS[_name] is not None and _JOB_FIELDS[_name].annotation not in _TO_SQLITE:
        raise TypeError(f"field {_name} of a new job: say in sqlite/rows.py how SQLite stores it")
#: Where in ``_GIVEN`` a value may still be ``UNSET``: the façade must have resolved it.
_UNSETTABLE = tuple(
    (_GIVEN.index(info.name), info.name) for info in fields(NewJob) if "Unset" in info.annotation
)
_given = attrgetter(*_GIVEN)

#: The columns an insert sets, in order: the given fields, ``run_at``, then the timestamps.
#: The state is ``pending``, and ``attempts`` starts at the table's default, 0.
INSERT_COLUMNS: tuple[str, ...] = (*_GIVEN, "run_at", "created_at", "updated_at")
INSERT = (
    f"INSERT INTO jobs ({', '.join(INSERT_COLUMNS)}, state)"
    f" VALUES ({', '.join('?' * len(INSERT_COLUMNS))}, 'pending')"
)
#: The bulk insert of jobs alike but for their id and command, as one statement: SQLite walks a
#: JSON array of ``[id, command]`` pairs itself, a third faster at 100,000 rows than
#: ``executemany``. The other columns are named parameters (``pairs_parameters``).
_FROM_PAIR = {"id": "value ->> 0", "command": "value ->> 1"}
INSERT_PAIRS = (
    f"INSERT INTO jobs ({', '.join(INSERT_COLUMNS)}, state)"
    f" SELECT {', '.join(_FROM_PAIR.get(name, f':{name}') for name in INSERT_COLUMNS)}, 'pending'"
    " FROM json_each(:pairs) ORDER BY key"
)
if INSERT_COLUMNS[:2] != ("id", "command"):
    raise TypeError("the bulk insert takes the id and the command first")


def insert_row(job: NewJob, now: float) -> tuple[Any, ...]:
    """Parameters of ``INSERT`` for ``job`` inserted at ``now`` (``run_at`` of ``None``: now + ``delay``).

    ``TypeError`` for a field still ``UNSET``: defaults are the façade's to resolve.
    """
    values = _given(job)
    for place, name in _UNSETTABLE:
        if values[place] is UNSET:
            raise TypeError(f"add_jobs() got job {job.id!r} with {name} UNSET: resolve it before the store")
    for place, convert in _STORED_AS:
        if values[place] is not None:
            values = (*values[:place], convert(values[place]), *values[place + 1 :])
    run_at = epoch(job.run_at) if job.run_at is not None else now + (job.delay or 0.0)
    return (*values, run_at, now, now)


def insert_rows(jobs: Iterable[NewJob], now: float) -> list[tuple[Any, ...]]:
    return [insert_row(job, now) for job in jobs]


def pairs_parameters(shared: NewJob, now: float) -> dict[str, Any]:
    """The named parameters of ``INSERT_PAIRS`` (all but ``pairs``): the fields of ``shared``."""
    return dict(zip(INSERT_COLUMNS, insert_row(shared, now), strict=True))


#: The job as just inserted, from its row of ``INSERT`` parameters, without reading it back.
_INSERTED = JobReader(INSERT_COLUMNS, constants={"state": JobState.PENDING, "attempts": 0})
stored_job = _INSERTED.job


# --- settings ------------------------------------------------------------------------------------

SELECT_SETTINGS = "SELECT key, value FROM settings"


def settings_from_rows(rows: Iterable[tuple[str, str]]) -> Settings:
    """Typed settings from the rows of ``SELECT_SETTINGS`` (defaults for keys never set)."""
    return Settings.from_stored(dict(rows))


def worker_from_row(row: Sequence[Any]) -> WorkerInfo:
    """A ``WorkerInfo`` from a row of ``sql.LIVE_WORKERS``: id, host, pid, started, heartbeat, running."""
    worker_id, host, pid, started_at, heartbeat_at, running = row
    return WorkerInfo(
        id=worker_id,
        host=host,
        pid=pid,
        started_at=at(started_at),
        heartbeat_at=at(heartbeat_at),
        running=running,
    )
