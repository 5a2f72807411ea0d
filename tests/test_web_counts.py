"""The dashboard's jobs per queue: fresh while counting is quick, never a long wait once it is not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from queuectl.models import JobState
from queuectl.queue import Queue
from queuectl.queues import QueueInfo
from queuectl.web import counts
from queuectl.web.counts import QueueCounts


@pytest.fixture
async def queue(store_target: str) -> AsyncIterator[Queue]:
    async with await Queue.open(store_target) as opened:
        yield opened


def pending(infos: list[QueueInfo]) -> dict[str, int]:
    return {info.name: info.jobs.get(JobState.PENDING, 0) for info in infos}


async def test_quick_counts_are_always_fresh(queue: Queue) -> None:
    queue_counts = QueueCounts(queue)
    await queue.enqueue(command="true", queue="a")
    assert pending(await queue_counts.infos()) == {"a": 1}
    await queue.enqueue(command="true", queue="b")
    assert pending(await queue_counts.infos()) == {"a": 1, "b": 1}


async def test_slow_counts_are_served_from_the_latest_and_renewed_behind(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(counts, "SLOW", -1.0)  # every count is "slow"
    queue_counts = QueueCounts(queue)
    await queue.enqueue(command="true", queue="a")
    assert pending(await queue_counts.infos()) == {"a": 1}  # the first count is made inline
    await queue.enqueue(command="true", queue="b")
    await queue.pause_queue("a")
    served = await queue_counts.infos()
    assert pending(served) == {"a": 1}  # the latest count: "b" is not counted yet...
    assert [info.settings.paused for info in served] == [True]  # ...but the pause shows at once
    deadline = asyncio.get_running_loop().time() + 10
    while pending(await queue_counts.infos()) != {"a": 1, "b": 1}:  # counted in the background
        assert asyncio.get_running_loop().time() < deadline, "the background count never came"
        await asyncio.sleep(0.01)
