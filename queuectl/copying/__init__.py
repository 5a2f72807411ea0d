"""Moving a store: ``copy_store(source, target)``, what ``queuectl store copy`` runs.

Everything a store keeps for good goes across, either kind of store to either kind: every job
with its output and history, dependencies, settings, queue settings, schedules and the
dashboard's per-minute counts. Workers' registrations do not (the copy is refused while the
source has live workers), nor the recent starts of rate-limited queues (``tables`` says why).

The copy is table by table through a store-neutral row stream (``tables``): the source's
reader (one read-only snapshot, never migrated, never written) hands canonical rows in batches
to the target's writer (one transaction, committed at the very end), one batch read ahead
while the previous one is written. Killed at any moment, the target holds no job or all.

Refusals come before anything is written: a malformed target (``InvalidInput``, exit 2), the
source and target being one store (exit 2), a source not at this queuectl's schema version, a
source with live workers, a target that holds any job (exit 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

from queuectl.copying.tables import JOBS, TABLES, Table
from queuectl.errors import InvalidInput, QueueError

__all__ = ("COUNT_NAMES", "CopyRefused", "Progress", "copy_store")

Row = tuple[Any, ...]

#: The keys of ``copy_store``'s counts, in order, as the tables are named.
COUNT_NAMES: tuple[str, ...] = tuple(table.name for table in TABLES)

#: Told ``(jobs copied so far, jobs in all)`` after each batch of jobs.
Progress = Callable[[int, int], None]


class CopyRefused(QueueError):
    """The copy was refused; nothing was written."""


class _Source(Protocol):
    async def close(self) -> None: ...
    async def live_workers(self) -> int: ...
    async def count_jobs(self) -> int: ...
    def read(self, table: Table) -> AsyncIterator[list[Row]]: ...


class _Target(Protocol):
    async def close(self) -> None: ...
    async def begin(self, refuse_jobs: Callable[[], Exception]) -> None: ...
    async def write(self, table: Table, batches: AsyncIterator[list[Row]]) -> int: ...
    async def commit(self) -> None: ...


async def copy_store(source: str, target: str, *, progress: Progress | None = None) -> dict[str, int]:
    """Copy every job, setting, queue setting and schedule of ``source`` into ``target``; return
    how many rows of each table were copied (``COUNT_NAMES``).

    ``source`` and ``target`` are store targets as ``open_store`` takes them. The target is
    created or migrated; its settings, queue settings and schedules are replaced by the
    source's. Raises ``CopyRefused`` while the source has live workers or the target holds a
    job, ``InvalidInput`` for a malformed target or one store given twice.
    """
    from queuectl.config import is_postgres_target, sqlite_path

    source_url = source if is_postgres_target(source) else None
    target_url = target if is_postgres_target(target) else None
    source_path = None if source_url else sqlite_path(source)
    target_path = None if target_url else sqlite_path(target)
    if source_path is not None and target_path is not None and _same_file(source_path, target_path):
        raise _same_store()
    reader = await _open_source(source_path, source_url)
    try:
        live = await reader.live_workers()
        if live:
            raise CopyRefused(
                f"the source has {live} live worker{'s' if live > 1 else ''}: stop them first"
                f" (queuectl --db SOURCE worker stop), then copy"
            )
        writer = await _open_target(target_path, target_url, reader)
        try:
            total = await reader.count_jobs()
            await writer.begin(_holds_jobs)
            counts: dict[str, int] = {}
            for table in TABLES:
                async with _ReadAhead(reader.read(table)) as batches:
                    if table is JOBS and progress is not None:
                        progress(0, total)
                        batches = _counted(batches, total, progress)
                    counts[table.name] = await writer.write(table, batches)
            await writer.commit()
        finally:
            await writer.close()
    finally:
        await reader.close()
    return counts


def _same_store() -> InvalidInput:
    return InvalidInput("SOURCE and TARGET are the same store: copy to another file or database")


def _holds_jobs() -> CopyRefused:
    return CopyRefused("the target holds jobs: copy into an empty store (a new file, database or schema)")


def _same_file(source: Path, target: Path) -> bool:
    with contextlib.suppress(OSError):
        return os.path.samefile(source, target)
    return os.path.abspath(source) == os.path.abspath(target)


async def _open_source(path: Path | None, url: str | None) -> _Source:
    if url is not None:
        from queuectl.storage.postgres.copying import PostgresSource

        return await PostgresSource.open(url)
    from queuectl.storage.sqlite.copying import SqliteSource

    assert path is not None
    return await SqliteSource.open(path)


async def _open_target(path: Path | None, url: str | None, source: _Source) -> _Target:
    """The target, created or migrated once nothing refuses the copy."""
    if url is not None:
        from queuectl.storage.postgres.copying import PostgresSource, PostgresTarget

        target = await PostgresTarget.connect(url)
        try:
            if isinstance(source, PostgresSource) and await target.is_source(source):
                raise _same_store()
            if await target.holds_jobs():
                raise _holds_jobs()
            await target.prepare()
        except BaseException:
            await target.close()
            raise
        return target
    from queuectl.storage.sqlite.copying import SqliteTarget, holds_jobs

    assert path is not None
    if await asyncio.to_thread(holds_jobs, path):
        raise _holds_jobs()
    return await SqliteTarget.open(path)


class _ReadAhead:
    """``batches`` read ahead by a task of their own, up to ``depth`` batches: the source reads
    the next batch while the target writes this one.

    A context manager: on the way out, however the writer stopped, the task is cancelled and
    awaited, so that it never reads on while the source is closed under it.
    """

    def __init__(self, batches: AsyncIterator[list[Row]], depth: int = 2) -> None:
        self._batches = batches
        self._queue: asyncio.Queue[tuple[list[Row] | None, Exception | None]] = asyncio.Queue(depth)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncIterator[list[Row]]:
        self._task = asyncio.create_task(self._fill())
        return self._taken()

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.wait([self._task])  # its own end, whatever it is: ours is what propagates

    async def _fill(self) -> None:
        try:
            async for batch in self._batches:
                await self._queue.put((batch, None))
        except Exception as error:
            await self._queue.put((None, error))
        else:
            await self._queue.put((None, None))

    async def _taken(self) -> AsyncIterator[list[Row]]:
        while True:
            batch, error = await self._queue.get()
            if error is not None:
                raise error
            if batch is None:
                return
            yield batch


async def _counted(
    batches: AsyncIterator[list[Row]], total: int, progress: Progress
) -> AsyncIterator[list[Row]]:
    """``batches``, telling ``progress`` how many rows the writer has taken each time it asks
    for more (it asks once it wrote the previous batch)."""
    done = 0
    async for rows in batches:
        yield rows
        done += len(rows)
        progress(done, total)
