"""The dead-letter queue: ``dlq list`` and ``dlq retry``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from queuectl.cli import formatting, render
from queuectl.cli.jobs import limit_option, listed_jobs
from queuectl.cli.run import examples, json_option, with_queue
from queuectl.models import JobState

if TYPE_CHECKING:
    from queuectl.models import Job
    from queuectl.queue import Queue


@click.group("dlq")
def dlq() -> None:
    """The dead-letter queue: jobs whose retries ran out."""


@dlq.command("list", epilog=examples("queuectl dlq list", "queuectl dlq list --limit 0 --json"))
@limit_option
@json_option
def dlq_list(limit: int, as_json: bool) -> None:
    """Dead jobs, newest first (the same as `list --state dead`)."""
    terminal = not as_json and formatting.stdout_is_terminal()
    jobs, total, shown = with_queue(
        lambda q: listed_jobs(q, states=[JobState.DEAD], limit=limit, terminal=terminal)
    )
    render.jobs(jobs, as_json=as_json, empty="the dead-letter queue is empty", total=total, short_ids=shown)


@dlq.command(
    "retry",
    epilog=examples("queuectl dlq retry ID1 ID2", "queuectl dlq retry --all"),
)
@click.argument("job_ids", metavar="[ID]...", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Retry every dead job.")
@json_option
def dlq_retry(job_ids: tuple[str, ...], retry_all: bool, as_json: bool) -> None:
    """Put dead jobs back to pending with attempts 0; print their ids.

    All or nothing: if any ID is unknown or not dead, no job changes. An ID may be
    a prefix of at least 6 characters that no other id starts with.
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

        async def retry(queue: Queue) -> list[Job]:
            ids = await queue.resolve_ids(list(dict.fromkeys(job_ids)))
            return await queue.retry_dead(list(dict.fromkeys(ids)))

        jobs = with_queue(retry)
    render.ids(jobs, as_json=as_json)
