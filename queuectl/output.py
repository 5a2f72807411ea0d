"""How an attempt's output is kept: the head and the tail of each stream, and a line between them.

Within ``output_limit`` bytes a stream keeps its first half and its last half; when more was
written, one line between them says how many bytes were left out, so that a truncated log can
be told from a short one. The runner writes that form (``join``); ``logs`` and followers read it
back (``parse``).
"""

from __future__ import annotations

import re

from queuectl.records import Record, record

__all__ = ("Kept", "head_size", "join", "left_out_line", "parse")

_MARKER = re.compile(rb"\n\[queuectl: (\d+) bytes left out\]\n")


def head_size(limit: int) -> int:
    """How many of ``limit`` bytes go to a stream's head; the rest are its tail."""
    return limit // 2


def left_out_line(count: int) -> bytes:
    """The line between head and tail (its own line, whatever the head ends with)."""
    return b"\n[queuectl: %d bytes left out]\n" % count


def join(head: bytes, left_out: int, tail: bytes) -> bytes:
    """What is kept of a stream: ``head``, the line saying ``left_out`` bytes are missing, ``tail``."""
    if left_out <= 0:
        return head + tail
    return head + left_out_line(left_out) + tail


@record
class Kept(Record):
    """A kept stream read back: ``total`` is how many bytes the command wrote in all."""

    head: bytes
    left_out: int
    tail: bytes

    @property
    def total(self) -> int:
        return len(self.head) + self.left_out + len(self.tail)

    def after(self, offset: int) -> tuple[bytes, int, bytes]:
        """What a reader that has the first ``offset`` bytes of the stream still lacks: the rest
        of the head, how many bytes after it were left out (0: none), then the tail's part."""
        tail_start = len(self.head) + self.left_out
        if offset >= tail_start:
            return b"", 0, self.tail[offset - tail_start :]
        if offset >= len(self.head):
            return b"", tail_start - offset, self.tail
        return self.head[offset:], self.left_out, self.tail


def parse(data: bytes) -> Kept:
    """Read back what ``join`` made; output without the line is all head."""
    found = _MARKER.search(data)
    if found is None:
        return Kept(head=data, left_out=0, tail=b"")
    return Kept(head=data[: found.start()], left_out=int(found[1]), tail=data[found.end() :])
