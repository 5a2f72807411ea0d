"""Whole stores: ``store copy SOURCE TARGET`` (``queuectl.copying`` does the work).

``--db`` plays no part: both stores are named. Counts go to stdout; a progress bar goes to
stderr only when stderr is a terminal, so that a pipe or a log gets nothing but the counts.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import click

from queuectl.cli import render
from queuectl.cli.run import cli_state, examples, json_option

#: How each count reads in the human output.
_LABELS = {
    "jobs": "jobs",
    "outputs": "earlier attempts' outputs",
    "live_output": "live output chunks",
    "dependencies": "dependencies",
    "settings": "settings",
    "queues": "queue settings",
    "schedules": "schedules",
    "finished_counts": "per-minute counts (dashboard)",
}


@click.group("store")
def store() -> None:
    """Copy a whole store into another, SQLite or PostgreSQL."""


@store.command(
    "copy",
    short_help="Copy everything from SOURCE to TARGET, all or nothing.",
    epilog=examples(
        "queuectl store copy queue.db postgresql://db.internal/jobs",
        "queuectl store copy postgresql://db.internal/jobs backup.db --json",
    ),
)
@click.argument("source", metavar="SOURCE")
@click.argument("target", metavar="TARGET")
@json_option
def store_copy(source: str, target: str, as_json: bool) -> None:
    """Copy everything from SOURCE to TARGET: jobs with output and history, settings, queue
    settings and schedules.

    SOURCE and TARGET are store targets (a path, sqlite:///path or postgresql://...). All or
    nothing: TARGET gets everything or no job. SOURCE is only read, and must have no live
    workers; TARGET must hold no job (its settings, queue settings and schedules are replaced).
    """
    import asyncio

    from queuectl.cli.logging_setup import configure_logging
    from queuectl.copying import copy_store

    configure_logging(cli_state().verbose)
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    started = time.monotonic()
    try:
        counts = asyncio.run(copy_store(source, target, progress=bar.update if bar else None))
    finally:
        if bar is not None:
            bar.close()
    if as_json:
        render.print_json(counts)
        return
    width = max(len(f"{count:,}") for count in counts.values())
    for name, count in counts.items():
        click.echo(f"{count:>{width},}  {_LABELS.get(name, name)}")
    click.echo(f"copied in {time.monotonic() - started:.1f} s")


class ProgressBar:
    """``copying jobs [####......] 120,000/1,000,000  54,321 jobs/s`` on one terminal line."""

    WIDTH = 30
    #: Seconds between redraws: a fast copy must not spend its time drawing.
    EVERY = 0.1

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._started = time.monotonic()
        self._drawn = 0.0
        self._visible = False

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._drawn < self.EVERY:
            return
        self._drawn = now
        filled = self.WIDTH * done // total if total else self.WIDTH
        rate = done / max(now - self._started, 1e-3)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self._stream.write(f"\rcopying jobs [{bar}] {done:,}/{total:,}  {rate:,.0f} jobs/s\x1b[K")
        self._stream.flush()
        self._visible = True

    def close(self) -> None:
        if self._visible:
            self._stream.write("\n")
            self._stream.flush()
