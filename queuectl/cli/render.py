"""Output: one JSON document with ``--json``, readable tables and listings otherwise.

stdout carries data only; notes for people (``no jobs``) go to stderr. Human output has two
forms. Into a pipe or a file it is stable text for ``grep`` and ``awk``: every column, full ids,
UTC ISO-8601 times to the second, no colour. On a terminal it is for reading: tables fit the
terminal's width (the last column, a command, is cut), job ids are cut to a prefix that is still
unique (as git shows commits), times are relative (``2m ago``, ``in 5s``) and states have
colours (none when ``NO_COLOR`` is set). ``--json`` is always the full data.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import click

from queuectl.config import SETTINGS, format_setting
from queuectl.display import one_line, printable, shorten
from queuectl.models import SUMMARY_FIELDS, AttemptRecord, Job, JobState, QueueStatus, WorkerInfo, isoformat

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


# --- jobs -------------------------------------------------------------------------------------

JOB_HEADERS = ("ID", "STATE", "ATTEMPTS", "PRIORITY", "QUEUE", "RUN AT", "COMMAND")


def jobs(
    jobs: Sequence[Job],
    *,
    as_json: bool,
    empty: str = "no jobs",
    total: int | None = None,
    short_ids: Mapping[str, str] | None = None,
) -> None:
    """A table of ``jobs`` (or the JSON array); ``total``: how many matched, when more than shown.

    ``short_ids``: how a terminal shows each id (``jobs.short_ids`` checks them against the
    store); without it, prefixes unique among ``jobs``.
    """
    if as_json:
        print_json([job.to_dict() for job in jobs])
    elif not jobs:
        note(empty)
    else:
        term = Term.detect()
        if term.terminal:
            _terminal_jobs(jobs, term, short_ids or shown_ids(id_lengths([job.id for job in jobs])))
        else:
            _piped_jobs(jobs, term)
    if total is not None and total > len(jobs):
        note(f"showing {len(jobs):,} of {total:,} jobs; use --limit 0 for all")


def _piped_jobs(jobs: Sequence[Job], term: Term) -> None:
    """Every column, full ids and times: what scripts read (a PROGRESS column when a job has one)."""
    progress = any(job.progress is not None for job in jobs)
    headers = [*JOB_HEADERS[:-1], *(["PROGRESS"] if progress else []), JOB_HEADERS[-1]]
    rows = (
        (
            job.id,
            job.state.value,
            job.attempts,
            job.priority,
            job.queue,
            job.run_at,
            *([job.progress] if progress else []),
            job.command,
        )
        for job in jobs
    )
    table(headers, rows, term=term)


def _terminal_jobs(jobs: Sequence[Job], term: Term, short_ids: Mapping[str, str]) -> None:
    """The columns that say something: PRI when a priority is not 0, QUEUE when a queue is not
    ``default``, PROGRESS when a job reports one; short ids and relative times."""
    longest = max(len(short_ids.get(job.id, job.id)) for job in jobs)
    columns: list[tuple[str, Callable[[Job], Any], int | None]] = [
        ("ID", lambda job: short_ids.get(job.id, job.id), min(longest, ID_CUT_WIDTH)),
        ("STATE", lambda job: state_cell(job.state), None),
        ("TRIES", lambda job: job.attempts, None),
    ]
    if any(job.priority for job in jobs):
        columns.append(("PRI", lambda job: job.priority, None))
    if any(job.queue != "default" for job in jobs):
        columns.append(("QUEUE", lambda job: job.queue, 7))
    columns.append(("RUN AT", lambda job: term.when(job.run_at), None))
    if any(job.progress is not None for job in jobs):
        columns.append(("PROGRESS", lambda job: job.progress, 5))
    columns.append(("COMMAND", lambda job: job.command, None))
    shrink = {index: least for index, (_, _, least) in enumerate(columns) if least is not None}
    rows = ([value(job) for _, value, _ in columns] for job in jobs)
    table([name for name, _, _ in columns], rows, term=term, shrink=shrink)


def job_details(job: Job, *, as_json: bool) -> None:
    """Every field of one job, its history, then the output of its latest attempt."""
    if as_json:
        print_json(job.to_dict(with_output=True))
        return
    term = Term.detect()
    pairs: list[tuple[str | Painted, Any]] = [
        (name, _detail(name, value, job, term)) for name, value in _summary_fields(job)
    ]
    pairs.append(("stdout", _size(job.stdout)))
    pairs.append(("stderr", _size(job.stderr)))
    pairs.append(("history", quantity_text(len(job.history), "attempt")))
    listing(pairs, term=term)
    if job.history:
        history(job.history, term)
    for name, data in (("stdout", job.stdout), ("stderr", job.stderr)):
        if data:
            click.echo(f"--- {name} ---")
            text = data.decode("utf-8", errors="replace")
            for line in text.splitlines():
                click.echo(printable(line, keep="\t"))


def _summary_fields(job: Job) -> list[tuple[str, Any]]:
    return [(name, getattr(job, name)) for name in SUMMARY_FIELDS]


def _detail(name: str, value: Any, job: Job, term: Term) -> Any:
    if name == "state":
        return state_cell(job.state)
    if name == "env":
        # The command line shows the values: whoever can read the store can read them anyway.
        return [f"{key}={printable(text)}" for key, text in value.items()] if value else None
    if isinstance(value, datetime):
        text = short_time(value)
        return f"{text} ({relative(value, term.now)})" if term.terminal else text
    if isinstance(value, float):
        return format_setting(value)
    return value


HISTORY_HEADERS = ("#", "OUTCOME", "EXIT", "STARTED", "TOOK", "WORKER", "PID", "ERROR")


def history(entries: Sequence[AttemptRecord], term: Term) -> None:
    """One line per attempt, oldest first, under ``show``'s fields: its number, outcome, exit
    code, start, duration, worker (with its host), the command's pid, and the error."""
    rows = [
        (
            number,
            Painted(entry.outcome.value, _OUTCOME_COLOURS.get(entry.outcome.value)),
            entry.exit_code,
            term.when(entry.started_at),
            _duration(entry),
            _worker(entry),
            entry.pid,
            entry.error,
        )
        for number, entry in enumerate(entries, start=1)
    ]
    # On a terminal a long worker id gives way before the error does.
    table(HISTORY_HEADERS, rows, term=term, shrink={5: 12}, indent="  ")


