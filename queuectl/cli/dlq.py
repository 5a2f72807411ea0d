"""The dead-letter queue: ``dlq list`` and ``dlq retry``."""

from __future__ import annotations

import click

from queuectl.cli import render
from queuectl.cli.jobs import limit_option, page_of_jobs
from queuectl.cli.run import examples, json_option, with_queue
from queuectl.models import JobState


@click.group("dlq")
def dlq() -> None:
    """The dead-letter queue: jobs whose retries ran out."""


@dlq.command("list", epilog=examples("queuectl dlq list", "queuectl dlq list --limit 0 --json"))
@limit_option
@json_option
def dlq_list(limit: int, as_json: bool) -> None:
    """Dead jobs, newest first (the same as `list --state dead`)."""
    jobs, total = with_queue(lambda q: page_of_jobs(q, states=[JobState.DEAD], limit=limit))
    render.jobs(jobs, as_json=as_json, empty="the dead-letter queue is empty", total=total)


@dlq.command(
    "retry",
    epilog=examples("queuectl dlq retry ID1 ID2", "queuectl dlq retry --all"),
)
@click.argument("job_ids", metavar="[ID]...", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Retry every dead job.")
@json_option
def dlq_retry(job_ids: tuple[str, ...], retry_all: bool, as_json: bool) -> None:
    """Put dead jobs back to pending with attempts 0; print their ids.

    All or nothing: if any ID is unknown or not dead, no job changes.
    """
    if retry_all and job_ids:
        raise click.UsageError("give job ids or --all, not both")
    if not retry_all and not job_ids:
        raise click.UsageError("give the ids of dead jobs to retry, or --all")
    if retry_all:
        jobs = with_queue(lambda q: q.retry_all_dead())
        if not jobs and not as_json:
            render.note("the dead-letter queue is empty")
    else:
        ids = list(dict.fromkeys(job_ids))
        jobs = with_queue(lambda q: q.retry_dead(ids))
    render.ids(jobs, as_json=as_json)
