"""The ``limits`` figures: what honouring a queue's limits costs a drain (issue 13).

The same drain as figure 1 (``bench_throughput.drain``: ``true`` jobs, ``worker start --count 4
--drain``, timed as a whole process), with every job in a queue limited to a concurrency of 4,
and in a queue limited to a rate far above the drain rate: what the checks themselves cost, as
the limits never hold a job back. The reference is the plain drain of the same jobs in the same
run (no queue has a setting, so workers use the plain claim); rounds alternate the three.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from bench_common import (
    Child,
    Context,
    Row,
    describe,
    expect_completed,
    fill,
    na_rows,
    new_jobs,
    per_second,
)
from bench_throughput import worker_argv

#: Each limited drain's limits: ``Queue.limit_queue`` keywords (none for the plain drain).
CASES: dict[str, dict[str, Any]] = {
    "plain": {},
    "concurrency 4": {"concurrency": 4},
    "rate 1000000/s": {"rate": "1000000/s"},
}
#: A limited queue should cost at most this much of the plain drain rate (the SPEC's 10%).
GOAL = 0.90


def limits_figures(ctx: Context) -> list[Row]:
    count = 500 if ctx.quick else 5_000
    ctx.note(
        f"limits: the drain of figure 1 ({count:,} x true, --count 4) with every job in a queue"
        " limited to a concurrency of 4, or to a rate of 1,000,000/s (far above the drain rate:"
        " the cost of the checks); reference: the plain drain (no queue settings) of the same"
        " run; rounds alternate the three; the best round of each counts"
    )
    stores: dict[str, Callable[[], AbstractContextManager[str]]] = {
        "sqlite": lambda: _sqlite(ctx),
        "postgres": ctx.postgres.schema,
    }
    rows: list[Row] = []
    timeout = 60 + count / 20
    for name, store in stores.items():
        figures = [(f"L drain {name}: {count:,} x true, {case}", f"ratio >= {GOAL:.2f}") for case in CASES]
        if name == "postgres" and ctx.postgres.unavailable is not None:
            rows += na_rows(figures[1:], ctx.postgres.unavailable)
            continue
        walls: dict[str, list[float]] = {case: [] for case in CASES}
        try:
            for _ in range(ctx.rounds):
                for case, limits in CASES.items():
                    with store() as target:
                        walls[case].append(_drain(ctx, target, count, limits, timeout))
        except Exception as error:  # this store's rows say why; the other store goes on
            rows += na_rows(figures[1:], describe(error))
            continue
        plain = min(walls["plain"])
        for (figure, target), case in zip(figures[1:], list(CASES)[1:], strict=True):
            wall = min(walls[case])
            rows.append(
                Row(
                    figure=figure,
                    value=per_second(count, wall),
                    reference=per_second(count, plain),
                    ratio=plain / wall,
                    target=target,
                    ok=plain / wall >= GOAL,
                )
            )
    return rows


@contextmanager
def _sqlite(ctx: Context) -> Iterator[str]:
    yield ctx.sqlite_target("limits")


def _drain(ctx: Context, target: str, count: int, limits: dict[str, Any], timeout: float) -> float:
    """Enqueue ``count`` jobs and set the limits (untimed), then time the drain; its wall time."""
    fill(target, new_jobs("true", count))
    if limits:
        asyncio.run(_limit(target, limits))
    child = Child(worker_argv(target, "--drain"), log=ctx.path("worker.log"))
    finished = child.check(child.wait(timeout))
    expect_completed(target, count)
    return finished.wall


async def _limit(target: str, limits: dict[str, Any]) -> None:
    from queuectl.queue import Queue

    async with await Queue.open(target) as queue:
        await queue.limit_queue("default", **limits)
