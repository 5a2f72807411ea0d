"""Output: one JSON document with ``--json``, readable tables and listings otherwise.

stdout carries data only; notes for people (``no jobs``) go to stderr. Human output has two
forms. Into a pipe or a file it is stable text for ``grep`` and ``awk``: every column, full ids,
UTC ISO-8601 times to the second, no colour. On a terminal it is for reading: tables fit the
terminal's width (the last column, a command, is cut), job ids are cut to a prefix that is still
unique (as git shows commits), times are relative (``2m ago``, ``in 5s``) and states have
colours (none when ``NO_COLOR`` is set). ``--json`` is always the full data.

Here are the tables of ``list``, ``dlq list``, ``status``, ``worker list`` and ``config show``;
one job's details (``show``) are in ``details``, and the shapes they share (terminal or pipe,
times, ids, colours, tables and listings) in ``formatting``. Commands use them through this
module, but for ``formatting.stdout_is_terminal``: tests replace it there.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from queuectl.cli.details import HISTORY_HEADERS, history, job_details, quantity_text
from queuectl.cli.formatting import (
    ID_CUT_WIDTH,
    MIN_CUT_WIDTH,
    MIN_FLEX_WIDTH,
    SHORT_ID,
    STATE_COLOURS,
    WHOLE_ID,
    Painted,
    Term,
    cell,
    common_prefix,
    compact,
    id_lengths,
    kept_whole,
    listing,
    note,
    now,
    print_json,
    relative,
    short_time,
    shown_ids,
    span,
    state_cell,
    stdout_is_terminal,
    table,
)
from queuectl.config import SETTINGS
from queuectl.models import Job, JobState, QueueStatus, WorkerInfo

__all__ = (
    # the tables of jobs, status, workers and settings: here
    "JOB_HEADERS",
    "ids",
    "jobs",
    "settings",
    "status",
    "workers",
    # one job's details (``details``)
    "HISTORY_HEADERS",
    "history",
    "job_details",
    "quantity_text",
    # shared formatting (``formatting``)
    "ID_CUT_WIDTH",
    "MIN_CUT_WIDTH",
    "MIN_FLEX_WIDTH",
    "SHORT_ID",
    "STATE_COLOURS",
    "WHOLE_ID",
    "Painted",
    "Term",
    "cell",
    "common_prefix",
    "compact",
    "id_lengths",
    "kept_whole",
    "listing",
    "note",
    "now",
    "print_json",
    "relative",
    "short_time",
    "shown_ids",
    "span",
    "state_cell",
    "stdout_is_terminal",
    "table",
)


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
