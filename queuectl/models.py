"""The records queuectl passes around: states, jobs, new jobs, attempt outcomes, workers.

The records of attempts (``Outcome``, ``AttemptRecord``, ``Decision``, ...) are kept in
``attempt_records`` and imported from here on first use: ``queuectl enqueue``, a short-lived
process, never needs them. Import every name from this module.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from queuectl.records import Record, field, fields, record

if TYPE_CHECKING:
    from queuectl.attempt_records import (
        AttemptEntry,
        AttemptOutcome,
        AttemptRecord,
        AttemptResult,
        Decision,
        EndedAttempt,
        LiveOutput,
        Outcome,
        OutputChunk,
    )

__all__ = (
    "FINAL_STATES",
    "INPUT_FIELDS",
    "JOB_FIELDS",
    "OUTPUT_ONLY_FIELDS",
    "RETRYABLE_STATES",
    "SETTING_DEFAULTS",
    "STORED_INPUT_FIELDS",
    "SUMMARY_FIELDS",
    "TIME_FIELDS",
    "UNFINISHED_STATES",
    "UNSET",
    "WAITING_STATES",
    "Claim",
    "Holder",
    "Job",
    "JobPage",
    "JobState",
    "MinuteCount",
    "NewJob",
    "QueueStatus",
    "Unset",
    "WorkerInfo",
    "isoformat",
    "json_value",
    "parse_isoformat",
    # the records of attempts (``attempt_records``)
    "AttemptEntry",
    "AttemptOutcome",
    "AttemptRecord",
    "AttemptResult",
    "Decision",
    "EndedAttempt",
    "LiveOutput",
    "Outcome",
    "OutputChunk",
)


class JobState(str, enum.Enum):
    """Where a job is in its life. The value is what users see."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


#: States a job can be claimed from once its ``run_at`` is due.
WAITING_STATES: frozenset[JobState] = frozenset({JobState.PENDING, JobState.FAILED})
#: States that still have work ahead (what ``worker start --drain`` waits for).
UNFINISHED_STATES: frozenset[JobState] = WAITING_STATES | {JobState.PROCESSING}
#: States a job never leaves by itself.
FINAL_STATES: frozenset[JobState] = frozenset({JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED})
#: States ``retry`` takes a job back from.
RETRYABLE_STATES: frozenset[JobState] = FINAL_STATES


class Unset(enum.Enum):
    """Marks an input field that was not given, so that a setting gives its value.

    The façade (``Queue``, ``queuectl.enqueue``) fills it in before a store sees the job.
    """

    UNSET = "unset"


UNSET = Unset.UNSET


def isoformat(moment: datetime | None) -> str | None:
    """UTC ISO-8601 with a ``Z``, the one timestamp format queuectl prints."""
    if moment is None:
        return None
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")


@record
class NewJob(Record):
    """A job on its way into the store: the input fields, in the order users see them.

    Building one checks nothing: the façade (``Queue.enqueue``, ``queuectl.enqueue``) checks
    every field of every job it is given, ``NewJob`` or mapping, by the rules in ``job_fields``.
    A field whose default is ``UNSET`` takes the setting its ``setting`` names; the façade fills
    it in, so a store never sees ``UNSET``. ``run_at`` of ``None`` means "now"; ``delay`` is
    seconds from now and ``input_only``: stores keep the ``run_at`` it gives.
    """

    id: str
    command: str
    queue: str = "default"
    priority: int = 0
    timeout: float | Unset | None = field(default=UNSET, setting="default_timeout")
    max_retries: int | Unset = field(default=UNSET, setting="max_retries")
    run_at: datetime | None = None
    delay: float | None = field(default=None, input_only=True)
    cwd: str | None = None
    env: dict[str, str] | None = field(default=None, json=True)
    unique_key: str | None = None
    after: tuple[str, ...] = field(default=(), json=True)
    no_retry_exit_codes: tuple[int, ...] = field(default=(), json=True)


def parse_isoformat(text: str | None) -> datetime | None:
    """The inverse of ``isoformat``."""
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@record
class Job(Record):
    """A job as stored, and the one table of its output fields. Timestamps are aware UTC datetimes.

    The stores' column lists, ``to_dict`` and the validator's field lists derive from
    this class body: a new field is a line here (and in ``NewJob`` if users give it),
    a migration in each store, and the code that uses it. ``detail`` fields are read
    only for one job (``show``), never for lists.
    """

    id: str
    command: str
    queue: str
    priority: int
    timeout: float | None
    max_retries: int
    cwd: str | None = None
    env: dict[str, str] | None = field(default=None, json=True)
    unique_key: str | None = None
    after: tuple[str, ...] = field(default=(), json=True)
    no_retry_exit_codes: tuple[int, ...] = field(default=(), json=True)
    run_at: datetime
    state: JobState
    attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    last_error: str | None = None
    progress: str | None = None
    schedule: str | None = None
    history: tuple[AttemptRecord, ...] = field(default=(), detail=True, json=True)
    stdout: bytes = field(default=b"", detail=True)
    stderr: bytes = field(default=b"", detail=True)

    def to_dict(self, *, with_output: bool = False) -> dict[str, Any]:
        """The job as the JSON object the CLI prints (``show`` adds the detail fields)."""
        names = JOB_FIELDS if with_output else SUMMARY_FIELDS
        return {name: json_value(getattr(self, name)) for name in names}


