"""One job in full, as ``show`` prints it: every field, its history of attempts, then its output."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click

from queuectl.cli.formatting import (
    Painted,
    Term,
    listing,
    print_json,
    relative,
    short_time,
    span,
    state_cell,
    table,
)
from queuectl.config import format_setting
from queuectl.display import printable
from queuectl.models import SUMMARY_FIELDS, AttemptRecord, Job


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
