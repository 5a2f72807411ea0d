"""A running attempt's output and progress, written to the store while it runs, for followers.

Most jobs end within moments, and those must cost nothing more than a callback per read of their
output: nothing is written for an attempt before it has run ``FIRST_FLUSH`` seconds. From then on
its new output is written every ``FLUSH_EVERY`` seconds, or as soon as ``FLUSH_AT`` bytes are
pending, whichever comes first, one write at a time (``Store.append_output``, which also extends
the lease). Until it is written, output waits here, at most ``keep`` bytes of each stream (the
oldest are dropped: the chunks' offsets tell followers what they missed). One timer of the pool
(``FirstFlushes``) starts the writing of every attempt that ran long enough, rather than a timer
per attempt, which would cost each short job more than all the rest of this module.

Progress: the command may write lines such as ``50%`` or ``3/10`` to the file named by
``$QUEUECTL_PROGRESS`` (``PROGRESS_ENV``), in a directory of the worker's own. The worker never
creates the file; it reads its last line at each flush, writes it with the output when it
changed (``Job.progress``), and removes the file within a poll interval of the attempt's end
(``sweep_progress``); the directory goes when the pool stops.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Container

from queuectl.errors import StoreError
from queuectl.storage.base import Store
from queuectl.worker.slots import Running

__all__ = (
    "FIRST_FLUSH",
    "FLUSH_AT",
    "FLUSH_EVERY",
    "KEEP_FACTOR",
    "PROGRESS_ENV",
    "FirstFlushes",
    "LiveOutput",
    "read_progress",
    "sweep_progress",
)

logger = logging.getLogger(__name__)

#: Seconds an attempt runs before its output is first written for followers.
FIRST_FLUSH = 0.25
#: Seconds between writes after that, at most (while there is something new to write).
FLUSH_EVERY = 0.25
#: Pending bytes that are written at once, without waiting for the next tick.
FLUSH_AT = 16 * 1024
#: The store keeps the last ``KEEP_FACTOR * output_limit`` bytes of each stream for followers.
KEEP_FACTOR = 4
#: The variable that names the progress file.
PROGRESS_ENV = "QUEUECTL_PROGRESS"
#: Bytes read from the end of the progress file, and the longest progress kept (characters).
PROGRESS_READ = 4096
PROGRESS_LENGTH = 200
#: The first flush timer fires at most this often (so the first flush comes up to this late).
FIRST_FLUSH_SLACK = 0.02


class _Pending:
    """One stream's output not yet written: at most ``keep`` bytes, from offset ``at``."""

    __slots__ = ("at", "data")

    def __init__(self, offset: int) -> None:
        self.data = bytearray()
        self.at = offset

    def add(self, data: bytes, keep: int) -> None:
        self.data += data
        self._trim(keep)

    def _trim(self, keep: int) -> None:
        excess = len(self.data) - keep
        if excess > 0:
            del self.data[:excess]
            self.at += excess

    def take(self, stream: int, chunks: list[tuple[int, int, bytes]]) -> None:
        if self.data:
            chunks.append((stream, self.at, bytes(self.data)))
            self.at += len(self.data)
            self.data.clear()

    def give_back(self, offset: int, data: bytes, keep: int) -> None:
        """A chunk that could not be written goes back before what came since (unless ``keep``
        bytes came since: then it is too old to be kept)."""
        if self.data and offset + len(data) != self.at:
            return
        self.data[:0] = data
        self.at = offset
        self._trim(keep)


