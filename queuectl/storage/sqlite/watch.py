"""Noticing commits to a SQLite file by other processes, for idle workers.

``PRAGMA data_version`` changes whenever another connection commits, but asking
costs a few file-lock system calls: polling it every few milliseconds would
burn several percent of a core. So on Linux an inotify watch on the store's
folder says when the file or its WAL was written (no CPU while nothing happens),
and the poll only runs slowly, as a fallback (file systems without inotify).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import sqlite3
import struct
from collections.abc import Callable
from pathlib import Path

from queuectl.storage.sqlite.schema import translate_errors

#: How often to poll ``data_version`` when inotify tells us of changes.
FALLBACK_POLL_SECONDS = 0.1
#: ... and when it cannot (not Linux, or no inotify watches left).
POLL_SECONDS = 0.005
#: A write shows in the WAL file before its commit shows in ``data_version`` (the
#: writer still fsyncs, then publishes the commit): poll fast for a while after one.
AFTER_WRITE_SECONDS = 0.05
AFTER_WRITE_POLL_SECONDS = 0.001

_IN_MODIFY = 0x00000002
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT_HEADER = struct.Struct("iIII")


class _FolderWatch:
    """An inotify watch on one folder, reporting writes to the named files."""

    def __init__(self, folder: Path, names: frozenset[bytes]) -> None:
        self.names = names
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = int(libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        mask = _IN_MODIFY | _IN_MOVED_TO | _IN_CREATE
        if libc.inotify_add_watch(self.fd, os.fsencode(folder), mask) < 0:
            error = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(error, "inotify_add_watch failed")

    def touched(self) -> bool:
        """Read every pending event; whether any was about one of our files."""
        hit = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return hit
            offset = 0
            while offset + _EVENT_HEADER.size <= len(data):
                _, _, _, length = _EVENT_HEADER.unpack_from(data, offset)
                start = offset + _EVENT_HEADER.size
                hit = hit or data[start : start + length].rstrip(b"\0") in self.names
                offset = start + length

    def close(self) -> None:
        os.close(self.fd)


class ChangeWatcher:
    """Wakes waiters when another connection commits, or when ``wake()`` is called."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._version: int | None = None
        self._waiters: dict[asyncio.Future[None], Callable[[], None]] = {}
        self._hot_until = 0.0
        self._folder_watch: _FolderWatch | None = None
        self._reader_loop: asyncio.AbstractEventLoop | None = None
        self._poll_seconds = POLL_SECONDS
        name = os.fsencode(path.name)
        with contextlib.suppress(OSError, AttributeError):
            self._folder_watch = _FolderWatch(path.parent, frozenset({name, name + b"-wal"}))
            self._poll_seconds = FALLBACK_POLL_SECONDS

    def wake(self) -> None:
        """Wake every waiter of this process (a change made here)."""
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Return at the next change, or after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        self._listen(loop)
        waiter: asyncio.Future[None] = loop.create_future()
        deadline = loop.time() + timeout
        timer: asyncio.TimerHandle | None = None

        def poll() -> None:
            nonlocal timer
            if waiter.done():
                return
            try:
                changed = self.changed()
            except Exception as error:  # reported to the waiter, not lost in the loop
                waiter.set_exception(error)
                return
            if changed or loop.time() >= deadline:
                waiter.set_result(None)
                return
            if timer is not None:
                timer.cancel()
            now = loop.time()
            interval = AFTER_WRITE_POLL_SECONDS if now < self._hot_until else self._poll_seconds
            timer = loop.call_at(min(now + interval, deadline), poll)

        self._waiters[waiter] = poll
        try:
            poll()
            await waiter
        finally:
            del self._waiters[waiter]
            if timer is not None:
                timer.cancel()

    def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._folder_watch is None or self._reader_loop is loop:
            return
        self._stop_listening()
        loop.add_reader(self._folder_watch.fd, self._on_folder_event)
        self._reader_loop = loop

    def _on_folder_event(self) -> None:
        assert self._folder_watch is not None and self._reader_loop is not None
        if self._folder_watch.touched():
            self._hot_until = self._reader_loop.time() + AFTER_WRITE_SECONDS
            for poll in list(self._waiters.values()):
                poll()

    def changed(self) -> bool:
        """Whether anyone else committed since the last call (False on the first)."""
        with translate_errors(self.path):
            if self._connection is None:
                self._connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            (version,) = self._connection.execute("PRAGMA data_version").fetchone()
        changed = self._version is not None and version != self._version
        self._version = version
        return changed

    def _stop_listening(self) -> None:
        if self._reader_loop is not None and self._folder_watch is not None:
            with contextlib.suppress(Exception):  # the loop may be closed already
                self._reader_loop.remove_reader(self._folder_watch.fd)
        self._reader_loop = None

    def close(self) -> None:
        self._stop_listening()
        if self._folder_watch is not None:
            self._folder_watch.close()
            self._folder_watch = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None
