"""Job commands that read: status, list, show, logs (``enqueue`` has its own module)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from queuectl.cli.run import examples, json_option, with_queue
from queuectl.models import JobState

if TYPE_CHECKING:
    from queuectl.models import Job
    from queuectl.queue import Queue

DEFAULT_LIMIT = 100


limit_option = click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="Show at most this many jobs; 0 shows all.",
)
STATE_CHOICE = click.Choice([state.value for state in JobState])


async def page_of_jobs(
    queue: Queue, *, states: Sequence[JobState] = (), queues: Sequence[str] = (), limit: int
) -> tuple[list[Job], int]:
    """Up to ``limit`` jobs (0: all), newest first, and how many match in all.

    The count is one more query, made only when the page is full: only then can there be more.
    """
    jobs = await queue.list_jobs(state=states, queue=queues, limit=limit or None)
    if not limit or len(jobs) < limit:
        return jobs, len(jobs)
    return jobs, max(await queue.count_matching(state=states, queue=queues), len(jobs))


@click.command(
    "status",
    epilog=examples("queuectl status", "queuectl --db postgresql://host/queue status --json"),
)
@json_option
def status(as_json: bool) -> None:
    """Job counts per state, live workers, next run."""
    from queuectl.cli import render  # tables and JSON: only for commands that print them

    render.status(with_queue(lambda q: q.status()), as_json=as_json)


@click.command(
    "list",
    epilog=examples(
        "queuectl list --state failed --state dead",
        "queuectl list --queue nightly --limit 0 --json",
    ),
)
@click.option(
    "--state", "states", type=STATE_CHOICE, multiple=True, help="Only jobs in this state; repeatable."
)
@click.option("--queue", "queues", metavar="NAME", multiple=True, help="Only jobs of this queue; repeatable.")
@limit_option
@json_option
def list_jobs(states: tuple[str, ...], queues: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Jobs, newest first."""
    job_states = [JobState(state) for state in dict.fromkeys(states)]
    names = list(dict.fromkeys(queues))
    jobs, total = with_queue(lambda q: page_of_jobs(q, states=job_states, queues=names, limit=limit))
    from queuectl.cli import render  # tables and JSON: only for commands that print them

    render.jobs(jobs, as_json=as_json, total=total)


@click.command("show", epilog=examples("queuectl show ID", "queuectl show ID --json"))
@click.argument("job_id", metavar="ID")
@json_option
def show(job_id: str, as_json: bool) -> None:
    """One job: every field, and its latest attempt's output."""
    from queuectl.cli import render  # tables and JSON: only for commands that print them

    render.job_details(with_queue(lambda q: q.get(job_id)), as_json=as_json)


@click.command("logs", epilog=examples("queuectl logs ID", "queuectl logs ID > out.txt 2> err.txt"))
@click.argument("job_id", metavar="ID")
@json_option
def logs(job_id: str, as_json: bool) -> None:
    """Print a job's output: stdout to stdout, stderr to stderr.

    The output of the latest attempt, byte for byte. Only the tail is kept
    (config `output_limit`, 64 KiB by default). With --json, prints
    {"id", "stdout", "stderr"} as text, undecodable bytes replaced.
    A job that has not run yet, or is running, prints nothing on stdout
    and says so on stderr.
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
    else:
        for stream, data in ((sys.stdout, job.stdout), (sys.stderr, job.stderr)):
            stream.flush()
            stream.buffer.write(data)
            stream.buffer.flush()
    notice = _logs_notice(job)
    if notice is not None:
        click.echo(f"queuectl: {notice}", err=True)


def _logs_notice(job: Job) -> str | None:
    """Why ``logs`` shows no output, or not the running attempt's; None when it shows that."""
    ran = job.finished_at is not None  # an attempt ended and its output was kept
    if job.state is JobState.PROCESSING:
        shown = " (shown: its previous attempt's)" if ran else ""
        return f"job {job.id} is running; its output appears when the attempt ends{shown}"
    if not ran:
        return f"job {job.id} has not run yet ({job.state.value})"
    return None
