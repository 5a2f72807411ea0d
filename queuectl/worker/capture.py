"""What the runner keeps of a command's output as it arrives: the head and tail of each stream.

``Capture`` is the asyncio protocol of the command's pipes and process: it keeps the first and
the last bytes of stdout and stderr within the limit (in the form ``queuectl.output`` reads
back), hands each new piece of output to ``on_output`` if one is given, and tells when the
shell exited and when its pipes closed. No reader tasks, no StreamReader: data is added as it
arrives, in the loop's own callbacks. Of queuectl, like the runner, it imports only ``output``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from queuectl.output import head_size, join

__all__ = ("Capture", "resolve")


class _Kept:
    """What is kept of one stream: its first ``head_size(limit)`` bytes, its last bytes up to
    ``limit`` in all, and how many it had in all."""

    __slots__ = ("head", "head_limit", "tail", "tail_limit", "total")

    def __init__(self, limit: int) -> None:
        self.head_limit = head_size(limit)
        self.tail_limit = limit - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            if len(data) <= room:
                self.head += data
                return
            self.head += data[:room]
            data = data[room:]
        limit = self.tail_limit
        if len(data) >= limit:  # also covers limit 0, where data[-0:] would keep everything
            self.tail[:] = data[len(data) - limit :]
            return
        tail = self.tail
        tail += data
        excess = len(tail) - limit
        if excess > 0:
            del tail[:excess]

    def kept(self) -> bytes:
        if not self.total or self.head_limit + self.tail_limit == 0:
            return b""  # a limit of 0 keeps nothing, not even the line saying so
        return join(bytes(self.head), self.total - len(self.head) - len(self.tail), bytes(self.tail))


class Capture(asyncio.SubprocessProtocol):
    """Keeps the head and tail of stdout and stderr, hands new output on (``on_output``), and tells
    when the shell exited and the pipes closed."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        limit: int,
        on_output: Callable[[int, int, bytes], None] | None,
    ) -> None:
        self._loop = loop
        self._limit = limit
        self._kept: dict[int, _Kept] = {}  # by fd, made with a stream's first data: most print little
        self.on_output = on_output
        self.has_exited = False
        self.stopped_for: str | None = None  # the reason a stop was asked for, once it was acted on
        self.exited: asyncio.Future[None] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()
        self._open_pipes = 2

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        kept = self._kept.get(fd)
        if kept is None:
            kept = self._kept[fd] = _Kept(self._limit)
        if self.on_output is not None:
            self.on_output(fd, kept.total, data)
        kept.add(data)

    def kept(self, fd: int) -> bytes:
        """What is kept of stream ``fd`` (1 or 2), in ``queuectl.output``'s form."""
        kept = self._kept.get(fd)
        return b"" if kept is None else kept.kept()

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open_pipes -= 1
        if self._open_pipes == 0:
            resolve(self.eof)

    def process_exited(self) -> None:
        self.has_exited = True
        resolve(self.exited)

    def exit_waiter(self) -> asyncio.Future[None]:
        """The future of the shell's exit; a fresh one if a cancelled await took the old one with it."""
        if self.exited.cancelled():
            self.exited = self._loop.create_future()
            if self.has_exited:
                self.exited.set_result(None)
        return self.exited


def resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
