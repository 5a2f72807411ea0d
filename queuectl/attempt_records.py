"""The records of attempts: how one ended, what the policy decided, what is written and kept.

``AttemptResult`` is how an attempt ended (the runner's ``RunResult`` is one; ``EndedAttempt``
gives one as plain values), ``Decision`` what the retry policy made of it, and ``Outcome`` the
two together with the attempt's ``history`` entry (``AttemptRecord``, worded by
``AttemptOutcome``): what a store writes when an attempt ends. ``OutputChunk`` and
``LiveOutput`` are a running attempt's output as followers read it. ``models`` imports them on
first use, so that ``queuectl enqueue`` does without them: import them from there, as the rest of
queuectl does.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, Protocol

from queuectl.models import Job, JobState, json_value, parse_isoformat
from queuectl.records import Record, record, set_field

__all__ = (
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
        return {name: json_value(getattr(self, name)) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttemptRecord:
        return cls(
            worker=data.get("worker"),
            host=data.get("host"),
            pid=data.get("pid"),
            started_at=_moment(data.get("started_at")),
            finished_at=_moment(data.get("finished_at")),
            exit_code=data.get("exit_code"),
            outcome=AttemptOutcome(data["outcome"]),
            error=data.get("error"),
        )


def _moment(value: str | float | None) -> datetime | None:
    """A stored entry's time: ISO text, or epoch seconds (``storage/sqlite/history``)."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return parse_isoformat(value)


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
    its ``history`` entry (the ``AttemptEntry`` fields, or ``attempt`` as a record).

    The policy decides; the store only writes. The worker pairs them with ``Outcome.of``,
    without copying the result; the keyword form takes plain values (``state=``, ``exit_code=``,
    ``error=``, ``started_at=``, ``finished_at=``, ``stdout=``, ``stderr=``, ``retry_in=``,
    ``worker=``, ``host=``, ``pid=``, ``outcome=``). Either way the store reads the same attributes.

    A ``cancelled`` outcome is written only while the job is ``cancelled`` and still held by the
    claim: it appends ``attempt`` to the history and frees the job, which stays cancelled.
    ``streamed`` says the attempt wrote live output chunks, which the store then drops (it
    costs nothing to a job that ended before its first flush).
    """

    __slots__ = ("decision", "given_outcome", "host", "result", "streamed", "worker")

    decision: Decision
    result: AttemptResult
    worker: str | None
    host: str | None
    given_outcome: AttemptOutcome | None
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

    # The history entry's fields, read where they are: an ``Outcome`` is an ``AttemptEntry``, so
    # a store writes the entry without an ``AttemptRecord`` made for every attempt.

    @property
    def pid(self) -> int | None:
        return self.result.pid

    @property
    def outcome(self) -> AttemptOutcome:
        """The history's word for the attempt: as given, else ``cancelled`` when the decision
        is, else what ``result.error`` says (``AttemptOutcome.of``)."""
        if self.given_outcome is not None:
            return self.given_outcome
        if self.decision.state is JobState.CANCELLED:
            return AttemptOutcome.CANCELLED
        return AttemptOutcome.of(self.result.error)

    @property
    def attempt(self) -> AttemptRecord:
        """The history entry this outcome appends, as a record."""
        return AttemptRecord(
            worker=self.worker,
            host=self.host,
            pid=self.pid,
            started_at=self.started_at,
            finished_at=self.finished_at,
            exit_code=self.exit_code,
            outcome=self.outcome,
            error=self.error,
        )


class AttemptEntry(Protocol):
    """What a store reads to write a history entry: an ``AttemptRecord``, or an ``Outcome``."""

    @property
    def worker(self) -> str | None: ...
    @property
    def host(self) -> str | None: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def finished_at(self) -> datetime | None: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def outcome(self) -> AttemptOutcome: ...
    @property
    def error(self) -> str | None: ...


def _fill_outcome(
    made: Outcome,
    decision: Decision,
    result: AttemptResult,
    worker: str | None,
    host: str | None,
    outcome: AttemptOutcome | None,
    streamed: bool,
) -> None:
    set_field(made, "decision", decision)
    set_field(made, "result", result)
    set_field(made, "worker", worker)
    set_field(made, "host", host)
    set_field(made, "given_outcome", outcome)
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
