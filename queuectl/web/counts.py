"""Jobs per queue and state for the pages, without making a request wait for the count.

Counting them is a pass over every job (``Queue.list_queues``): nothing at a few thousand jobs,
about half a second at a million on SQLite. While a count takes less than ``SLOW`` seconds,
each request counts afresh. Once one took longer, a request gets the latest count, with the
queues' settings read fresh (a pause shows at once), and a new count starts in the background,
one at a time: on a big store the counts per queue lag by about the time a count takes.
"""

from __future__ import annotations

import asyncio
import logging
import time

from queuectl.errors import QueueError
from queuectl.models import JobState
from queuectl.queue import Queue
from queuectl.queues import QueueInfo, QueueSettings

__all__ = ("SLOW", "QueueCounts")

log = logging.getLogger(__name__)

#: Seconds a count may take and still be made while a request waits.
SLOW = 0.2


class QueueCounts:
    """``list_queues`` for the dashboard's requests (see the module's docstring)."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue
        self._latest: dict[str, dict[JobState, int]] | None = None
        self._slow = False
        self._counting: asyncio.Task[None] | None = None

    async def infos(self) -> list[QueueInfo]:
        """Every queue with jobs or settings, by name."""
        if self._latest is None or not self._slow:
            await self._count()
        elif self._counting is None or self._counting.done():
            self._counting = asyncio.get_running_loop().create_task(self._count_in_background())
        latest = self._latest or {}
        settings = {item.name: item for item in await self._queue.store.queue_settings()}
        return [
            QueueInfo(
                name=name, jobs=latest.get(name, {}), settings=settings.get(name, QueueSettings(name=name))
            )
            for name in sorted(set(latest) | set(settings))
        ]

    async def _count(self) -> None:
        began = time.monotonic()
        counted = {info.name: info.jobs for info in await self._queue.list_queues()}
        self._slow = time.monotonic() - began > SLOW
        self._latest = counted

    async def _count_in_background(self) -> None:
        try:
            await self._count()
        except QueueError as error:  # the next request tries again; meanwhile, the latest count
            log.warning("could not count the jobs per queue: %s", error)
