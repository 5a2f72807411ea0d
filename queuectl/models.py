"""The records queuectl passes around: states, jobs, new jobs, attempt outcomes, workers."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, Protocol

from queuectl.records import Record, field, fields, record, set_field


class JobState(str, enum.Enum):
    """Where a job is in its life. The value is what users see."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD = "dead"

    def __str__(self) -> str:
        return self.value


#: States a job can be claimed from once its ``run_at`` is due.
WAITING_STATES: frozenset[JobState] = frozenset({JobState.PENDING, JobState.FAILED})
#: States that still have work ahead (what ``worker start --drain`` waits for).
UNFINISHED_STATES: frozenset[JobState] = WAITING_STATES | {JobState.PROCESSING}
#: States a job never leaves by itself.
FINAL_STATES: frozenset[JobState] = frozenset({JobState.COMPLETED, JobState.DEAD})


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
    run_at: datetime
    state: JobState
    attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    last_error: str | None = None
    stdout: bytes = field(default=b"", detail=True)
    stderr: bytes = field(default=b"", detail=True)

    def to_dict(self, *, with_output: bool = False) -> dict[str, Any]:
        """The job as the JSON object the CLI prints (``show`` adds the detail fields)."""
        names = JOB_FIELDS if with_output else SUMMARY_FIELDS
        return {name: _json_value(getattr(self, name)) for name in names}


def _json_value(value: Any) -> Any:
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
class Claim(Record):
    """A job a worker holds. ``token`` guards every write the worker makes for it."""

    job: Job
    token: str


class AttemptResult(Protocol):
    """How an attempt ended, as an ``Outcome`` records it (the runner's ``RunResult`` is one)."""

    @property
    def exit_code(self) -> int | None: ...
    @property
    def error(self) -> str | None: ...  # why it failed (the job's ``last_error``); None: it succeeded
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def finished_at(self) -> datetime: ...
    @property
    def stdout(self) -> bytes: ...
    @property
    def stderr(self) -> bytes: ...


@record
class EndedAttempt(Record):
    """An ``AttemptResult`` given as plain values (a lost worker's attempt, tests)."""

    exit_code: int | None
    error: str | None
    started_at: datetime | None
    finished_at: datetime
    stdout: bytes = b""
    stderr: bytes = b""


@record
class Decision(Record):
    """What the retry policy decided after an attempt (``queuectl.retry.decide``).

    ``state`` is ``completed``, ``failed`` (retried ``retry_in`` seconds from now) or ``dead``.
    """

    state: JobState
    retry_in: float = 0.0


class Outcome(Record):
    """What to record when an attempt ends: the retry policy's decision and the attempt's result.

    The policy decides; the store only writes. The worker pairs the two with ``Outcome.of``,
    without copying the result; the keyword form takes plain values (``state=``, ``exit_code=``,
    ``error=``, ``started_at=``, ``finished_at=``, ``stdout=``, ``stderr=``, ``retry_in=``).
    Either way the store reads the same attributes.
    """

    __slots__ = ("decision", "result")

    decision: Decision
    result: AttemptResult

    def __init__(
        self,
        *,
        state: JobState,
        exit_code: int | None,
        error: str | None,
        started_at: datetime | None,
        finished_at: datetime,
        stdout: bytes = b"",
        stderr: bytes = b"",
        retry_in: float = 0.0,
    ) -> None:
        set_field(self, "decision", Decision(state=state, retry_in=retry_in))
        set_field(
            self,
            "result",
            EndedAttempt(
                exit_code=exit_code,
                error=error,
                started_at=started_at,
                finished_at=finished_at,
                stdout=stdout,
                stderr=stderr,
            ),
        )

    @classmethod
    def of(cls, decision: Decision, result: AttemptResult) -> Outcome:
        """The outcome of an attempt that ended with ``result``: both kept as they are."""
        outcome = object.__new__(cls)
        set_field(outcome, "decision", decision)
        set_field(outcome, "result", result)
        return outcome

    @property
    def state(self) -> JobState:
        return self.decision.state

    @property
    def retry_in(self) -> float:
        return self.decision.retry_in

    @property
    def exit_code(self) -> int | None:
        return self.result.exit_code

    @property
    def error(self) -> str | None:
        return self.result.error

    @property
    def started_at(self) -> datetime | None:
        return self.result.started_at

    @property
    def finished_at(self) -> datetime:
        return self.result.finished_at

    @property
    def stdout(self) -> bytes:
        return self.result.stdout

    @property
    def stderr(self) -> bytes:
        return self.result.stderr


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
        return {name: _json_value(getattr(self, name)) for name in self.__slots__}


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
