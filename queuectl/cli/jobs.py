"""Job commands that read: status, list, show (``enqueue`` and ``logs`` have their own modules)."""

from __future__ import annotations

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
#: The most listed ids checked against the store's other ids (one index lookup each) when a
#: terminal shows them short; past these, prefixes unique among the listed ones.
STORE_CHECKED_IDS = 1000
#: Lookups per id before it is shown whole.
_PREFIX_TRIES = 4


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


async def short_ids(queue: Queue, ids: Sequence[str]) -> dict[str, str]:
    """How a table on a terminal shows ``ids``: each cut to a prefix of at least 8 characters
    that names only that job, among the listed ones and in the store (``Queue.resolve_id``
    takes it back), or whole. One lookup per id, rarely more (when the store's ids clash)."""
    from queuectl.cli import render

    lengths = render.id_lengths(ids)
    for job_id in list(lengths)[:STORE_CHECKED_IDS]:
        length = lengths[job_id]
        for _ in range(_PREFIX_TRIES):
            if render.kept_whole(job_id, length):
                break
            found = await _named_by(queue, job_id[:length])
            others = (render.common_prefix(job_id, other) for other in found if other != job_id)
            shared = max(others, default=-1)
            if shared < length:
                break  # no other id starts with this prefix
            length = shared + 1
        else:
            length = len(job_id)
        lengths[job_id] = length
    return render.shown_ids(lengths)


async def _named_by(queue: Queue, prefix: str) -> list[str]:
    """The ids ``prefix`` names (some of them, if many): what ``show PREFIX`` would find."""
    from queuectl.errors import AmbiguousId, JobNotFound

    try:
        return [await queue.resolve_id(prefix)]
    except AmbiguousId as error:
        return list(error.matches)
    except JobNotFound:  # the listed job was deleted meanwhile (purged): nothing to tell apart
        return []


async def listed_jobs(
    queue: Queue, *, states: Sequence[JobState] = (), queues: Sequence[str] = (), limit: int, terminal: bool
) -> tuple[list[Job], int, dict[str, str] | None]:
    """``page_of_jobs``, and how a terminal shows their ids (``None``: not for a terminal)."""
    jobs, total = await page_of_jobs(queue, states=states, queues=queues, limit=limit)
    shown = await short_ids(queue, [job.id for job in jobs]) if terminal else None
    return jobs, total, shown


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
    from queuectl.cli import formatting, render  # tables and JSON: only for commands that print them

    job_states = [JobState(state) for state in dict.fromkeys(states)]
    names = list(dict.fromkeys(queues))
    terminal = not as_json and formatting.stdout_is_terminal()
    jobs, total, shown = with_queue(
        lambda q: listed_jobs(q, states=job_states, queues=names, limit=limit, terminal=terminal)
    )
    render.jobs(jobs, as_json=as_json, total=total, short_ids=shown)


@click.command("show", epilog=examples("queuectl show ID", "queuectl show 3f2a9c1d --json"))
@click.argument("job_id", metavar="ID")
@json_option
def show(job_id: str, as_json: bool) -> None:
    """One job: every field, its attempts and its output.

    ID is a job's id, or a prefix of at least 6 characters that no other id starts with.
    """
    from queuectl.cli import render  # tables and JSON: only for commands that print them

    async def get(queue: Queue) -> Job:
        return await queue.get(await queue.resolve_id(job_id))

    render.job_details(with_queue(get), as_json=as_json)
