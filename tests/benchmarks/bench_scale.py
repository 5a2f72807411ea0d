"""Figure 4: what a big SQLite store costs: one claim, ``status``, ``list``, and the drain rate.

A store of N jobs (90 % completed, 10 % pending and due) is written with plain sqlite3 into the
schema that queuectl created, for N = 1,000,000 and N = 1,000. On each, one claim is timed through
the store API (``claim(limit=1)``, the job released again untimed, many times), and ``status`` and
``list`` as whole ``queuectl`` processes. Then all but DUE pending jobs are put off to tomorrow
(the small store gets due jobs added to have DUE) and ``worker start --count 4 --burst`` drains them.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_common import (
    BenchError,
    Child,
    Context,
    Row,
    describe,
    median,
    ms,
    na_rows,
    per_second,
    queuectl_argv,
)
from bench_throughput import worker_argv

from queuectl.models import AttemptOutcome, AttemptRecord, JobState
from queuectl.storage.sqlite import schema as sqlite_schema
from queuectl.storage.sqlite.store import SqliteStore

ROW_COLUMNS = (
    "id, command, queue, priority, timeout, max_retries, run_at, state, attempts, created_at, updated_at,"
    " started_at, finished_at, exit_code, last_error, stdout, stderr"
)
INSERT = f"INSERT INTO jobs ({ROW_COLUMNS}) VALUES ({', '.join('?' * 17)})"


@dataclass(frozen=True)
class Costs:
    build: float
    claim: float  # median seconds of one claim
    status: float  # median seconds of a whole `queuectl status`
    listing: float  # median seconds of a whole `queuectl list`
    drain: float  # seconds of `worker start --burst` over the due jobs


def scale_figures(ctx: Context) -> list[Row]:
    big = 100_000 if ctx.quick else 1_000_000
    small = 1_000
    due = 500 if ctx.quick else 2_000
    claims = 50 if ctx.quick else 200
    repeats = 3 if ctx.quick else 5
    label = f"{big:,} vs {small:,} jobs"
    figures = [
        (f"4 claim of 1 job: {label}", "ratio <= 1.5"),
        (f"4 status process: {label}", "<= 0.5 s"),
        (f"4 list process: {label}", "-"),
        (f"4 drain --burst {due:,} due: {label}", "-"),
    ]
    rng = random.Random(ctx.seed)
    try:
        _warm_up(ctx, small, claims, rng)
        small_costs = _measure(ctx, small, due, claims, repeats, rng)
        big_costs = _measure(ctx, big, due, claims, repeats, rng)
    except Exception as error:
        return na_rows(figures, describe(error))
    ctx.note(
        f"scale: building the {big:,}-job store took {big_costs.build:.1f} s; the claim is the median of"
        f" {claims} SqliteStore.claim(limit=1) calls, each of the next due job (the {small:,}-job store"
        f" has {small // 10 - 5} after the first 5), status and list medians of {repeats} whole"
        f" processes; for the drain, all pending jobs but {due:,} are put off to tomorrow (the"
        f" {small:,}-job store gets {due - small // 10:,} due jobs added)"
    )
    claim_ratio = big_costs.claim / small_costs.claim
    return [
        Row(
            figure=figures[0][0],
            value=f"{big_costs.claim * 1e6:,.0f} us",
            reference=f"{small_costs.claim * 1e6:,.0f} us",
            ratio=claim_ratio,
            target=figures[0][1],
            ok=claim_ratio <= 1.5,
        ),
        Row(
            figure=figures[1][0],
            value=f"{big_costs.status:.3f} s",
            reference=f"{small_costs.status:.3f} s",
            ratio=big_costs.status / small_costs.status,
            target=figures[1][1],
            ok=big_costs.status <= 0.5,
        ),
        Row(
            figure=figures[2][0],
            value=ms(big_costs.listing),
            reference=ms(small_costs.listing),
            ratio=big_costs.listing / small_costs.listing,
        ),
        Row(
            figure=figures[3][0],
            value=per_second(due, big_costs.drain),
            reference=per_second(due, small_costs.drain),
            ratio=small_costs.drain / big_costs.drain,
        ),
    ]


def _measure(ctx: Context, jobs: int, due: int, claims: int, repeats: int, rng: random.Random) -> Costs:
    path = ctx.sqlite_file(f"scale-{jobs}")
    try:
        started = time.perf_counter()
        build(path, jobs, rng)
        build_seconds = time.perf_counter() - started
        claim = asyncio.run(asyncio.wait_for(_claims(path, claims), 300))
        target = str(path)
        status = median([_timed(ctx, [*queuectl_argv(target), "status"]) for _ in range(repeats)])
        listing = median([_timed(ctx, [*queuectl_argv(target), "list"]) for _ in range(repeats)])
        completed = _count(path, JobState.COMPLETED)
        _keep_due(path, due, rng)
        # The built jobs ended long ago: the worker's retention would delete them as it starts.
        _timed(ctx, [*queuectl_argv(target), "config", "set", "retention", "none"])
        child = Child(worker_argv(target, "--burst"), log=ctx.path("worker.log"))
        drain = child.check(child.wait(120 + due / 5)).wall
        if _count(path, JobState.COMPLETED) != completed + due:
            raise BenchError(f"the --burst worker did not complete the {due} due jobs")
        return Costs(build=build_seconds, claim=claim, status=status, listing=listing, drain=drain)
    finally:
        _remove(path)


def _warm_up(ctx: Context, jobs: int, claims: int, rng: random.Random) -> None:
    """Claims on a throwaway store, untimed: the first store measured would pay for a cold
    process (its first claims took 79 us where the same store measured later took 48 us)."""
    path = ctx.sqlite_file("scale-warm-up")
    try:
        build(path, jobs, rng)
        asyncio.run(asyncio.wait_for(_claims(path, claims), 300))
    finally:
        _remove(path)


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _timed(ctx: Context, argv: list[str]) -> float:
    child = Child(argv, log=ctx.path("cli.log"))
    return child.check(child.wait(120)).wall


def build(path: Path, jobs: int, rng: random.Random) -> None:
    """The store: ``jobs`` rows, 90 % completed, the rest pending and due."""
    sqlite_schema.prepare(path)  # queuectl creates the schema
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("PRAGMA cache_size = -262144")  # 256 MiB: random ids make a big index
        batch: list[tuple[Any, ...]] = []
        for row in _rows(jobs, rng):
            batch.append(row)
            if len(batch) == 50_000:
                _insert(connection, batch)
                batch = []
        _insert(connection, batch)
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


def _insert(connection: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    connection.execute("BEGIN")
    connection.executemany(INSERT, rows)
    connection.execute("COMMIT")


def _rows(jobs: int, rng: random.Random) -> Iterator[tuple[Any, ...]]:
    now = time.time()
    completed = jobs * 9 // 10
    span = 30 * 86400.0  # created over the last 30 days, oldest first
    for number in range(jobs):
        created = now - span + span * number / jobs
        if number < completed:
            yield (_job_id(rng), "true", "default", 0, None, 3, created, "completed", 1, created,
                   created + 0.2, created + 0.1, created + 0.2, 0, None, b"", b"")  # fmt: skip
        else:
            yield (_job_id(rng), "true", "default", 0, None, 3, created, "pending", 0, created,
                   created, None, None, None, None, None, None)  # fmt: skip


def _keep_due(path: Path, due: int, rng: random.Random) -> None:
    """Put off all pending jobs but the newest ``due`` to tomorrow; add due jobs if there are fewer."""
    now = time.time()
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            "UPDATE jobs SET run_at = ? WHERE state = 'pending' AND seq NOT IN"
            " (SELECT seq FROM jobs WHERE state = 'pending' ORDER BY seq DESC LIMIT ?)",
            (now + 86400.0, due),
        )
        (pending,) = connection.execute(
            "SELECT count(*) FROM jobs WHERE state = 'pending' AND run_at <= ?", (now,)
        ).fetchone()
        missing = due - pending
        if missing > 0:
            rows = [(_job_id(rng), "true", "default", 0, None, 3, now, "pending", 0, now, now,
                     None, None, None, None, None, None) for _ in range(missing)]  # fmt: skip
            connection.executemany(INSERT, rows)
        connection.execute("COMMIT")


def _job_id(rng: random.Random) -> str:
    """A random UUID4-shaped id, like those queuectl makes (so the id index is as random)."""
    digits = f"{rng.getrandbits(128):032x}"
    return f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-a{digits[17:20]}-{digits[20:]}"


#: What ``release`` records: the attempt stopped before it ran.
_STOPPED = AttemptRecord(
    worker=None,
    host=None,
    pid=None,
    started_at=None,
    finished_at=None,
    exit_code=None,
    outcome=AttemptOutcome.STOPPED,
    error=None,
)


async def _claims(path: Path, count: int) -> float:
    """Median seconds of one ``claim(limit=1)``, up to ``count`` of them (fewer if fewer jobs
    are due), each taking the next due job as a worker's does; the jobs are released afterwards,
    untimed. (Releasing each job before the next claim would time claims of one row whose
    history grows by a ``stopped`` entry each time.)"""
    store = await SqliteStore.open(path)
    try:
        times = []
        held = []
        for _ in range(count + 5):
            started = time.perf_counter()
            claimed = await store.claim(worker_id="bench:0:claims", queues=None, limit=1, lease=300.0)
            elapsed = time.perf_counter() - started
            if not claimed:
                break
            held.extend(claimed)
            times.append(elapsed)
        if len(times) < min(count, 50) + 5:
            raise BenchError(f"only {len(times)} jobs were due to claim")
        for claim in held:
            await store.release(claim, _STOPPED)
        return median(times[5:])  # the first few warm the caches
    finally:
        await store.close()


def _count(path: Path, state: JobState) -> int:
    with closing(sqlite3.connect(path)) as connection:
        (found,) = connection.execute("SELECT count(*) FROM jobs WHERE state = ?", (state.value,)).fetchone()
    return int(found)
