"""The worker's hot path on SQLite: short transactions run in the event loop's own thread.

A hop to aiosqlite's thread and back (a queue put, a thread wake-up, a self-pipe write, a loop
wake-up) costs more CPU than a claim or a result itself: measured with ``tests/benchmarks``,
claim + result took ~460 µs of CPU per job through aiosqlite and ~105 µs as one transaction here.
So the lane runs them where the loop is, on a connection that never waits for a lock: its busy
timeout is 0. When another process holds the write lock (an enqueue's fsync, say), the same work
goes to a worker thread instead and waits there with the store's normal busy timeout.

What runs here must be short and bounded: index-driven statements on a few rows, commits without
fsync (``synchronous=NORMAL``). So the lane never checkpoints (``wal_autocheckpoint = 0``): a
checkpoint fsyncs, and on a busy disk one fsync can take seconds, all of them the loop's. The
store's ``wal.WalKeeper`` runs it in a thread instead, every so many writes, with the lane held
(``run_in_thread``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio

from queuectl.storage.sqlite import schema as sqlite_schema

T = TypeVar("T")

#: SQLITE_BUSY with its extended codes (``& 0xFF``): another connection holds the lock.
_SQLITE_BUSY = 5


class Lane:
    """One connection for the loop's thread, with a thread to fall back on when the store is locked."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._lock = asyncio.Lock()  # the fallback thread and the loop never share the connection
        self._waiting_timeout_ms = int(sqlite_schema.BUSY_TIMEOUT_SECONDS * 1000)

    @classmethod
    async def open(cls, path: Path) -> Lane:
        connection = await anyio.to_thread.run_sync(_connect, path)
        return cls(connection)

    def close(self) -> None:
        self._connection.close()

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` here if the store is free, else in a thread that waits for it.

        ``work`` must leave nothing behind when it fails: it is one statement in autocommit, or
        one ``BEGIN IMMEDIATE`` transaction that rolls back on error. A busy store fails it
        before it changes anything, so running it again is safe.
        """
        async with self._lock:
            try:
                return work(self._connection)
            except sqlite3.OperationalError as error:
                if getattr(error, "sqlite_errorcode", 0) & 0xFF != _SQLITE_BUSY:
                    raise
            # Not cancellable once started (anyio waits for the thread): the connection is
            # free again when this returns or raises.
            return await anyio.to_thread.run_sync(self._run_waiting, work)

    async def run_in_thread(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(connection)`` in a thread, and no other lane work meanwhile (a checkpoint)."""
        async with self._lock:
            return await anyio.to_thread.run_sync(work, self._connection)

    def _run_waiting(self, work: Callable[[sqlite3.Connection], T]) -> T:
        connection = self._connection
        connection.execute(f"PRAGMA busy_timeout = {self._waiting_timeout_ms}")
        try:
            return work(connection)
        finally:
            connection.execute("PRAGMA busy_timeout = 0")


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    try:
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute(sqlite_schema.RECURSIVE_TRIGGERS)
        connection.execute("PRAGMA wal_autocheckpoint = 0")
    except BaseException:
        connection.close()
        raise
    return connection


def fetch_all(
    sql: str, parameters: tuple[object, ...]
) -> Callable[[sqlite3.Connection], list[tuple[object, ...]]]:
    """Work for ``Lane.run``: one statement, every row fetched (so that it commits now)."""

    def work(connection: sqlite3.Connection) -> list[tuple[object, ...]]:
        return connection.execute(sql, parameters).fetchall()

    return work
