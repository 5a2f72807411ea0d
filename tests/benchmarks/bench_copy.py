"""The ``copy`` figure: ``store copy`` of a million jobs, SQLite to PostgreSQL and back (issue 15)."""

from __future__ import annotations

import random
import time
from pathlib import Path

from bench_common import BenchError, Context, Row, counts, describe, na_rows, queuectl_argv, run_timed
from bench_scale import build as build_big_store


def copy_figures(ctx: Context) -> list[Row]:
    """``store copy`` of a big store, SQLite to PostgreSQL and back, each a whole process.

    The source is the scale figure's store (90 % completed jobs, the rest pending), written with
    plain sqlite3. References: each store copying the same rows into itself with no client at
    all (``INSERT INTO ... SELECT *`` between two schemas, or two attached files): the ceiling
    of writing them there.
    """
    jobs = 100_000 if ctx.quick else 1_000_000
    figures = [(f"C store copy sqlite -> postgres: {jobs:,} jobs", "<= 60 s"),
               (f"C store copy postgres -> sqlite: {jobs:,} jobs", "<= 60 s")]  # fmt: skip
    if ctx.postgres.unavailable is not None:
        return na_rows(figures, ctx.postgres.unavailable)
    source = ctx.sqlite_file("copy-source")
    try:
        build_big_store(source, jobs, random.Random(ctx.seed))
        with ctx.postgres.schema() as middle, ctx.postgres.schema() as ceiling:
            there = _timed_copy(ctx, str(source), middle, jobs)
            server = _server_ceiling(middle, ceiling)
            back = ctx.sqlite_file("copy-back")
            again = _timed_copy(ctx, middle, str(back), jobs)
            local = _sqlite_ceiling(source, ctx.sqlite_file("copy-ceiling"))
    except Exception as error:
        return na_rows(figures, describe(error))
    ctx.note(
        f"store copy: {jobs:,} jobs (the scale figure's store), each direction one whole"
        " `queuectl store copy` process; references: the target store copying the same rows"
        " into a fresh store of its own kind by itself (INSERT ... SELECT *), no client"
    )
    return [
        Row(figure=name, value=f"{wall:.1f} s", reference=f"{ceiling:.1f} s",
            ratio=ceiling / wall, target=target, ok=wall <= 60.0)
        for (name, target), wall, ceiling in zip(figures, (there, again), (server, local), strict=True)
    ]  # fmt: skip


def _timed_copy(ctx: Context, source: str, target: str, jobs: int) -> float:
    argv = [*queuectl_argv(source)[:-2], "store", "copy", source, target]
    finished = run_timed(argv, timeout=300, log=ctx.path("copy.log"))
    copied = sum(counts(target).values())
    if copied != jobs:
        raise BenchError(f"store copy left {copied} jobs in {target}, not {jobs}")
    return finished.wall


def _server_ceiling(filled: str, empty: str) -> float:
    """Seconds PostgreSQL takes to copy ``filled``'s jobs into ``empty`` (migrated) by itself."""
    import asyncio

    counts(empty)  # migrates it

    async def insert() -> float:
        import asyncpg

        connection = await asyncpg.connect(filled)
        try:
            source = await connection.fetchval("SELECT current_schema()")
            await connection.execute(f"SET search_path = {empty.rpartition('search_path=')[2]}")
            started = time.perf_counter()
            await connection.execute(f'INSERT INTO jobs SELECT * FROM "{source}".jobs')
            return time.perf_counter() - started
        finally:
            await connection.close()

    return asyncio.run(insert())


def _sqlite_ceiling(filled: Path, empty: Path) -> float:
    """Seconds SQLite takes to copy ``filled``'s jobs into a new store at ``empty`` by itself."""
    import sqlite3

    from queuectl.storage.sqlite import schema as sqlite_schema

    sqlite_schema.prepare(empty)
    connection = sqlite3.connect(empty, isolation_level=None)
    try:
        connection.execute("PRAGMA cache_size = -262144")  # as store copy's writer
        connection.execute("ATTACH ? AS filled", (str(filled),))
        started = time.perf_counter()
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO jobs SELECT * FROM filled.jobs")
        connection.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        connection.close()
