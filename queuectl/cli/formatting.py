"""The shapes human output takes, shared by every command that prints: for a terminal or a pipe.

Where output goes (``Term``: a terminal's width and colours, or stable text for a pipe), times
(ISO-8601 to the second, or relative: ``2m ago``), job ids cut to a unique prefix, states in
colour, and the two layouts, tables and ``key  value`` listings, whose text is escaped
(``display``). ``render`` says what goes in them; the conventions are in its docstring.
``now`` and ``stdout_is_terminal`` are what tests replace to fake a clock and a terminal: here,
where ``Term`` and the commands read them (``render`` only re-exports them).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import click

from queuectl.config import format_setting
from queuectl.display import one_line, printable, shorten
from queuectl.models import JobState, isoformat

#: The least a table's last column (a command, an error) is cut to on a terminal before the
#: other columns that may be cut are.
MIN_FLEX_WIDTH = 16
#: The least a column is cut to: a character and the ellipsis.
MIN_CUT_WIDTH = 4
#: Shown job ids are at least this long, as git's short commit ids (and longer where needed).
SHORT_ID = 8
#: Ids this short are shown whole: a prefix would save little, and they are often chosen by people.
WHOLE_ID = 16
#: An id a table on a terminal shows whole (one that needs all of itself to be told apart) is
#: cut, with ``...``, only past this many characters, and only when nothing else fits.
ID_CUT_WIDTH = 24

#: Each state's colour on a terminal; ``pending`` keeps the terminal's own.
STATE_COLOURS: dict[JobState, str] = {
    JobState.PROCESSING: "cyan",
    JobState.COMPLETED: "green",
    JobState.FAILED: "yellow",
    JobState.DEAD: "red",
    JobState.CANCELLED: "magenta",
}


def print_json(data: Any) -> None:
    """The one JSON document a ``--json`` command prints (ASCII-safe, so any terminal takes it)."""
    click.echo(json.dumps(data, indent=2, allow_nan=False))


def note(message: str) -> None:
    """A message for people, on stderr."""
    click.echo(message, err=True)


# --- where the output goes --------------------------------------------------------------------


def now() -> datetime:
    """The time relative times are from (tests replace this)."""
    return datetime.now(UTC)


def stdout_is_terminal() -> bool:
    """Whether stdout is a terminal: output for people, not for a pipe (tests replace this)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


class Term:
    """How human output is shaped: for a terminal, or as stable text for a pipe.

    ``width`` is the terminal's columns (``None`` on a pipe: nothing is cut); ``colour`` is off on
    a pipe, with ``NO_COLOR`` set (https://no-color.org) and on a ``TERM=dumb`` terminal.
    """

    __slots__ = ("colour", "now", "width")

    def __init__(self, *, width: int | None, colour: bool, at: datetime | None = None) -> None:
        self.width = width
        self.colour = colour
        self.now = at or now()  # relative times are from here

    @classmethod
    def detect(cls) -> Term:
        if not stdout_is_terminal():
            return cls(width=None, colour=False)
        colour = not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        return cls(width=shutil.get_terminal_size().columns, colour=colour)

    @property
    def terminal(self) -> bool:
        return self.width is not None

    def when(self, moment: datetime | None) -> str:
        """A time: relative on a terminal (``2m ago``, ``in 5s``), else ISO-8601 to the second."""
        if moment is None:
            return "-"
        return relative(moment, self.now) if self.terminal else short_time(moment)

    def paint(self, text: str, colour: str | None) -> str:
        return click.style(text, fg=colour) if colour and self.colour else text

    def echo(self, line: str) -> None:
        # color=: our own decision, not click's guess (which would also strip on a pipe).
        click.echo(line, color=self.colour)


class Painted:
    """A table cell shown in a colour on a terminal (padded first, so widths stay right)."""

    __slots__ = ("colour", "text")

    def __init__(self, text: str, colour: str | None) -> None:
        self.text = text
        self.colour = colour


def state_cell(state: JobState) -> Painted:
    return Painted(state.value, STATE_COLOURS.get(state))


# --- times ------------------------------------------------------------------------------------


def short_time(moment: datetime | None) -> str:
    """UTC ISO-8601 to the second, for tables; ``-`` for none."""
    text = isoformat(moment)
    if text is None:
        return "-"
    head, dot, _ = text.partition(".")
    return f"{head}Z" if dot else text


def relative(moment: datetime, now: datetime) -> str:
    """``now``, ``in 5s``, ``2m ago``, ``3h ago``, ``in 4d``, ``2y ago``: one unit, rounded down."""
    seconds = (moment - now).total_seconds()
    if abs(seconds) < 1:
        return "now"
    text = compact(abs(seconds))
    return f"in {text}" if seconds > 0 else f"{text} ago"


_COMPACT_UNITS = (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("m", 60))


def compact(seconds: float) -> str:
    """A span in its largest unit, rounded down: ``5s``, ``2m``, ``3h``, ``4d``, ``2y``."""
    for unit, size in _COMPACT_UNITS:
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def span(seconds: float) -> str:
    """How long an attempt took: ``0.04s``, ``12.5s``, ``2m05s``, ``1h02m``, ``3d04h``."""
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    big, size, small, small_size = next(units for units in _SPAN_UNITS if whole >= units[1])
    return f"{whole // size}{big}{whole % size // small_size:02d}{small}"


_SPAN_UNITS = (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1))


