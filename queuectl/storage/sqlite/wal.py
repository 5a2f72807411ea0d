"""Keeping a store's write-ahead log bounded, without making the event loop wait for a checkpoint.

Two things can let the WAL grow without end, and a ``WalKeeper`` answers each:

- The lane never checkpoints (``wal_autocheckpoint = 0``, see ``lane``): a checkpoint fsyncs, and
  one fsync on a busy disk can take seconds of the loop's time. So every ``CHECKPOINT_EVERY``
  writes of the lane (``wrote``), a passive checkpoint runs in a thread, on the lane's connection
  with the lane held: no write may land meanwhile, or the WAL, never wholly copied back, would
  never start over from its beginning.
- SQLite's own checkpoints wait for no one: a reader that is almost always inside a transaction
  (a dashboard polling in a loop) keeps them from ever emptying the WAL. So after recording a
  result (``after_result``), at most every ``CHECK_SECONDS``, the keeper looks at the WAL's size
  and past ``WAL_LIMIT_BYTES`` forces a checkpoint that waits for the readers' next gap.

Its interface is narrow: the store's path and lane in, three calls out.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path

import anyio

from queuectl.errors import StoreError
from queuectl.storage.sqlite.lane import Lane
from queuectl.storage.sqlite.schema import translate_errors

logger = logging.getLogger(__name__)

#: After this many writes of the lane, a passive checkpoint, about as often as SQLite's own
#: would run (every ~1,000 WAL pages: a job's result and next claim write six or seven).
CHECKPOINT_EVERY = 150
#: How often, at most, the WAL's size is checked after recording a result. After a checkpoint
#: that a reader blocked, the wait doubles up to ``CHECK_MAX_SECONDS``: a reader that never lets
#: go must not hold up every writer again and again.
CHECK_SECONDS = 1.0
CHECK_MAX_SECONDS = 60.0
#: SQLite checkpoints the WAL by itself after commits once it holds 1,000 pages (~4 MiB); past
#: this size (~35 MiB took 3,000 jobs under a busy reader in tests/test_faults_sqlite.py) the
#: keeper forces a checkpoint that waits for readers.
WAL_LIMIT_BYTES = 16 * 1024 * 1024
#: How long that checkpoint may wait for readers. Writers wait meanwhile (it holds the write
#: lock), well within their busy timeout; a reader needs two transitions between transactions.
WAL_CHECKPOINT_WAIT_SECONDS = 1.0


class WalKeeper:
    """Checkpoints for one store: counts the lane's writes, and checks the WAL after results."""

    def __init__(self, path: Path, lane: Lane) -> None:
        self._path = path
        self._lane = lane
        self._writes = 0  # by the lane, since the last checkpoint
        self._checkpoint: asyncio.Task[None] | None = None
        self._check_at = 0.0  # time.monotonic(): maintenance cadence, not job time
        self._check_every = CHECK_SECONDS

    def wrote(self) -> None:
        """The lane committed a write: every ``CHECKPOINT_EVERY``, a checkpoint in the background."""
        self._writes += 1
        if self._writes >= CHECKPOINT_EVERY and (self._checkpoint is None or self._checkpoint.done()):
            self._writes = 0
            self._checkpoint = asyncio.get_running_loop().create_task(
                self._passive_checkpoint(), name="queuectl-sqlite-checkpoint"
            )

    async def after_result(self) -> None:
        """Shrink the WAL if it outgrew ``WAL_LIMIT_BYTES`` (checked at most every so often).

        Called after recording a result, the write every job makes, as SQLite runs its own
        checkpoints after commits. Never raises: the result is already recorded.
        """
        if time.monotonic() < self._check_at:
            return
        self._check_at = float("inf")  # one check at a time in this process
        completed: bool | None = False
        try:
            completed = await anyio.to_thread.run_sync(shrink_wal, self._path)
        except StoreError as error:
            logger.warning("could not checkpoint the WAL: %s", error)
        finally:
            if completed is False:
                self._check_every = min(self._check_every * 2, CHECK_MAX_SECONDS)
            else:
                self._check_every = CHECK_SECONDS
            self._check_at = time.monotonic() + self._check_every

    async def close(self) -> None:
        """Wait for a checkpoint still running."""
        if self._checkpoint is not None:
            await asyncio.gather(self._checkpoint, return_exceptions=True)

    async def _passive_checkpoint(self) -> None:
        def checkpoint(connection: sqlite3.Connection) -> None:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

        try:
            with translate_errors(self._path):
                await self._lane.run_in_thread(checkpoint)
        except StoreError as error:  # the next one tries again; the WAL is bounded anyway
            logger.warning("could not checkpoint the WAL: %s", error)


def shrink_wal(path: Path) -> bool | None:
    """If the WAL outgrew ``WAL_LIMIT_BYTES``, copy it into the database and truncate it.

    Returns ``None`` when it was small enough, else whether the checkpoint completed
    (``False``: a reader stayed in the WAL for the whole wait).
    """
    try:
        if path.with_name(path.name + "-wal").stat().st_size <= WAL_LIMIT_BYTES:
            return None
    except FileNotFoundError:
        return None
    with translate_errors(path):
        connection = sqlite3.connect(path, timeout=WAL_CHECKPOINT_WAIT_SECONDS, isolation_level=None)
        try:
            (blocked, _, _) = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            connection.close()
    return not blocked
