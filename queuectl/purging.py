"""Deleting old final jobs in short batches (``purge``, and workers' ``retention``).

Each batch is its own transaction, so that deleting a million jobs never holds the store's
write lock for more than a moment: workers claim and record between the batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from queuectl.models import FINAL_STATES, JobState
from queuectl.storage.base import Store

__all__ = ("BATCH", "RETAINED_STATES", "purge")

#: Jobs deleted per transaction.
BATCH = 500
#: What ``purge`` deletes when no state is named, and what ``retention`` deletes.
RETAINED_STATES: tuple[JobState, ...] = (JobState.COMPLETED, JobState.CANCELLED)


async def purge(
    store: Store,
    *,
    states: Sequence[JobState] = RETAINED_STATES,
    queues: Sequence[str] = (),
    older_than: float | None = None,
    now: datetime | None = None,
    batch: int = BATCH,
) -> int:
    """Delete final jobs in ``states`` (and ``queues``) finished more than ``older_than`` seconds
    ago (None: any age); return how many. ``ValueError`` for a state that is not final."""
    for state in states:
        if state not in FINAL_STATES:
            raise ValueError(f"only final jobs can be purged, not {state.value} ones")
    before = None
    if older_than is not None:
        before = (now or datetime.now(UTC)) - timedelta(seconds=older_than)
    deleted = 0
    while True:
        count = await store.purge_batch(
            state=list(states), queue=list(queues), finished_before=before, limit=batch
        )
        deleted += count
        if count < batch:
            return deleted