def json_value(value: Any) -> Any:
    """A field's value as ``to_dict`` writes it (times by ``isoformat``, enums as their values)."""
    if isinstance(value, tuple):
        return [json_value(item) for item in value]
    if isinstance(value, Record):
        return value.to_dict()  # type: ignore[attr-defined]
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


#: Every field of a stored job, in order: what ``show --json`` prints.
JOB_FIELDS: tuple[str, ...] = tuple(info.name for info in fields(Job))
#: The fields lists show: all but the ``detail`` ones (the output tails).
SUMMARY_FIELDS: tuple[str, ...] = tuple(info.name for info in fields(Job) if not info.meta.get("detail"))
#: Fields a user may give (``delay`` becomes ``run_at``).
INPUT_FIELDS: tuple[str, ...] = tuple(info.name for info in fields(NewJob))
#: Fields only queuectl sets: refused in input.
OUTPUT_ONLY_FIELDS: tuple[str, ...] = tuple(name for name in JOB_FIELDS if name not in INPUT_FIELDS)
#: The input fields a store keeps as they are, in order: all but the ``input_only`` ones.
STORED_INPUT_FIELDS: tuple[str, ...] = tuple(
    info.name for info in fields(NewJob) if not info.meta.get("input_only")
)
#: Input fields whose default is a setting: field name -> ``Settings`` key.
SETTING_DEFAULTS: dict[str, str] = {
    info.name: info.meta["setting"] for info in fields(NewJob) if "setting" in info.meta
}
#: Fields the stores keep as timestamps.
TIME_FIELDS: frozenset[str] = frozenset(info.name for info in fields(Job) if "datetime" in info.annotation)


@record
class Holder(Record):
    """The worker that held a lapsed claim: its id, and its host and pid if it is still registered."""

    worker: str | None = None
    host: str | None = None
    pid: int | None = None


@record
class Claim(Record):
    """A job a worker holds. ``token`` guards every write the worker makes for it.

    ``holder``: who held it, on claims whose lease lapsed (``Store.lapsed_claims``), for the
    history entry of the lost attempt.
    """

    job: Job
    token: str
    holder: Holder | None = None


@record
class WorkerInfo(Record):
    """One registered ``worker start`` process."""

    id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    running: int

    def to_dict(self) -> dict[str, Any]:
        return {name: json_value(getattr(self, name)) for name in self.__slots__}


@record
class QueueStatus(Record):
    """What ``queuectl status`` shows."""

    jobs: dict[JobState, int]
    workers: int
    next_run_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "jobs": {state.value: self.jobs.get(state, 0) for state in JobState},
            "workers": self.workers,
            "next_run_at": isoformat(self.next_run_at),
        }


#: The names ``attempt_records`` holds: imported on first use (``__getattr__``).
_ATTEMPT_RECORDS = frozenset(
    {
        "AttemptEntry",
        "AttemptOutcome",
        "AttemptRecord",
        "AttemptResult",
        "Decision",
        "EndedAttempt",
        "LiveOutput",
        "Outcome",
        "OutputChunk",
    }
)

if not TYPE_CHECKING:  # type checkers see the imports above

    def __getattr__(name: str) -> Any:
        if name not in _ATTEMPT_RECORDS:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from queuectl import attempt_records

        value = getattr(attempt_records, name)
        globals()[name] = value
        return value


# --- what the dashboard reads (``Store.search_jobs``, ``Store.finished_per_minute``) ---------


@record
class JobPage(Record):
    """One page of ``search_jobs``: jobs newest first (without output tails), and the cursor
    of the next page (opaque; ``None`` when nothing older is left to look at)."""

    jobs: list[Job]
    next_cursor: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"jobs": [job.to_dict() for job in self.jobs], "next_cursor": self.next_cursor}


@record
class MinuteCount(Record):
    """How many attempts ended, by outcome, in one minute (``minute``: its start, UTC)."""

    minute: datetime
    completed: int
    failed: int
    dead: int

    def to_dict(self) -> dict[str, Any]:
        return {name: json_value(getattr(self, name)) for name in self.__slots__}


def minute_window(end: datetime, minutes: int, counts: dict[tuple[datetime, str], int]) -> list[MinuteCount]:
    """The ``minutes`` minutes ending with the one starting at ``end``, oldest first, with the
    ``counts`` of each (``(minute start, state) -> n``), zeros where there are none."""
    from datetime import timedelta  # not at import: `queuectl enqueue` needs none of this

    starts = [end - timedelta(minutes=back) for back in range(minutes - 1, -1, -1)]
    return [
        MinuteCount(
            minute=start,
            completed=counts.get((start, "completed"), 0),
            failed=counts.get((start, "failed"), 0),
            dead=counts.get((start, "dead"), 0),
        )
        for start in starts
    ]