class LiveOutput:
    """One attempt's live output on its way to the store.

    ``received`` is the runner's ``on_output``. ``FirstFlushes`` starts the writing; ``stop``
    ends it once the command has ended; ``streamed`` says whether anything was written
    (``Outcome.streamed``). Each write the store takes extended the lease (``running``'s deadline
    follows); one it refuses (the claim no longer holds a ``processing`` job: the job was
    cancelled, or the lease lost) ends the writing and goes to ``on_refused``.
    """

    __slots__ = (
        "_done",
        "_err",
        "_flusher",
        "_keep",
        "_lease",
        "_on_refused",
        "_out",
        "_progress",
        "_progress_path",
        "_running",
        "_store",
        "_tick",
        "streamed",
    )

    def __init__(
        self,
        store: Store,
        running: Running,
        *,
        keep: int,
        lease: float,
        progress_path: str | None,
        on_refused: Callable[[Running], Awaitable[object]],
    ) -> None:
        self._store = store
        self._running = running
        self._keep = keep
        self._lease = lease
        self._progress_path = progress_path
        self._on_refused = on_refused
        self._out: _Pending | None = None  # made with the first output: most jobs print little
        self._err: _Pending | None = None
        self._progress: str | None = None  # the last progress written
        self._flusher: asyncio.Task[None] | None = None
        self._tick: asyncio.Event | None = None  # set: flush now
        self._done = False
        self.streamed = False

    def received(self, stream: int, offset: int, data: bytes) -> None:
        """New output of the command (the runner's ``on_output``)."""
        if stream == 1:
            if self._out is None:
                self._out = _Pending(offset)
            self._out.add(data, self._keep)
        else:
            if self._err is None:
                self._err = _Pending(offset)
            self._err.add(data, self._keep)
        if self._tick is not None and self._pending() >= FLUSH_AT:
            self._tick.set()

    def stop(self) -> asyncio.Task[None] | None:
        """Write no more; the write in flight, if any, is the task returned (await it before
        recording the outcome). ``streamed`` then says whether anything was written."""
        self._done = True
        self._out = self._err = None  # not kept while the first flush timer still holds us
        if self._tick is not None:
            self._tick.set()
        return self._flusher

    def go_live(self) -> None:
        """Start writing (``FirstFlushes``), unless the command has ended meanwhile."""
        if not self._done:
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_loop(), name=f"queuectl-live-{self._running.claim.job.id}"
            )

    def _pending(self) -> int:
        return (len(self._out.data) if self._out else 0) + (len(self._err.data) if self._err else 0)

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while await self._flush():
            tick = self._tick = asyncio.Event()
            if self._done or self._pending() >= FLUSH_AT:
                tick.set()
            timer = loop.call_later(FLUSH_EVERY, tick.set)
            try:
                await tick.wait()
            finally:
                timer.cancel()

    async def _flush(self) -> bool:
        """Write what is new; False once done, or refused (nothing more will be written)."""
        if self._done:
            return False
        chunks: list[tuple[int, int, bytes]] = []
        if self._out is not None:
            self._out.take(1, chunks)
        if self._err is not None:
            self._err.take(2, chunks)
        progress = None
        if self._progress_path is not None:
            latest = read_progress(self._progress_path)
            if latest is not None and latest != self._progress:
                progress = latest
        if not chunks and progress is None:
            return True
        self.streamed = True
        claim = self._running.claim
        asked_at = time.monotonic()
        try:
            written = await self._store.append_output(
                claim, chunks, progress=progress, keep=self._keep, lease=self._lease
            )
        except StoreError as exc:
            logger.debug("could not write the output of %s for followers: %s", claim.job.id, exc)
            self._give_back(chunks)
            return True
        if not written:
            await self._on_refused(self._running)
            return False
        if progress is not None:
            self._progress = progress
        running = self._running
        running.lease_deadline = max(running.lease_deadline, asked_at + self._lease)
        return True

    def _give_back(self, chunks: list[tuple[int, int, bytes]]) -> None:
        for stream, offset, data in chunks:
            pending = self._out if stream == 1 else self._err
            if pending is not None:
                pending.give_back(offset, data, self._keep)


class FirstFlushes:
    """One timer for every attempt's first flush, ``FIRST_FLUSH`` seconds after its start.

    All attempts wait the same time, so they come due in the order they started: a queue, whose
    head's due time the timer is set for (and at most every ``FIRST_FLUSH_SLACK`` seconds, so
    that a fast stream of short jobs does not make it fire once per job).
    """

    def __init__(self) -> None:
        self._due: collections.deque[tuple[float, LiveOutput]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, live: LiveOutput) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + FIRST_FLUSH
        self._due.append((due, live))
        if self._timer is None:
            self._timer = loop.call_at(due, self._fire)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = self._due
        while due and due[0][0] <= now:
            due.popleft()[1].go_live()
        self._timer = None
        if due:
            self._timer = loop.call_at(max(due[0][0], now + FIRST_FLUSH_SLACK), self._fire)


def read_progress(path: str) -> str | None:
    """The last non-blank line of the progress file (at most ``PROGRESS_LENGTH`` characters, from
    its last ``PROGRESS_READ`` bytes); None if there is none or no file."""
    try:
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - PROGRESS_READ))
            data = file.read(PROGRESS_READ)
    except OSError:
        return None
    for line in reversed(data.splitlines()):
        text = line.decode("utf-8", errors="replace").strip()
        if text:
            return "".join(char for char in text if char.isprintable())[:PROGRESS_LENGTH] or None
    return None


def sweep_progress(directory: str, running: Container[str]) -> None:
    """Remove the progress files (named by claim tokens) of the attempts no longer ``running``.

    Done a poll interval rather than as each attempt ends: a system call per job is a cost
    most jobs, which write no progress, would pay for nothing.
    """
    try:
        with os.scandir(directory) as entries:
            ended = [entry.path for entry in entries if entry.name not in running]
    except OSError:
        return
    for path in ended:
        with contextlib.suppress(OSError):
            os.unlink(path)
