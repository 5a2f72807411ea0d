"""Figure 7: ``logs -f`` latency, from a job's write to the output of a follower in another process.

A worker runs one job whose command writes ``date +%s%N`` (the wall clock in ns) on lines at
random moments; a ``queuectl logs -f ID`` process follows it, its stdout a pipe this process
reads. Latency is the time a line arrived here minus the stamp in it: the worker's flush of the
output to the store, the store's wake-up of the follower, its read and its write, together. The
job first writes ``ready`` and waits for a file, so that every stamp is written while the follower
follows (not read back at its start).
"""

from __future__ import annotations

import random
import shlex
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from bench_common import BenchError, Child, Context, Row, describe, fill, median, ms, na_rows, queuectl_argv
from bench_throughput import worker_argv

from queuectl.models import NewJob

#: The SPEC: output shows within 1 s of its write.
MAX_GOAL = 1.0
MEDIAN_GOAL = 0.5
READY_TIMEOUT = 60.0


def follow_figures(ctx: Context) -> list[Row]:
    lines = 10 if ctx.quick else 40
    ctx.note(
        "logs -f: latency = arrival of a line on the stdout of `queuectl logs -f ID` (another process)"
        " minus the `date +%s%N` stamp the job wrote in it; lines spaced 0.05-0.8 s at random"
    )
    rng = random.Random(ctx.seed)
    rows: list[Row] = []
    for name in ("sqlite", "postgres"):
        figures = _figures(name, lines)
        if name == "postgres" and ctx.postgres.unavailable is not None:
            rows += na_rows(figures, ctx.postgres.unavailable)
            continue
        try:
            with _target(ctx, name) as target:
                latencies = _measure(ctx, target, lines, rng)
        except Exception as error:
            rows += na_rows(figures, describe(error))
            continue
        (median_name, median_target), (max_name, max_target) = figures
        rows += [
            Row(
                figure=median_name,
                value=ms(median(latencies)),
                target=median_target,
                ok=median(latencies) <= MEDIAN_GOAL,
            ),
            Row(figure=max_name, value=ms(max(latencies)), target=max_target, ok=max(latencies) <= MAX_GOAL),
        ]
    return rows


def _figures(name: str, lines: int) -> list[tuple[str, str]]:
    return [
        (f"7 logs -f {name}: median of {lines}", f"<= {MEDIAN_GOAL * 1000:.0f} ms"),
        (f"7 logs -f {name}: max of {lines}", f"<= {MAX_GOAL * 1000:.0f} ms"),
    ]


@contextmanager
def _target(ctx: Context, name: str) -> Iterator[str]:
    if name == "sqlite":
        yield ctx.sqlite_target("follow")
    else:
        with ctx.postgres.schema() as target:
            yield target


def _command(gate: Path, pauses: list[float]) -> str:
    wait = f"while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.01; done"
    stamps = "; ".join(f"sleep {pause:.3f}; date +%s%N" for pause in pauses)
    return f"echo ready; {wait}; {stamps}"


def _measure(ctx: Context, target: str, count: int, rng: random.Random) -> list[float]:
    gate = ctx.path("go")
    job = NewJob(id=str(uuid.uuid4()), command=_command(gate, [rng.uniform(0.05, 0.8) for _ in range(count)]))
    fill(target, [job])
    follower = Child(
        [*queuectl_argv(target), "logs", "-f", job.id], stdout=subprocess.PIPE, log=ctx.path("follower.log")
    )
    worker = Child(worker_argv(target), log=ctx.path("worker.log"))
    try:
        assert follower.process.stdout is not None
        lines = _Lines(follower.process.stdout)
        if lines.next(READY_TIMEOUT, follower) != b"ready":
            raise BenchError("the follower's first line was not the job's 'ready'")
        gate.touch()
        latencies = []
        for _ in range(count):
            arrived, line = lines.next_stamped(10.0, follower)
            latencies.append((arrived - int(line)) / 1e9)
        follower.check(follower.wait(30.0))  # exits 0 once the job is final
        worker.check(worker.stop())
    finally:
        for child in (follower, worker):
            if child.running:
                child.kill()
    return latencies


class _Lines:
    """Lines of a pipe, each with the wall clock (ns) at which it was read, read by a thread."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._lines: list[tuple[int, bytes]] = []
        self._ready = threading.Condition()
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe: IO[bytes]) -> None:
        for line in pipe:
            arrived = time.time_ns()
            with self._ready:
                self._lines.append((arrived, line.rstrip(b"\n")))
                self._ready.notify_all()

    def next_stamped(self, timeout: float, child: Child) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout
        with self._ready:
            while not self._lines:
                if time.monotonic() > deadline:
                    raise BenchError(f"no line from the follower within {timeout:.0f}s{child.log_tail()}")
                self._ready.wait(0.05)
            return self._lines.pop(0)

    def next(self, timeout: float, child: Child) -> bytes:
        return self.next_stamped(timeout, child)[1]
