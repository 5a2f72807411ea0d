"""The records queuectl passes around: states, jobs, new jobs, attempt outcomes, workers."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from queuectl.records import Record, set_field


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
    """Marks an input field that was not given, so the store's setting applies."""

    UNSET = "unset"


UNSET = Unset.UNSET


def isoformat(moment: datetime | None) -> str | None:
    """UTC ISO-8601 with a ``Z``, the one timestamp format queuectl prints."""
    if moment is None:
        return None
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")


class NewJob(Record):
    """A validated job on its way into the store.

    ``timeout`` and ``max_retries`` may be ``UNSET``: the store's settings
    (``default_timeout``, ``max_retries``) fill them in when the job is added.
    ``run_at`` of ``None`` means "now"; ``delay`` is seconds from now.
    """

    __slots__ = (  # noqa: RUF023 (field order)
        "id",
        "command",
        "queue",
        "priority",
        "timeout",
        "max_retries",
        "run_at",
        "delay",
    )

    id: str
    command: str
    queue: str
    priority: int
    timeout: float | Unset | None
    max_retries: int | Unset
    run_at: datetime | None
    delay: float | None

    def __init__(
        self,
        *,
        id: str,
        command: str,
        queue: str = "default",
        priority: int = 0,
        timeout: float | Unset | None = UNSET,
        max_retries: int | Unset = UNSET,
        run_at: datetime | None = None,
        delay: float | None = None,
    ) -> None:
        set_field(self, "id", id)
        set_field(self, "command", command)
        set_field(self, "queue", queue)
        set_field(self, "priority", priority)
        set_field(self, "timeout", timeout)
        set_field(self, "max_retries", max_retries)
        set_field(self, "run_at", run_at)
        set_field(self, "delay", delay)


class Job(Record):
    """A job as stored. Timestamps are aware UTC datetimes."""

    __slots__ = (  # noqa: RUF023 (field order)
        "id",
        "command",
        "queue",
        "priority",
        "timeout",
        "max_retries",
        "run_at",
        "state",
        "attempts",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "exit_code",
        "last_error",
        "stdout",
        "stderr",
    )

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
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    last_error: str | None
    stdout: bytes
    stderr: bytes

    def __init__(
        self,
        *,
        id: str,
        command: str,
        queue: str,
        priority: int,
        timeout: float | None,
        max_retries: int,
        run_at: datetime,
        state: JobState,
        attempts: int,
        created_at: datetime,
        updated_at: datetime,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        exit_code: int | None = None,
        last_error: str | None = None,
        stdout: bytes = b"",
        stderr: bytes = b"",
    ) -> None:
        set_field(self, "id", id)
        set_field(self, "command", command)
        set_field(self, "queue", queue)
        set_field(self, "priority", priority)
        set_field(self, "timeout", timeout)
        set_field(self, "max_retries", max_retries)
        set_field(self, "run_at", run_at)
        set_field(self, "state", state)
        set_field(self, "attempts", attempts)
        set_field(self, "created_at", created_at)
        set_field(self, "updated_at", updated_at)
        set_field(self, "started_at", started_at)
        set_field(self, "finished_at", finished_at)
        set_field(self, "exit_code", exit_code)
        set_field(self, "last_error", last_error)
        set_field(self, "stdout", stdout)
        set_field(self, "stderr", stderr)

    def to_dict(self, *, with_output: bool = False) -> dict[str, Any]:
        """The job as the JSON object the CLI prints (``show`` adds the output)."""
        data: dict[str, Any] = {
            "id": self.id,
            "command": self.command,
            "queue": self.queue,
            "priority": self.priority,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "run_at": isoformat(self.run_at),
            "state": self.state.value,
            "attempts": self.attempts,
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
            "started_at": isoformat(self.started_at),
            "finished_at": isoformat(self.finished_at),
            "exit_code": self.exit_code,
            "last_error": self.last_error,
        }
        if with_output:
            data["stdout"] = self.stdout.decode("utf-8", errors="replace")
            data["stderr"] = self.stderr.decode("utf-8", errors="replace")
        return data


class Claim(Record):
    """A job a worker holds. ``token`` guards every write the worker makes for it."""

    __slots__ = ("job", "token")

    job: Job
    token: str

    def __init__(
        self,
        *,
        job: Job,
        token: str,
    ) -> None:
        set_field(self, "job", job)
        set_field(self, "token", token)


class Outcome(Record):
    """What to record when an attempt ends.

    ``state`` is ``completed``, ``failed`` (retried ``retry_in`` seconds from
    now) or ``dead``. The retry policy decides it; the store only writes it.
    """

    __slots__ = (  # noqa: RUF023 (field order)
        "state",
        "exit_code",
        "error",
        "started_at",
        "finished_at",
        "stdout",
        "stderr",
        "retry_in",
    )

    state: JobState
    exit_code: int | None
    error: str | None
    started_at: datetime | None
    finished_at: datetime
    stdout: bytes
    stderr: bytes
    retry_in: float

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
        set_field(self, "state", state)
        set_field(self, "exit_code", exit_code)
        set_field(self, "error", error)
        set_field(self, "started_at", started_at)
        set_field(self, "finished_at", finished_at)
        set_field(self, "stdout", stdout)
        set_field(self, "stderr", stderr)
        set_field(self, "retry_in", retry_in)


class WorkerInfo(Record):
    """One registered ``worker start`` process."""

    __slots__ = ("id", "host", "pid", "started_at", "heartbeat_at", "running")  # noqa: RUF023 (field order)

    id: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    running: int

    def __init__(
        self,
        *,
        id: str,
        host: str,
        pid: int,
        started_at: datetime,
        heartbeat_at: datetime,
        running: int,
    ) -> None:
        set_field(self, "id", id)
        set_field(self, "host", host)
        set_field(self, "pid", pid)
        set_field(self, "started_at", started_at)
        set_field(self, "heartbeat_at", heartbeat_at)
        set_field(self, "running", running)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "started_at": isoformat(self.started_at),
            "heartbeat_at": isoformat(self.heartbeat_at),
            "running": self.running,
        }


class QueueStatus(Record):
    """What ``queuectl status`` shows."""

    __slots__ = ("jobs", "workers", "next_run_at")  # noqa: RUF023 (field order)

    jobs: dict[JobState, int]
    workers: int
    next_run_at: datetime | None

    def __init__(
        self,
        *,
        jobs: dict[JobState, int],
        workers: int,
        next_run_at: datetime | None,
    ) -> None:
        set_field(self, "jobs", jobs)
        set_field(self, "workers", workers)
        set_field(self, "next_run_at", next_run_at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "jobs": {state.value: self.jobs.get(state, 0) for state in JobState},
            "workers": self.workers,
            "next_run_at": isoformat(self.next_run_at),
        }
