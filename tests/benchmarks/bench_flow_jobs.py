"""Figure 13: what jobs waiting on dependencies (``after``) cost a claim.

Two SQLite stores of N jobs are built as figure 4 builds its big one (``bench_scale.build``: 90 %
completed, 10 % pending and due). In the second, N / 10 of the completed jobs become pending jobs
that each wait on one of the due ones (a row of ``job_dependencies``, ``waiting`` 1), with a higher
priority than the due jobs: a claim that looked at waiting jobs would meet them first. One claim is
timed on each (``bench_scale.claims``). The partial index ``jobs_due`` leaves waiting jobs out, so
the claim should cost the same: the plain store's claim is the reference.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from bench_common import Context, Row, describe, na_rows
from bench_scale import _claims as claims_cost
from bench_scale import build

#: The most a claim may cost with the waiting jobs, as a multiple of the plain store's claim.
MAX_RATIO = 1.2


def flow_job_figures(ctx: Context) -> list[Row]:
    jobs = 100_000 if ctx.quick else 1_000_000
    waiting = jobs // 10
    claims = 50 if ctx.quick else 200
    figure = f"13 claim of 1 job: {jobs:,} jobs, {waiting:,} waiting"
    target = f"ratio <= {MAX_RATIO}"
    try:
        plain = _claim_cost(ctx, jobs, 0, claims)
        with_waiting = _claim_cost(ctx, jobs, waiting, claims)
    except Exception as error:
        return na_rows([(figure, target)], describe(error))
    ctx.note(
        f"deps: two stores of {jobs:,} jobs built as figure 4's; in the second, {waiting:,} completed"
        " jobs made pending, of a higher priority than the due ones, each waiting on a due job;"
        f" the median of {claims} SqliteStore.claim(limit=1) calls on each; reference: the plain store"
    )
    ratio = with_waiting / plain
    return [
        Row(
            figure=figure,
            value=f"{with_waiting * 1e6:,.0f} us",
            reference=f"{plain * 1e6:,.0f} us",
            ratio=ratio,
            target=target,
            ok=ratio <= MAX_RATIO,
        )
    ]


def _claim_cost(ctx: Context, jobs: int, waiting: int, claims: int) -> float:
    """Median seconds of one claim on a store of ``jobs`` jobs, ``waiting`` of them on dependencies."""
    path = ctx.sqlite_file(f"deps-{jobs}-{waiting}")
    try:
        build(path, jobs, random.Random(ctx.seed))
        if waiting:
            _wait_on_dependencies(path, waiting)
        return asyncio.run(asyncio.wait_for(claims_cost(path, claims), 300))
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def _wait_on_dependencies(path: Path, count: int) -> None:
    """Make ``count`` of the newest completed jobs pending, priority 1, each waiting on a due job."""
    now = time.time()
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute("BEGIN IMMEDIATE")
        dependencies = [
            job_id
            for (job_id,) in connection.execute(
                "SELECT id FROM jobs WHERE state = 'pending' ORDER BY seq LIMIT ?", (count,)
            )
        ]
        dependents = [
            job_id
            for (job_id,) in connection.execute(
                "UPDATE jobs SET state = 'pending', priority = 1, attempts = 0, run_at = ?,"
                " started_at = NULL, finished_at = NULL, exit_code = NULL, waiting = 1"
                " WHERE seq IN (SELECT seq FROM jobs WHERE state = 'completed' ORDER BY seq DESC LIMIT ?)"
                " RETURNING id",
                (now, count),
            )
        ]
        pairs = list(zip(dependencies, dependents, strict=False))
        connection.executemany("INSERT INTO job_dependencies (depends_on, job_id) VALUES (?, ?)", pairs)
        connection.executemany(
            "UPDATE jobs SET dependents = dependents + 1 WHERE id = ?", [(job_id,) for job_id, _ in pairs]
        )
        connection.execute("COMMIT")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
