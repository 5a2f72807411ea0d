"""The SQLite store's connections to its file, and its patience while another process holds the lock.

``Database`` owns three: the ``lane`` (claims and what follows them, in the event loop's
thread), an aiosqlite connection for the rest of what the store reads and writes, and, opened
on first use, an aiosqlite connection that fsyncs every commit, for what users hand over (new
jobs, settings, retries, cancels). Through aiosqlite a statement is tried again while the file
is locked (``patiently``), in slices that Ctrl-C can interrupt; every write on the lane is
counted by the ``WalKeeper`` that keeps the write-ahead log bounded. The store calls it for
every statement it runs, and opens and closes it with itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import anyio

from queuectl.storage.sqlite import schema as sqlite_schema
from queuectl.storage.sqlite.lane import Lane, fetch_all
from queuectl.storage.sqlite.schema import translate_errors
from queuectl.storage.sqlite.wal import WalKeeper

__all__ = ("Database",)

T = TypeVar("T")


class Database:
    """One store's connections to its SQLite file. Open it with ``await Database.open(path)``."""

    def __init__(self, path: Path, db: aiosqlite.Connection, lane: Lane) -> None:
        self.path = path
        self._db = db
        self.lane = lane  # claims and results: the worker's hot path
        self.wal = WalKeeper(path, lane)
        # Opened on first use, once: callers that come meanwhile (a worker's retention purge and
        # the application's first enqueue) wait for the same opening, which none of them may
        # cancel. Two openings would leave one connection, and its thread, never closed: the
        # process would hang at exit.
        self._durable: asyncio.Future[aiosqlite.Connection] | None = None

    @classmethod
    async def open(cls, path: Path) -> Database:
        """Connect to a file that is ready (``schema.prepare``)."""
        db = await cls.connect(path, durable=False)
        try:
            with translate_errors(path):
                lane = await Lane.open(path)
        except BaseException:
            await db.close()
            raise
        return cls(path, db, lane)

    @staticmethod
    async def connect(path: Path, *, durable: bool) -> aiosqlite.Connection:
        with translate_errors(path):
            db = await aiosqlite.connect(
                path,
                timeout=sqlite_schema.BUSY_SLICE_SECONDS,  # longer waits: patiently
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                await db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
                await db.execute(sqlite_schema.RECURSIVE_TRIGGERS)
            except BaseException:
                await db.close()
                raise
        return db

    async def close(self) -> None:
        """Close every connection (the caller shields this from cancellation)."""
        await self.wal.close()
        await self._db.close()
        opening, self._durable = self._durable, None
        if opening is not None:
            with contextlib.suppress(Exception):  # an opening that failed left nothing open
                await (await opening).close()
        self.lane.close()

    async def durable(self) -> aiosqlite.Connection:
        """The connection that fsyncs each commit: used for what users hand us."""
        opening = self._durable
        if opening is None or (opening.done() and (opening.cancelled() or opening.exception() is not None)):
            opening = self._durable = asyncio.ensure_future(self.connect(self.path, durable=True))
        return await asyncio.shield(opening)

    async def fetch(self, statement: str, parameters: Sequence[Any] = ()) -> list[Any]:
        with translate_errors(self.path):
            return list(await self.patiently(lambda: self._db.execute_fetchall(statement, parameters)))

    async def fetch_durably(self, statement: str, parameters: Sequence[Any] = ()) -> list[Any]:
        db = await self.durable()
        with translate_errors(self.path):
            return list(await self.patiently(lambda: db.execute_fetchall(statement, parameters)))

    @staticmethod
    async def patiently(attempt: Callable[[], Awaitable[T]]) -> T:
        """``await attempt()``, tried again while the store is locked, up to the busy timeout.

        Each try waits at most ``BUSY_SLICE_SECONDS`` in aiosqlite's thread, where a wait cannot
        be cancelled: Ctrl-C (asyncio.run cancels) ends a command within a slice, not after the
        whole busy timeout. ``attempt`` must change nothing when it fails busy, as in
        ``sqlite_schema.patiently``.
        """
        deadline = time.monotonic() + sqlite_schema.BUSY_TIMEOUT_SECONDS
        while True:
            try:
                return await attempt()
            except sqlite3.OperationalError as error:
                if not sqlite_schema.is_busy(error) or time.monotonic() >= deadline:
                    raise
            await anyio.sleep(sqlite_schema.BUSY_PAUSE_SECONDS)

    @staticmethod
    async def rollback(db: aiosqlite.Connection) -> None:
        """Roll back unless SQLite already did (see ``schema.rollback``)."""
        if db.in_transaction:
            await db.execute("ROLLBACK")

    async def fetch_on_lane(
        self, statement: str, parameters: Sequence[Any] = (), *, writes: bool = True
    ) -> list[Any]:
        return await self.on_lane(fetch_all(statement, tuple(parameters)), writes=writes)

    async def on_lane(self, work: Callable[[sqlite3.Connection], T], *, writes: bool = True) -> T:
        with translate_errors(self.path):
            result = await self.lane.run(work)
        if writes:
            self.wal.wrote()
        return result
