"""Figure 3: pickup latency of an idle worker, and its CPU use while idle.

An idle ``worker start --count 4`` runs; the benchmark process enqueues probe jobs whose command
writes ``date +%s%N`` (the wall clock in ns) to a file. Latency is that stamp minus
``time.time_ns()`` taken right after the enqueue returned, i.e. after the commit. SQLite probes
are enqueued with ``queuectl.enqueue.enqueue_many`` (the insert of ``queuectl enqueue``, no
event loop); PostgreSQL probes with ``await queue.enqueue(...)`` of the façade.
"""

from __future__ import annotations

import asyncio
import random
import shlex
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench_common import BenchError, Child, Context, Row, describe, median, ms, na_rows
from bench_throughput import worker_argv

from queuectl.models import NewJob
from queuectl.queue import Queue

PROBE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Probes:
    latencies: list[float]  # seconds, the spaced probes
    after_idle: float  # seconds, the probe after the idle period
    idle_cpu: float  # fraction of one core over the idle period


def latency_figures(ctx: Context) -> list[Row]:
    probes = 10 if ctx.quick else 50
    idle = 5.0 if ctx.quick else 60.0
    rng = random.Random(ctx.seed)
    ctx.note(
        "pickup: latency = the job's `date +%s%N` minus time.time_ns() right after the enqueue returned"
        " in the benchmark process (sqlite: queuectl.enqueue.enqueue_many, the CLI's insert; postgres:"
        " Queue.enqueue); probes spaced 0.05-1.5 s at random, then one after the idle period;"
        " reference: the same command spawned directly by subprocess (its own start-up cost)"
    )
    floor = _bare_spawn(ctx, 20)
    rows: list[Row] = []
    stores = [("sqlite", 10.0)]
    if ctx.postgres.unavailable is None:
        stores.append(("postgres", 15.0))
    for name, goal in stores:
        rows += _rows_for(ctx, name, goal, probes, idle, floor, rng)
    if ctx.postgres.unavailable is not None:
        rows += na_rows(_figures("postgres", 15.0, probes, idle), ctx.postgres.unavailable)
    return rows


def _figures(name: str, goal: float, probes: int, idle: float) -> list[tuple[str, str]]:
    return [
        (f"3 pickup {name}: median of {probes}", f"<= {goal:.0f} ms"),
        (f"3 pickup {name}: max of {probes + 1}", "<= 50 ms" if name == "sqlite" else "-"),
        (f"3 pickup {name}: after {idle:.0f} s idle", "-"),
        (f"3 idle worker CPU {name}: {idle:.0f} s", "<= 2 %" if name == "sqlite" else "-"),
    ]


def _rows_for(
    ctx: Context, name: str, goal: float, probes: int, idle: float, floor: list[float], rng: random.Random
) -> list[Row]:
    figures = _figures(name, goal, probes, idle)
    try:
        if name == "sqlite":
            result = _measure(ctx, ctx.sqlite_target("pickup"), probes, idle, rng)
        else:
            with ctx.postgres.schema() as target:
                result = _measure(ctx, target, probes, idle, rng)
    except Exception as error:
        return na_rows(figures, describe(error))
    everything = [*result.latencies, result.after_idle]
    (median_name, median_target), (max_name, max_target), (idle_name, _), (cpu_name, cpu_target) = figures
    return [
        Row(
            figure=median_name,
            value=ms(median(result.latencies)),
            reference=ms(median(floor)),
            target=median_target,
            ok=median(result.latencies) <= goal / 1000,
        ),
        Row(
            figure=max_name,
            value=ms(max(everything)),
            reference=ms(max(floor)),
            target=max_target,
            ok=max(everything) <= 0.050 if max_target != "-" else None,
        ),
        Row(figure=idle_name, value=ms(result.after_idle), reference=ms(median(floor))),
        Row(
            figure=cpu_name,
            value=f"{result.idle_cpu * 100:.2f} %",
            target=cpu_target,
            ok=result.idle_cpu <= 0.02 if cpu_target != "-" else None,
        ),
    ]


def _measure(ctx: Context, target: str, probes: int, idle: float, rng: random.Random) -> Probes:
    deadline = 120 + probes * (1.5 + PROBE_TIMEOUT) + idle
    return asyncio.run(asyncio.wait_for(_run(ctx, target, probes, idle, rng), deadline))


async def _run(ctx: Context, target: str, probes: int, idle: float, rng: random.Random) -> Probes:
    async with await Queue.open(target) as queue:
        child = Child(worker_argv(target), log=ctx.path("worker.log"))
        try:
            await _wait_registered(queue, child, 30.0)
            await asyncio.sleep(1.0)  # let start-up work finish
            latencies = []
            for _ in range(probes):
                await asyncio.sleep(rng.uniform(0.05, 1.5))
                latencies.append(await _probe(ctx, queue, target))
            cpu_before, started = child.cpu_seconds(), time.monotonic()
            await asyncio.sleep(idle)
            idle_cpu = (child.cpu_seconds() - cpu_before) / (time.monotonic() - started)
            after_idle = await _probe(ctx, queue, target)
            child.check(child.stop())
        finally:
            if child.running:
                child.kill()
    return Probes(latencies=latencies, after_idle=after_idle, idle_cpu=idle_cpu)


async def _wait_registered(queue: Queue, child: Child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not any(worker.pid == child.pid for worker in await queue.workers()):
        if not child.running:
            raise BenchError(f"the worker exited at start{child.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"the worker did not register within {timeout:.0f}s")
        await asyncio.sleep(0.05)


def _probe_command(stamp: Path) -> str:
    partial, final = shlex.quote(str(stamp.with_suffix(".partial"))), shlex.quote(str(stamp))
    return f"date +%s%N > {partial} && mv {partial} {final}"


async def _probe(ctx: Context, queue: Queue, target: str) -> float:
    """Enqueue one probe; seconds from the enqueue's return to the command's start."""
    stamp = ctx.path("probe.ns")
    job = NewJob(id=str(uuid.uuid4()), command=_probe_command(stamp))
    if target.startswith("postgresql://"):
        await queue.enqueue(job)
    else:
        from queuectl.enqueue import enqueue_many

        enqueue_many(target, [job])
    committed = time.time_ns()
    deadline = time.monotonic() + PROBE_TIMEOUT
    while not stamp.exists():
        if time.monotonic() > deadline:
            raise BenchError(f"a probe job did not run within {PROBE_TIMEOUT:.0f}s")
        await asyncio.sleep(0.002)
    return (int(stamp.read_text().strip()) - committed) / 1e9


def _bare_spawn(ctx: Context, count: int) -> list[float]:
    """The probe command's own start-up: spawned straight from this process."""
    latencies = []
    for _ in range(count):
        stamp = ctx.path("bare.ns")
        started = time.time_ns()
        subprocess.run(["/bin/sh", "-c", _probe_command(stamp)], check=True, timeout=PROBE_TIMEOUT)
        latencies.append((int(stamp.read_text().strip()) - started) / 1e9)
    return latencies
