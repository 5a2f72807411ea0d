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


class AttemptOutcome(str, enum.Enum):
    """How one attempt ended, as ``history`` shows it."""

    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed out"
    NOT_STARTED = "could not start"
    LOST = "lost"  # its worker was lost; another took the job back after the lease
    STOPPED = "stopped"  # its worker was asked to stop and put the job back: not counted in attempts
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, error: str | None) -> AttemptOutcome:
        """The outcome of an attempt that ended by itself with ``error`` (``RunResult.error``)."""
        if error is None:
            return cls.COMPLETED
        if error.startswith("timed out"):
            return cls.TIMED_OUT
        if error.startswith("could not start"):
            return cls.NOT_STARTED
        return cls.FAILED


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


@record
class AttemptRecord(Record):
    """One entry of a job's ``history``: one attempt, however it ended.

    Stores keep it as a JSON object of these keys (``to_dict``; ``from_dict`` reads it back).
    """

    worker: str | None
    host: str | None
    pid: int | None
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    outcome: AttemptOutcome
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {name: _json_value(getattr(self, name)) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttemptRecord:
        return cls(
            worker=data.get("worker"),
            host=data.get("host"),
            pid=data.get("pid"),
            started_at=parse_isoformat(data.get("started_at")),
            finished_at=parse_isoformat(data.get("finished_at")),
            exit_code=data.get("exit_code"),
            outcome=AttemptOutcome(data["outcome"]),
            error=data.get("error"),
        )


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
        return {name: _json_value(getattr(self, name)) for name in names}


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json_value(item) for item in value]
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
    def stdout(self) -> bytes: ...  # what is kept: head and tail (``queuectl.output``)
    @property
    def stderr(self) -> bytes: ...
    @property
    def pid(self) -> int | None: ...


@record
class EndedAttempt(Record):
    """An ``AttemptResult`` given as plain values (a lost worker's attempt, tests)."""

    exit_code: int | None
    error: str | None
    started_at: datetime | None
    finished_at: datetime
    stdout: bytes = b""
    stderr: bytes = b""
    pid: int | None = None


@record
class Decision(Record):
    """What the retry policy decided after an attempt (``queuectl.retry.decide``).

    ``state`` is ``completed``, ``failed`` (retried ``retry_in`` seconds from now) or ``dead``;
    ``cancelled`` records the attempt of a job cancelled while it ran (its state stays).
    """

    state: JobState
    retry_in: float = 0.0


class Outcome(Record):
    """What to record when an attempt ends: the policy's decision, the attempt's result, and
    its ``history`` entry (``attempt``).

    The policy decides; the store only writes. The worker pairs them with ``Outcome.of``,
    without copying the result; the keyword form takes plain values (``state=``, ``exit_code=``,
    ``error=``, ``started_at=``, ``finished_at=``, ``stdout=``, ``stderr=``, ``retry_in=``,
    ``worker=``, ``host=``, ``pid=``, ``outcome=``). Either way the store reads the same attributes.

    A ``cancelled`` outcome is written only while the job is ``cancelled`` and still held by the
    claim: it appends ``attempt`` to the history and frees the job, which stays cancelled.
    ``streamed`` says the attempt wrote live output chunks, which the store then drops (it
    costs nothing to a job that ended before its first flush).
    """

    __slots__ = ("attempt", "decision", "result", "streamed")

    decision: Decision
    result: AttemptResult
    attempt: AttemptRecord
    streamed: bool

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
        worker: str | None = None,
        host: str | None = None,
        pid: int | None = None,
        outcome: AttemptOutcome | None = None,
        streamed: bool = False,
    ) -> None:
        result = EndedAttempt(
            exit_code=exit_code,
            error=error,
            started_at=started_at,
            finished_at=finished_at,
            stdout=stdout,
            stderr=stderr,
            pid=pid,
        )
        decision = Decision(state=state, retry_in=retry_in)
        _fill_outcome(self, decision, result, worker, host, outcome, streamed)

    @classmethod
    def of(
        cls,
        decision: Decision,
        result: AttemptResult,
        *,
        worker: str | None = None,
        host: str | None = None,
        outcome: AttemptOutcome | None = None,
        streamed: bool = False,
    ) -> Outcome:
        """The outcome of an attempt that ended with ``result``, run by ``worker`` on ``host``.

        ``outcome`` is the history's word for it; by default it follows from ``result.error``
        (``AttemptOutcome.of``), or is ``cancelled`` when ``decision`` is.
        """
        made = object.__new__(cls)
        _fill_outcome(made, decision, result, worker, host, outcome, streamed)
        return made

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


def _fill_outcome(
    made: Outcome,
    decision: Decision,
    result: AttemptResult,
    worker: str | None,
    host: str | None,
    outcome: AttemptOutcome | None,
    streamed: bool,
) -> None:
    if outcome is None:
        cancelled = decision.state is JobState.CANCELLED
        outcome = AttemptOutcome.CANCELLED if cancelled else AttemptOutcome.of(result.error)
    attempt = AttemptRecord(
        worker=worker,
        host=host,
        pid=result.pid,
        started_at=result.started_at,
        finished_at=result.finished_at,
        exit_code=result.exit_code,
        outcome=outcome,
        error=result.error,
    )
    set_field(made, "decision", decision)
    set_field(made, "result", result)
    set_field(made, "attempt", attempt)
    set_field(made, "streamed", streamed)


@record
class OutputChunk(Record):
    """A piece of a running attempt's output, as followers read it (``Store.live_output``).

    ``stream`` is 1 (stdout) or 2 (stderr); ``offset`` is where ``data`` starts in that stream
    of the attempt, so a follower can tell what it missed. ``seq`` orders chunks store-wide.
    """

    seq: int
    stream: int
    offset: int
    data: bytes


@record
class LiveOutput(Record):
    """What a follower reads of a job in one go (``Store.live_output``).

    ``job`` without its detail fields; ``entries`` is how many history entries the job has had
    in all (the running attempt's entry will be number ``entries + 1``); ``chunks`` are the
    running attempt's, after the ``seq`` asked for, in order (empty when none runs).
    """

    job: Job
    entries: int
    chunks: tuple[OutputChunk, ...]


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
