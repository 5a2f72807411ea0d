"""``/metrics``: the store's state in the Prometheus text format.

``prometheus_client`` collectors are synchronous while the store is read with ``await``, so each
scrape first reads a ``Snapshot`` of the store, then writes it out through a collector on a
registry of its own (never the process-wide default registry, which an embedding application
may use for its own metrics).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from queuectl.models import JobState
from queuectl.records import Record, record

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from queuectl.queue import Queue
    from queuectl.queues import QueueInfo

__all__ = ("Snapshot", "SnapshotCollector", "metrics", "read_snapshot", "render")


@record
class Snapshot(Record):
    """What one scrape reports, read from the store in one go."""

    queues: tuple[QueueInfo, ...]
    workers: int
    oldest_due: dict[str, float]


async def read_snapshot(queue: Queue, infos: Awaitable[list[QueueInfo]]) -> Snapshot:
    """The scrape's figures; ``infos``: the queues (``data.queue_infos``)."""
    return Snapshot(
        queues=tuple(await infos),
        workers=len(await queue.workers()),
        oldest_due=dict(await queue.oldest_due()),
    )


class SnapshotCollector(Collector):
    """Writes out one ``Snapshot``."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []  # registering it reads nothing; what it yields is known only when collected

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        jobs = GaugeMetricFamily("queuectl_jobs", "Jobs by queue and state.", labels=["queue", "state"])
        for info in snapshot.queues:
            for state in JobState:
                jobs.add_metric([info.name, state.value], info.jobs.get(state, 0))
        yield jobs
        yield GaugeMetricFamily("queuectl_workers", "Live worker processes.", value=snapshot.workers)
        oldest = GaugeMetricFamily(
            "queuectl_queue_oldest_due_seconds",
            "Seconds since the run_at of the queue's oldest due job no worker has claimed (0: none).",
            labels=["queue"],
        )
        names = [info.name for info in snapshot.queues]
        names += sorted(name for name in snapshot.oldest_due if name not in set(names))
        for name in names:
            oldest.add_metric([name], max(snapshot.oldest_due.get(name, 0.0), 0.0))
        yield oldest
        paused = GaugeMetricFamily(
            "queuectl_queue_paused", "1 if the queue is paused, else 0.", labels=["queue"]
        )
        for info in snapshot.queues:
            paused.add_metric([info.name], 1.0 if info.settings.paused else 0.0)
        yield paused


def render(snapshot: Snapshot) -> bytes:
    """The Prometheus text of ``snapshot``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)


async def metrics(request: Request) -> Response:
    from starlette.responses import Response

    from queuectl.web.data import queue_infos, queue_of

    body = render(await read_snapshot(queue_of(request), queue_infos(request)))
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"cache-control": "no-store"})