def _worker(entry: AttemptRecord) -> str | None:
    """The worker's id, which names its host (``host:pid:tag``), else ``id@host``."""
    if entry.host is None or (entry.worker is not None and entry.host in entry.worker):
        return entry.worker
    return f"{entry.worker or '-'}@{entry.host}"


_OUTCOME_COLOURS = {
    "completed": "green",
    "failed": "yellow",
    "timed out": "yellow",
    "could not start": "yellow",
    "lost": "red",
    "stopped": None,
    "cancelled": "magenta",
}


def _duration(entry: AttemptRecord) -> str | None:
    if entry.started_at is None or entry.finished_at is None:
        return None
    return span(max((entry.finished_at - entry.started_at).total_seconds(), 0.0))


def quantity_text(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _size(data: bytes) -> str:
    return f"{len(data)} bytes" if len(data) != 1 else "1 byte"


def ids(jobs: Sequence[Job], *, as_json: bool) -> None:
    """What ``enqueue-file`` and ``dlq retry`` print: ids one per line, or the job objects."""
    if as_json:
        print_json([job.to_dict() for job in jobs])
        return
    if jobs:
        sys.stdout.write("".join(f"{job.id}\n" for job in jobs))  # one write, not one per job


# --- status, workers, settings ----------------------------------------------------------------


def status(status: QueueStatus, *, as_json: bool) -> None:
    if as_json:
        print_json(status.to_dict())
        return
    term = Term.detect()
    pairs: list[tuple[str | Painted, Any]] = [
        (state_cell(state), status.jobs.get(state, 0)) for state in JobState
    ]
    pairs.append(("workers", status.workers))
    pairs.append(("next run", _next_run(status.next_run_at, term)))
    listing(pairs, term=term)


def _next_run(moment: datetime | None, term: Term) -> str:
    if moment is None:
        return "-"
    due = moment <= term.now
    if term.terminal:
        return f"due (since {compact((term.now - moment).total_seconds())})" if due else term.when(moment)
    return f"{short_time(moment)} (due)" if due else short_time(moment)


def workers(workers: Sequence[WorkerInfo], *, as_json: bool) -> None:
    if as_json:
        print_json([info.to_dict() for info in workers])
        return
    if not workers:
        note("no live workers")
        return
    term = Term.detect()
    table(
        ("ID", "HOST", "PID", "STARTED", "HEARTBEAT", "RUNNING"),
        (
            (w.id, w.host, w.pid, term.when(w.started_at), term.when(w.heartbeat_at), w.running)
            for w in workers
        ),
        term=term,
        shrink={0: 12, 1: 8},
    )


def settings(texts: Mapping[str, str]) -> None:
    """The settings as a table: each value as it was given, and what it means."""
    table(("KEY", "VALUE", "MEANING"), ((key, text, SETTINGS[key].help) for key, text in texts.items()))
