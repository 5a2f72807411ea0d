"""Every error queuectl raises on purpose.

One root, so callers can catch everything of ours with one clause::

    QueueError                      exit 1
    ├── InvalidInput (ValueError)   exit 2   bad JSON, field, duration, timestamp
    │   └── InvalidSetting          exit 2   unknown config key or bad value
    ├── JobNotFound (LookupError)   exit 1
    ├── AmbiguousId (LookupError)   exit 1   a short id that more than one job's id starts with
    ├── DuplicateJob                exit 1
    ├── JobStateConflict            exit 1   e.g. `dlq retry` of a job that is not dead
    │   └── UniqueKeyHeld           exit 1   a retry of a job whose unique key another job took
    ├── WorkerFailed                exit 1   a worker's upkeep failed: it put its jobs back, stopped
    └── StoreError                  exit 1   the store cannot be opened, read or written
        ├── StoreUnavailable                 cannot open / connect / write
        ├── StoreCorrupt                     not a queuectl store, or damaged
        └── StoreBusy                        locked by another program for too long

The class docstring is the default message; the CLI prints ``str(error)`` and
exits with ``error.exit_code``. Driver errors are kept as ``__cause__``.
"""

from __future__ import annotations


class QueueError(Exception):
    """queuectl failed."""

    exit_code: int = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class InvalidInput(QueueError, ValueError):
    """Invalid input."""

    exit_code = 2


class InvalidSetting(InvalidInput):
    """Invalid setting."""


class JobNotFound(QueueError, LookupError):
    """No such job."""


class AmbiguousId(QueueError, LookupError):
    """More than one job's id starts with this prefix."""

    def __init__(self, prefix: str, matches: list[str]) -> None:
        self.prefix = prefix
        self.matches = matches
        shown = ", ".join(matches)
        super().__init__(f"job id {prefix!r} is ambiguous: it starts {shown}")


class DuplicateJob(QueueError):
    """A job with this id already exists."""


class JobStateConflict(QueueError):
    """The job is not in a state that allows this."""


class UniqueKeyHeld(JobStateConflict):
    """Another pending, processing or failed job holds this job's unique key: retry it once that one ended."""


class ScheduleNotFound(QueueError, LookupError):
    """No schedule of that name."""


class WorkerFailed(QueueError):
    """The worker stopped: its upkeep failed."""


class StoreError(QueueError):
    """The job store failed."""


class StoreUnavailable(StoreError):
    """The job store cannot be opened."""


class StoreCorrupt(StoreError):
    """The job store is not a queuectl database or is damaged."""


class StoreBusy(StoreError):
    """The job store stayed locked by another process for too long."""
