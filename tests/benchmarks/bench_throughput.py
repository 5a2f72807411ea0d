"""Figures 1, 2 and 5: drain rate against the spawn ceiling, enqueue costs, worker memory."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from pathlib import Path

from bench_common import (
    BenchError,
    Child,
    Context,
    Finished,
    Row,
    describe,
    expect_completed,
    fill,
    median,
    mib,
    ms,
    na_rows,
    new_jobs,
    per_second,
    queuectl_argv,
    run_timed,
)

HERE = Path(__file__).resolve().parent
CONCURRENCY = 4

# --- 1. drain --------------------------------------------------------------------------------------


def drain_figures(ctx: Context) -> list[Row]:
    count = 500 if ctx.quick else 5_000
    ctx.note(
        "drain ceiling: a bare asyncio loop runs the same commands 4 at a time"
        " (create_subprocess_shell, output read with communicate(), PidfdChildWatcher installed on"
        " Python 3.11 as queuectl's worker does); both timed as whole processes, start to exit;"
        " rounds alternate ceiling, sqlite, postgres; the best round of each counts"
    )
    stores: dict[str, Callable[[], AbstractContextManager[str]]] = {"sqlite": lambda: _sqlite(ctx, "drain")}
    if ctx.postgres.unavailable is None:
        stores["postgres"] = ctx.postgres.schema
    ceiling: list[float] = []
    walls: dict[str, list[float]] = {name: [] for name in ("sqlite", "postgres")}
    errors: dict[str, str] = {}
    timeout = 60 + count / 20
    for _ in range(ctx.rounds):
        ceiling.append(run_ceiling(count, "true", timeout).wall)
        for name, store in stores.items():
            if name in errors:
                continue
            try:
                with store() as target:
                    walls[name].append(drain(ctx, target, count, "true", timeout).wall)
            except Exception as error:  # this store's rows say why; the other store goes on
                errors[name] = describe(error)
    best_ceiling = min(ceiling)
    rows = []
    for name, goal in (("sqlite", 0.90), ("postgres", 0.80)):
        figure = f"1 drain {name}: {count:,} x true, --count 4"
        target = f"ratio >= {goal:.2f}"
        reason = errors.get(name) or (ctx.postgres.unavailable if name == "postgres" else None)
        if reason is not None or not walls[name]:
            rows += na_rows([(figure, target)], reason or "not measured")
            continue
        wall = min(walls[name])
        ratio = best_ceiling / wall
        rows.append(
            Row(
                figure=figure,
                value=per_second(count, wall),
                reference=per_second(count, best_ceiling),
                ratio=ratio,
                target=target,
                ok=ratio >= goal,
            )
        )
    return rows


@contextmanager
def _sqlite(ctx: Context, name: str) -> Iterator[str]:
    yield ctx.sqlite_target(name)


def run_ceiling(count: int, command: str, timeout: float) -> Finished:
    argv = [sys.executable, str(HERE / "bench_ceiling.py"), str(count), str(CONCURRENCY), command]
    return run_timed(argv, timeout=timeout)


def worker_argv(target: str, *mode: str) -> list[str]:
    return [*queuectl_argv(target), "worker", "start", "--count", str(CONCURRENCY), *mode, "--quiet"]


def drain(ctx: Context, target: str, count: int, command: str, timeout: float) -> Finished:
    """Enqueue ``count`` jobs (untimed), then time ``worker start --drain`` from spawn to exit."""
    fill(target, new_jobs(command, count))
    child = Child(worker_argv(target, "--drain"), log=ctx.path("worker.log"))
    finished = child.check(child.wait(timeout, poll_memory=True))
    expect_completed(target, count)
    return finished


# --- 2. enqueue ------------------------------------------------------------------------------------


def enqueue_figures(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    measures = (
        (_enqueue_process, "2 enqueue process", "ratio <= 1.25"),
        (_enqueue_file, "2 enqueue-file", ">= 100,000 jobs/s"),
        (_enqueue_embedded, "2 embedded enqueue", ">= 5,000 jobs/s"),
    )
    for measure, figure, target in measures:
        try:
            rows.append(measure(ctx))
        except Exception as error:
            rows += na_rows([(figure, target)], describe(error))
    return rows


def _enqueue_process(ctx: Context) -> Row:
    repeats = 5 if ctx.quick else 20
    target = ctx.sqlite_target("enqueue")
    enqueue = [*queuectl_argv(target), "enqueue", "--command", "true"]
    reference = [sys.executable, "-c", "import click, sqlite3"]
    for argv in (enqueue, reference):  # warm the page cache; the store exists already
        run_timed(argv, timeout=60)
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(repeats):  # alternating, so that both see the same machine
        theirs.append(run_timed(reference, timeout=60).wall)
        ours.append(run_timed(enqueue, timeout=60).wall)
    ratio = median(ours) / median(theirs)
    return Row(
        figure=f"2 enqueue process: median of {repeats}",
        value=ms(median(ours)),
        reference=ms(median(theirs)),
        ratio=ratio,
        target="ratio <= 1.25",
        ok=ratio <= 1.25,
    )


def _enqueue_file(ctx: Context) -> Row:
    count = 10_000 if ctx.quick else 100_000
    target = ctx.sqlite_target("enqueue-file")
    floor_target = ctx.sqlite_target("insert-floor")
    data = ctx.path("jobs.jsonl")
    with data.open("w", encoding="utf-8") as handle:
        for _ in range(count):
            handle.write('{"command": "true"}\n')
    timeout = 60 + count / 500
    finished = run_timed([*queuectl_argv(target), "enqueue-file", str(data)], timeout=timeout)
    floor = run_timed(
        [sys.executable, str(HERE / "bench_insert_floor.py"), str(data), floor_target], timeout=timeout
    )
    with closing(sqlite3.connect(target)) as connection:
        (stored,) = connection.execute("SELECT count(*) FROM jobs").fetchone()
    if stored != count:
        raise BenchError(f"enqueue-file stored {stored} of {count} jobs")
    ctx.note(
        "enqueue-file reference: a python process that parses the same JSON Lines with json.loads and"
        " inserts them with sqlite3 executemany in one FULL-synchronous transaction (bench_insert_floor.py)"
    )
    return Row(
        figure=f"2 enqueue-file: {count:,} jobs, whole process",
        value=per_second(count, finished.wall),
        reference=per_second(count, floor.wall),
        ratio=floor.wall / finished.wall,
        target=">= 100,000 jobs/s",
        ok=count / finished.wall >= 100_000,
    )


def _enqueue_embedded(ctx: Context) -> Row:
    count = 1_000 if ctx.quick else 10_000
    target = ctx.sqlite_target("embedded")
    seconds = asyncio.run(asyncio.wait_for(_embedded(target, count), 60 + count / 100))
    floor = _fsync_floor(ctx.path("fsync-floor.db"), min(count, 2_000))
    ctx.note(
        "embedded enqueue reference: one-row INSERT commits with plain sqlite3 (WAL, synchronous=FULL)"
        " on the same file system, timed after as many untimed ones (so that the WAL is reused as in"
        " a long run): the fsync floor of a durable one-job enqueue"
    )
    return Row(
        figure=f"2 embedded enqueue: {count:,} x await",
        value=per_second(count, seconds),
        reference=per_second(1, floor),
        ratio=floor / (seconds / count),
        target=">= 5,000 jobs/s",
        ok=count / seconds >= 5_000,
    )


async def _embedded(target: str, count: int) -> float:
    from queuectl.queue import Queue

    async with await Queue.open(target) as queue:
        await queue.enqueue(command="true")  # opens the durable connection, as any first enqueue
        started = time.perf_counter()
        for _ in range(count):
            await queue.enqueue(command="true")
        return time.perf_counter() - started


def _fsync_floor(path: Path, count: int) -> float:
    """Seconds per one-row durable commit with plain sqlite3, once the WAL has wrapped around.

    A WAL that still grows costs more per fsync (the file size changes) than one reused after a
    checkpoint, as in any long run; so ``count`` untimed commits come first.
    """
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("CREATE TABLE t (id TEXT PRIMARY KEY, command TEXT)")
        for number in range(count):
            connection.execute("INSERT INTO t VALUES (?, 'true')", (f"warm-{number}",))
        started = time.perf_counter()
        for number in range(count):
            connection.execute("INSERT INTO t VALUES (?, 'true')", (str(number),))
        return (time.perf_counter() - started) / count
    finally:
        connection.close()


# --- 5. memory -------------------------------------------------------------------------------------


def memory_figures(ctx: Context) -> list[Row]:
    count = 500 if ctx.quick else 5_000
    size = 20_000_000 if ctx.quick else 200_000_000
    ctx.note(
        "memory: peak RSS = VmHWM of the worker process, read from /proc every 20 ms while it runs;"
        " reference: the same worker started with --burst on an empty store"
    )
    idle_target = ctx.sqlite_target("idle")
    idle = Child(worker_argv(idle_target, "--burst"), log=ctx.path("worker.log"))
    baseline = idle.check(idle.wait(60, poll_memory=True))
    rows = []
    cases = (
        (f"5 worker peak RSS: draining {count:,} jobs", "true", count),
        (f"5 worker peak RSS: one job printing {size // 1_000_000} MB", f"head -c {size} /dev/zero", 1),
    )
    for figure, command, jobs in cases:
        try:
            target = ctx.sqlite_target("memory")
            finished = drain(ctx, target, jobs, command, 120 + jobs / 20)
            peak = finished.peak_rss_kib
            rows.append(
                Row(
                    figure=figure,
                    value=mib(peak),
                    reference=mib(baseline.peak_rss_kib),
                    target="<= 60 MiB",
                    ok=peak <= 60 * 1024,
                )
            )
        except Exception as error:
            rows += na_rows([(figure, "<= 60 MiB")], describe(error))
    return rows
