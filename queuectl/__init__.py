"""queuectl: run shell commands as persistent background jobs.

Embedding in an asyncio application::

    from queuectl import Queue

    async with await Queue.open("jobs.db") as queue:
        async with queue.pool(count=4):
            job = await queue.enqueue(command="echo hello")
            done = await queue.wait_for(job.id, timeout=60)

Every name is imported on first use, so that the command line starts fast and
``import queuectl`` never loads a database driver it does not need.
"""

from __future__ import annotations

#: ``typing.TYPE_CHECKING`` without importing ``typing`` (mypy reads the name the same way).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from queuectl.config import Settings
    from queuectl.copying import copy_store
    from queuectl.errors import (
        AmbiguousId,
        DuplicateJob,
        InvalidInput,
        InvalidSetting,
        JobNotFound,
        JobStateConflict,
        QueueError,
        ScheduleNotFound,
        StoreBusy,
        StoreCorrupt,
        StoreError,
        StoreUnavailable,
        UniqueKeyHeld,
        WorkerFailed,
    )
    from queuectl.follow import FollowEvent
    from queuectl.models import (
        AttemptOutcome,
        AttemptRecord,
        Job,
        JobPage,
        JobState,
        MinuteCount,
        NewJob,
        QueueStatus,
        WorkerInfo,
    )
    from queuectl.queue import Queue
    from queuectl.queues import QueueInfo, QueueSettings, Rate
    from queuectl.scheduling import NewSchedule, Schedule
    from queuectl.storage import open_store
    from queuectl.worker import Mode, WorkerPool

__all__ = (
    "AmbiguousId",
    "AttemptOutcome",
    "AttemptRecord",
    "DuplicateJob",
    "FollowEvent",
    "InvalidInput",
    "InvalidSetting",
    "Job",
    "JobNotFound",
    "JobPage",
    "JobState",
    "JobStateConflict",
    "MinuteCount",
    "Mode",
    "NewJob",
    "NewSchedule",
    "Queue",
    "QueueError",
    "QueueInfo",
    "QueueSettings",
    "QueueStatus",
    "Rate",
    "Schedule",
    "ScheduleNotFound",
    "Settings",
    "StoreBusy",
    "StoreCorrupt",
    "StoreError",
    "StoreUnavailable",
    "UniqueKeyHeld",
    "WorkerFailed",
    "WorkerInfo",
    "WorkerPool",
    "copy_store",
    "open_store",
)

#: Every name is imported on first use: importing the package runs nothing, so that the command
#: line's entry point (``queuectl.__main__.run``) is in charge before anything slow is imported.
_LAZY = {
    **dict.fromkeys(
        (
            "AmbiguousId",
            "DuplicateJob",
            "InvalidInput",
            "InvalidSetting",
            "JobNotFound",
            "JobStateConflict",
            "QueueError",
            "ScheduleNotFound",
            "StoreBusy",
            "StoreCorrupt",
            "StoreError",
            "StoreUnavailable",
            "UniqueKeyHeld",
            "WorkerFailed",
        ),
        "queuectl.errors",
    ),
    **dict.fromkeys(
        (
            "AttemptOutcome",
            "AttemptRecord",
            "Job",
            "JobPage",
            "JobState",
            "MinuteCount",
            "NewJob",
            "QueueStatus",
            "WorkerInfo",
        ),
        "queuectl.models",
    ),
    "FollowEvent": "queuectl.follow",
    "Settings": "queuectl.config",
    "Queue": "queuectl.queue",
    **dict.fromkeys(("QueueInfo", "QueueSettings", "Rate"), "queuectl.queues"),
    **dict.fromkeys(("NewSchedule", "Schedule"), "queuectl.scheduling"),
    "WorkerPool": "queuectl.worker",
    "Mode": "queuectl.worker",
    "open_store": "queuectl.storage",
    "copy_store": "queuectl.copying",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'queuectl' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
