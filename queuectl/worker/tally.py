"""The pool's count of ended attempts, written to the store per minute for the dashboard's chart.

Nothing is written per job: the pool already counts its results (``PoolStats``); what was added
since the last write is written once a poll interval, under the minute it was written in (so a
count is at most a poll interval late), and once more as the pool stops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from queuectl.errors import StoreError
from queuectl.storage.base import Store
from queuectl.worker.attempts import PoolStats

__all__ = ("Tally",)

logger = logging.getLogger(__name__)

#: The states the chart counts, and the ``PoolStats`` field that counts each.
_COUNTED = ("completed", "failed", "dead")


class Tally:
    """Writes ``stats``' new results per minute (``Store.add_finished``)."""

    def __init__(self, store: Store, stats: PoolStats, clock: Callable[[], float]) -> None:
        self._store = store
        self._stats = stats
        self._clock = clock
        self._written = dict.fromkeys(_COUNTED, 0)

    async def write(self) -> None:
        """Write what was counted since the last write, if anything; a failed write is kept for
        the next (the store may be away for a while)."""
        now = {state: getattr(self._stats, state) for state in _COUNTED}
        new = {state: now[state] - self._written[state] for state in _COUNTED}
        if not any(new.values()):
            return
        minute = datetime.fromtimestamp(self._clock(), UTC)
        try:
            await self._store.add_finished({(minute, state): n for state, n in new.items() if n})
        except StoreError as exc:
            logger.debug("could not write the count of ended attempts: %s", exc)
            return
        self._written = now
