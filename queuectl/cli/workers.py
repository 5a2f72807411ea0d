"""The ``worker`` group: ``worker list`` and ``worker stop`` (``worker start`` lives in worker_start)."""

from __future__ import annotations

import click

from queuectl.cli import render
from queuectl.cli.run import examples, json_option, with_queue
from queuectl.cli.worker_start import start_command


@click.group("worker")
def worker() -> None:
    """Run, list and stop worker processes."""


worker.add_command(start_command, "start")


@worker.command("list", epilog=examples("queuectl worker list", "queuectl worker list --json"))
@json_option
def worker_list(as_json: bool) -> None:
    """Live workers: id, host, pid, started, last heartbeat, jobs running."""
    render.workers(with_queue(lambda q: q.workers()), as_json=as_json)


@worker.command("stop", epilog=examples("queuectl worker stop", "queuectl worker stop --json"))
@json_option
def worker_stop(as_json: bool) -> None:
    """Ask every live worker of this store to stop gracefully.

    Workers claim nothing new, let running jobs finish within their grace
    period, and exit. Prints how many workers were asked.
    """
    asked = with_queue(lambda q: q.stop_workers())
    if as_json:
        render.print_json({"asked": asked})
    else:
        click.echo(f"asked {asked} worker{'' if asked == 1 else 's'} to stop")
