"""Job commands that read: status, list, show, logs (``enqueue`` has its own module)."""

from __future__ import annotations

import sys

import click

from queuectl.cli.run import json_option, with_queue
from queuectl.models import JobState

DEFAULT_LIMIT = 100


limit_option = click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="Show at most this many jobs; 0 shows all.",
)
STATE_CHOICE = click.Choice([state.value for state in JobState])


@click.command("status")
@json_option
def status(as_json: bool) -> None:
    """Job counts per state, live workers, next run."""
    from queuectl.cli import render  # tables and JSON: only for commands that print them

    render.status(with_queue(lambda q: q.status()), as_json=as_json)


@click.command("list")
@click.option("--state", type=STATE_CHOICE, help="Only jobs in this state.")
@click.option("--queue", metavar="NAME", help="Only jobs of this queue.")
@limit_option
@json_option
def list_jobs(state: str | None, queue: str | None, limit: int, as_json: bool) -> None:
    """Jobs, newest first."""
    job_state = JobState(state) if state is not None else None
    jobs = with_queue(lambda q: q.list_jobs(state=job_state, queue=queue, limit=limit or None))
    from queuectl.cli import render  # tables and JSON: only for commands that print them

    render.jobs(jobs, as_json=as_json)


@click.command("show")
@click.argument("job_id", metavar="ID")
@json_option
def show(job_id: str, as_json: bool) -> None:
    """One job: every field, and its latest attempt's output."""
    from queuectl.cli import render  # tables and JSON: only for commands that print them

    render.job_details(with_queue(lambda q: q.get(job_id)), as_json=as_json)


@click.command("logs")
@click.argument("job_id", metavar="ID")
@json_option
def logs(job_id: str, as_json: bool) -> None:
    """Print a job's output: stdout to stdout, stderr to stderr.

    The output of the latest attempt, byte for byte. Only the tail is kept
    (config `output_limit`, 64 KiB by default). With --json, prints
    {"id", "stdout", "stderr"} as text, undecodable bytes replaced.
    """
    job = with_queue(lambda q: q.get(job_id))
    if as_json:
        from queuectl.cli import render  # tables and JSON: only for commands that print them

        render.print_json(
            {
                "id": job.id,
                "stdout": job.stdout.decode("utf-8", errors="replace"),
                "stderr": job.stderr.decode("utf-8", errors="replace"),
            }
        )
        return
    for stream, data in ((sys.stdout, job.stdout), (sys.stderr, job.stderr)):
        stream.flush()
        stream.buffer.write(data)
        stream.buffer.flush()