# --- tables -----------------------------------------------------------------------------------


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Painted):
        return value.text
    if isinstance(value, datetime):
        return short_time(value)
    if isinstance(value, float):
        return format_setting(value)
    return printable(str(value))


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    term: Term | None = None,
    shrink: Mapping[int, int] | None = None,
    indent: str = "",
) -> None:
    """Columns separated by two spaces; the last one is not padded.

    On a terminal the lines fit its width: the last column is cut first (to ``MIN_FLEX_WIDTH``),
    then the columns ``shrink`` names (index -> the least width), widest first. Into a pipe
    nothing is cut. Text is escaped (``display``): a command cannot break a line or the terminal.
    """
    term = term or Term.detect()
    values = [list(row) for row in rows]
    last = len(headers) - 1
    texts = [[_text(value, term.width) for value in row] for row in values]
    widths = [max([len(header), *(len(row[i]) for row in texts)]) for i, header in enumerate(headers)]
    if term.width is not None:
        least = {i: max(width, len(headers[i])) for i, width in (shrink or {}).items()}
        _fit(widths, term.width - 1 - len(indent), least)  # -1: no line ends in the last column
    # Only the last header can be too wide (a column is cut to no less than its header), on a
    # terminal too narrow for the rest.
    lines: list[tuple[list[str], list[Any]]] = [
        ([_cut(h, h, widths[i], term.width) for i, h in enumerate(headers)], list(headers))
    ]
    lines += [
        (
            [
                _cut(text, value, widths[i], term.width)
                for i, (text, value) in enumerate(zip(row, raw, strict=True))
            ],
            raw,
        )
        for row, raw in zip(texts, values, strict=True)
    ]
    for cells, raw in lines:
        parts = [
            term.paint(text.ljust(widths[i]) if i < last else text, _colour(raw[i]))
            for i, text in enumerate(cells)
        ]
        term.echo(indent + "  ".join(parts))


def _text(value: Any, width: int | None) -> str:
    if isinstance(value, str) and width is not None:
        return one_line(value, width)  # bounded work, however long a command is
    return cell(value)


def _cut(text: str, value: Any, width: int, terminal: int | None) -> str:
    if terminal is None or len(text) <= width:
        return text
    if isinstance(value, str):  # untrusted text: escaped and cut, never mid-escape
        return one_line(value, width)
    return shorten(text, width)


def _colour(value: Any) -> str | None:
    return value.colour if isinstance(value, Painted) else None


def _fit(widths: list[int], room: int, shrink: Mapping[int, int]) -> None:
    """Narrow ``widths`` (in place) until the columns and their gaps fit in ``room``.

    ``shrink``: the columns that may be cut, each to its least width.
    """
    over = sum(widths) + 2 * (len(widths) - 1) - room
    if over <= 0:
        return
    last = len(widths) - 1
    cut = min(over, max(widths[last] - MIN_FLEX_WIDTH, 0))
    widths[last] -= cut
    over -= cut
    while over > 0:
        spare = [(widths[i] - least, i) for i, least in shrink.items() if widths[i] > least]
        if not spare:
            break
        _, widest = max(spare)
        widths[widest] -= 1
        over -= 1
    if over > 0:  # a very narrow terminal: the last column gives what it has left
        widths[last] = min(widths[last], max(widths[last] - over, MIN_CUT_WIDTH))


def listing(pairs: Sequence[tuple[str | Painted, Any]], *, term: Term | None = None) -> None:
    """``key  value`` lines with the values aligned; a list value continues on aligned lines.

    A ``Painted`` key or value is coloured on a terminal.
    """
    term = term or Term.detect()
    width = max(len(cell(key)) for key, _ in pairs)
    for key, value in pairs:
        lines = value if isinstance(value, list) else [value]
        for number, line in enumerate(lines or ["-"]):
            head = term.paint(cell(key).ljust(width), _colour(key)) if number == 0 else " " * width
            term.echo(f"{head}  {term.paint(cell(line), _colour(line))}")


# --- job ids ----------------------------------------------------------------------------------


def common_prefix(one: str, other: str) -> int:
    """How many leading characters ``one`` and ``other`` share."""
    size = min(len(one), len(other))
    for index in range(size):
        if one[index] != other[index]:
            return index
    return size


def id_lengths(ids: Sequence[str]) -> dict[str, int]:
    """Each id's shortest prefix of at least ``SHORT_ID`` characters that no other of ``ids`` starts
    with (an id that is a prefix of another needs all of itself: an exact id wins)."""
    ordered = sorted(set(ids))
    lengths = {}
    for place, job_id in enumerate(ordered):
        # In id order, the ids sharing the longest prefix with this one are its neighbours.
        shared = max(
            (
                common_prefix(job_id, ordered[near])
                for near in (place - 1, place + 1)
                if 0 <= near < len(ordered)
            ),
            default=0,
        )
        lengths[job_id] = max(SHORT_ID, shared + 1)
    return lengths


def kept_whole(job_id: str, length: int) -> bool:
    """Whether ``job_id`` is shown whole: it is short, or its prefix would save little."""
    return len(job_id) <= WHOLE_ID or length >= len(job_id) - 2


def shown_ids(lengths: Mapping[str, int]) -> dict[str, str]:
    """Each id as a table on a terminal shows it, from its prefix's length (``id_lengths``)."""
    return {job_id: job_id if kept_whole(job_id, n) else job_id[:n] for job_id, n in lengths.items()}
