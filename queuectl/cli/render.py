"""Output: one JSON document with ``--json``, readable tables and listings otherwise.

stdout carries data only; notes for people (``no jobs``) go to stderr. Every
timestamp is UTC ISO-8601; tables drop the fractional seconds to stay narrow.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import click

from queuectl.config import SETTINGS, format_setting
from queuectl.display import one_line, printable, shorten
from queuectl.models import Job, JobState, QueueStatus, WorkerInfo, isoformat

MIN_FLEX_WIDTH = 20


def print_json(data: Any) -> None:
    """The one JSON document a ``--json`` command prints (ASCII-safe, so any terminal takes it)."""
    click.echo(json.dumps(data, indent=2, allow_nan=False))


def note(message: str) -> None:
    """A message for people, on stderr."""
    click.echo(message, err=True)


def short_time(moment: datetime | None) -> str:
    """UTC ISO-8601 to the second, for tables; ``-`` for none."""
    text = isoformat(moment)
    if text is None:
        return "-"
    head, dot, _ = text.partition(".")
    return f"{head}Z" if dot else text


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return short_time(value)
    if isinstance(value, float):
        return format_setting(value)
    return printable(str(value))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Columns separated by two spaces; the last one is cut to fit a terminal (never a pipe)."""
    values = [list(row) for row in rows]
    texts = [[cell(value) for value in row[:-1]] for row in values]
    widths = [max([len(header), *(len(row[i]) for row in texts)]) for i, header in enumerate(headers[:-1])]
    last_width: int | None = None
    if sys.stdout.isatty():
        used = sum(widths) + 2 * len(widths)
        last_width = max(shutil.get_terminal_size().columns - used - 1, MIN_FLEX_WIDTH)
    lines = [(list(headers[:-1]), headers[-1])]
    for row, text in zip(values, texts, strict=True):
        last = row[-1]
        if last_width is None:
            lines.append((text, cell(last)))
        elif isinstance(last, str):  # untrusted text (a command): escaped and cut, never mid-escape
            lines.append((text, one_line(last, last_width)))
        else:
            lines.append((text, shorten(cell(last), last_width)))
    for head_cells, last_text in lines:
        head = "  ".join(text.ljust(width) for text, width in zip(head_cells, widths, strict=True))
        click.echo(f"{head}  {last_text}" if head else last_text)


def listing(pairs: Sequence[tuple[str, Any]]) -> None:
    """``key  value`` lines with the values aligned."""
    width = max(len(key) for key, _ in pairs)
    for key, value in pairs:
        click.echo(f"{key.ljust(width)}  {cell(value)}")


# --- jobs ---------------------------------------------------------------------------------

JOB_HEADERS = ("ID", "STATE", "ATTEMPTS", "PRIORITY", "QUEUE", "RUN AT", "COMMAND")


def jobs(jobs: Sequence[Job], *, as_json: bool, empty: str = "no jobs", total: int | None = None) -> None:
    """A table of ``jobs`` (or the JSON array); ``total``: how many matched, when more than shown."""
    if as_json:
        print_json([job.to_dict() for job in jobs])
    elif not jobs:
        note(empty)
    else:
        table(
            JOB_HEADERS,
            (
                (job.id, job.state.value, job.attempts, job.priority, job.queue, job.run_at, job.command)
                for job in jobs
            ),
        )
    if total is not None and total > len(jobs):
        note(f"showing {len(jobs):,} of {total:,} jobs; use --limit 0 for all")


def job_details(job: Job, *, as_json: bool) -> None:
    """Every field of one job, then the tails of its latest attempt's output."""
    if as_json:
        print_json(job.to_dict(with_output=True))
        return
    fields = job.to_dict()
    pairs = [(key, _detail_value(value)) for key, value in fields.items()]
    pairs.append(("stdout", _size(job.stdout)))
    pairs.append(("stderr", _size(job.stderr)))
    listing(pairs)
    for name, data in (("stdout", job.stdout), ("stderr", job.stderr)):
        if data:
            click.echo(f"--- {name} ---")
            text = data.decode("utf-8", errors="replace")
            for line in text.splitlines():
                click.echo(printable(line, keep="\t"))


def _detail_value(value: Any) -> Any:
    if isinstance(value, float):
        return format_setting(value)
    return value


def _size(data: bytes) -> str:
    return f"{len(data)} bytes" if len(data) != 1 else "1 byte"


def ids(jobs: Sequence[Job], *, as_json: bool) -> None:
    """What ``enqueue-file`` and ``dlq retry`` print: ids one per line, or the job objects."""
    if as_json:
        print_json([job.to_dict() for job in jobs])
        return
    if jobs:
        sys.stdout.write("".join(f"{job.id}\n" for job in jobs))  # one write, not one per job


# --- status, workers, settings ------------------------------------------------------------


def status(status: QueueStatus, *, as_json: bool) -> None:
    if as_json:
        print_json(status.to_dict())
        return
    pairs: list[tuple[str, Any]] = [(state.value, status.jobs.get(state, 0)) for state in JobState]
    pairs.append(("workers", status.workers))
    next_run = short_time(status.next_run_at)
    if status.next_run_at is not None and status.next_run_at <= datetime.now(UTC):
        next_run += " (due)"
    pairs.append(("next run", next_run))
    listing(pairs)


def workers(workers: Sequence[WorkerInfo], *, as_json: bool) -> None:
    if as_json:
        print_json([info.to_dict() for info in workers])
        return
    if not workers:
        note("no live workers")
        return
    table(
        ("ID", "HOST", "PID", "STARTED", "HEARTBEAT", "RUNNING"),
        ((w.id, w.host, w.pid, w.started_at, w.heartbeat_at, w.running) for w in workers),
    )


def settings(texts: Mapping[str, str]) -> None:
    """The settings as a table: each value as it was given, and what it means."""
    table(("KEY", "VALUE", "MEANING"), ((key, text, SETTINGS[key].help) for key, text in texts.items()))
