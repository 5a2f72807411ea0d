"""Untrusted text shown to people: control characters escaped, long text shortened.

A job's command is whatever its author wrote: newlines, an escape sequence that clears the
screen, 100 KB of shell. Wherever queuectl shows one (``queuectl list``, the worker's log lines),
it goes through here, so that it stays one readable line. Plain code without imports of
queuectl: the library uses it as well as the command line.
"""

from __future__ import annotations

__all__ = ("ELLIPSIS", "LOG_WIDTH", "OneLine", "in_words", "quantity", "one_line", "printable", "shorten")

ELLIPSIS = "..."

#: The most characters of a command a log line shows.
LOG_WIDTH = 200


def printable(text: str, *, keep: str = "") -> str:
    """``text`` with control and unprintable characters escaped (``\\n``, ``\\x1b``, ``\\ud800``).

    Characters in ``keep`` (``"\\t"``, say) are left as they are.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in keep else repr(ch)[1:-1] for ch in text)


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the last three of them ``...`` when it was longer."""
    if len(text) <= width:
        return text
    return text[: max(width - len(ELLIPSIS), 0)] + ELLIPSIS


def one_line(text: str, width: int = LOG_WIDTH) -> str:
    """``text`` escaped and shortened to ``width`` characters, never cutting an escape in two.

    The work is bounded by ``width``, however long ``text`` is.
    """
    head = text[: width + 1]
    if head.isprintable():
        return shorten(head, width)
    pieces = [ch if ch.isprintable() else repr(ch)[1:-1] for ch in head]
    if len(text) <= width and sum(map(len, pieces)) <= width:
        return "".join(pieces)
    room = width - len(ELLIPSIS)
    kept = []
    for piece in pieces:
        room -= len(piece)
        if room < 0:
            break
        kept.append(piece)
    return "".join(kept) + ELLIPSIS


class OneLine:
    """A log argument that becomes ``one_line(text)`` only when a record is formatted.

    ``logger.info("... %s", OneLine(command))`` costs nothing more while INFO is off.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return one_line(self.text)

    def __repr__(self) -> str:
        return repr(one_line(self.text))


_UNITS = (
    ("year", 365 * 86400),
    ("day", 86400),
    ("hour", 3600),
    ("minute", 60),
    ("second", 1),
)


def in_words(seconds: float) -> str:
    """A rough span of time for people: ``3 years``, ``2 days 4 hours``, ``1 hour 30 minutes``.

    The largest unit, and the next one down when it counts (not beside years); at least a second.
    """
    whole = max(round(seconds), 1 if seconds > 0 else 0)
    for index, (name, size) in enumerate(_UNITS):
        if whole >= size or size == 1:
            count, rest = divmod(whole, size)
            text = quantity(count, name)
            if name in ("year", "second"):
                return text
            next_name, next_size = _UNITS[index + 1]
            extra = rest // next_size
            return f"{text} {quantity(extra, next_name)}" if extra else text
    raise AssertionError("unreachable")  # pragma: no cover


def quantity(count: int, noun: str) -> str:
    """``1 job``, ``2 jobs``: a count and a noun that takes an ``s`` in the plural."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
