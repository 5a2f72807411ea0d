"""Operating jobs: ``cancel``, ``retry`` and ``purge``.

``cancel`` and ``retry`` take job ids (prefixes too) or, in bulk, filters (``--state``,
``--queue``); ``--dry-run`` shows what a bulk change would do and changes nothing. With ids, a
job in the wrong state is named on stderr (exit 1) while the others still change: a list of ids
is often "all of these that are still running". An unknown id changes nothing at all (exit 1),
since it is most likely a typo.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from queuectl.cli.run import examples, json_option, with_queue
from queuectl.cli.worker_start import Duration
from queuectl.models import FINAL_STATES, UNFINISHED_STATES, JobState

if TYPE_CHECKING:
    from queuectl.models import Job
    from queuectl.queue import Queue

F = TypeVar("F", bound=Callable[..., Any])

#: The states in the order users read them.
_ORDER = list(JobState)


def _states_option(states: frozenset[JobState], help: str) -> Callable[[F], F]:
    choice = click.Choice([state.value for state in _ORDER if state in states])
    return click.option("--state", "states", type=choice, multiple=True, help=help)


queue_option = click.option(
    "--queue", "queues", metavar="NAME", multiple=True, help="Only jobs of this queue; repeatable."
)
dry_run_option = click.option(
    "--dry-run", is_flag=True, help="Print the jobs that would change, and change nothing."
)


class Changed:
    """What one ``cancel`` or ``retry`` did: the jobs changed, and a line per job refused."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.refused: list[str] = []


def _report(changed: Changed, *, as_json: bool, dry_run: bool, verb: str) -> int:
    """Print the jobs changed (ids, or ``--json`` objects) and the refusals; exit 1 if any."""
    from queuectl.cli import render

    render.ids(changed.jobs, as_json=as_json)
    if dry_run:
        count = len(changed.jobs)
        render.note(
            f"queuectl: dry run: would {verb} {count} job{'' if count == 1 else 's'}; nothing changed"
        )
    for line in changed.refused:
        render.note(f"queuectl: error: {line}")
    return 1 if changed.refused else 0


def _check_selection(job_ids: Sequence[str], states: Sequence[str], queues: Sequence[str], what: str) -> None:
    if job_ids and (states or queues):
        raise click.UsageError(f"give job ids or --state/--queue filters to {what}, not both")
    if not job_ids and not states and not queues:
        raise click.UsageError(f"give the ids of jobs to {what}, or --state/--queue to {what} in bulk")
    if any(not queue.strip() for queue in queues):
        raise click.BadParameter("a queue name cannot be empty", param_hint="--queue")


async def _each(
    queue: Queue,
    texts: Sequence[str],
    change: Callable[[str], Awaitable[Job]],
    allowed: frozenset[JobState],
    dry_run: bool,
) -> Changed:
    """``change`` each job ``texts`` name (once each, in order); a job in the wrong state is
    refused, the others still change. Every id is resolved first: an unknown one changes nothing."""
    from queuectl.errors import JobStateConflict

    changed = Changed()
    for job_id in dict.fromkeys(await queue.resolve_ids(texts)):
        try:
            if dry_run:
                job = await queue.get(job_id)
                if job.state not in allowed:
                    raise JobStateConflict(f"job {job_id} is {job.state.value}")
            else:
                job = await change(job_id)
        except JobStateConflict as error:
            message = str(error)
            changed.refused.append(message if job_id in message else f"job {job_id}: {message}")
        else:
            changed.jobs.append(job)
    return changed


# --- cancel -------------------------------------------------------------------------------


@click.command(
    "cancel",
    short_help="Cancel jobs that are not final yet.",
    epilog=examples(
        "queuectl cancel ID1 ID2",
        "queuectl cancel --queue nightly --dry-run",
        "queuectl cancel --state pending --state failed --queue nightly",
    ),
)
@click.argument("job_ids", metavar="[ID]...", nargs=-1)
@_states_option(
    UNFINISHED_STATES, "Cancel every job in this state (pending, failed, processing); repeatable."
)
@queue_option
@dry_run_option
@json_option
def cancel(
    job_ids: tuple[str, ...], states: tuple[str, ...], queues: tuple[str, ...], dry_run: bool, as_json: bool
) -> int:
    """Cancel jobs that are not final yet; print their ids.

    A pending or failed job becomes cancelled at once; so does a running
    one, whose worker (on whatever host) kills its command within a poll
    interval. A job already final is named on stderr (exit 1); the other
    jobs are still cancelled. In bulk (--state, --queue: any unfinished job
    that matches both) --dry-run prints what would be cancelled.
    """
    _check_selection(job_ids, states, queues, "cancel")
    job_states = [JobState(state) for state in dict.fromkeys(states)]
    names = list(dict.fromkeys(queues))

    async def action(queue: Queue) -> Changed:
        if job_ids:
            return await _each(queue, job_ids, queue.cancel, UNFINISHED_STATES, dry_run)
        changed = Changed()
        if dry_run:
            wanted = job_states or _unfinished()
            changed.jobs = await queue.list_jobs(state=wanted, queue=names)
        else:
            changed.jobs = await queue.cancel_matching(state=job_states, queue=names)
        return changed

    return _report(with_queue(action), as_json=as_json, dry_run=dry_run, verb="cancel")


def _unfinished() -> list[JobState]:
    return [state for state in _ORDER if state in UNFINISHED_STATES]


def _final() -> list[JobState]:
    return [state for state in _ORDER if state in FINAL_STATES]


# --- retry --------------------------------------------------------------------------------


@click.command(
    "retry",
    short_help="Put final jobs back to pending.",
    epilog=examples(
        "queuectl retry ID",
        "queuectl retry --state dead --queue nightly --dry-run",
        "queuectl retry --state cancelled --json",
    ),
)
@click.argument("job_ids", metavar="[ID]...", nargs=-1)
@_states_option(FINAL_STATES, "Retry every job in this state (completed, dead, cancelled); repeatable.")
@queue_option
@dry_run_option
@json_option
def retry(
    job_ids: tuple[str, ...], states: tuple[str, ...], queues: tuple[str, ...], dry_run: bool, as_json: bool
) -> int:
    """Put final jobs back to pending with attempts 0 (history kept); print their ids.

    A completed, dead or cancelled job runs again. A job in another state is
    named on stderr (exit 1) and left as it is; the other jobs are still
    retried. In bulk (--state, --queue: any final job that matches both; no
    --state: every final state) --dry-run prints what would be retried.
    """
    _check_selection(job_ids, states, queues, "retry")
    job_states = [JobState(state) for state in dict.fromkeys(states)]
    names = list(dict.fromkeys(queues))

    async def action(queue: Queue) -> Changed:
        if job_ids:
            return await _each(queue, job_ids, queue.retry, FINAL_STATES, dry_run)
        changed = Changed()
        if dry_run:
            changed.jobs = await queue.list_jobs(state=job_states or _final(), queue=names)
        else:
            changed.jobs = await queue.retry_matching(state=job_states, queue=names)
        return changed

    return _report(with_queue(action), as_json=as_json, dry_run=dry_run, verb="retry")


# --- purge --------------------------------------------------------------------------------


@click.command(
    "purge",
    short_help="Delete final jobs, old ones or all.",
    epilog=examples(
        "queuectl purge",
        "queuectl purge --older-than 30d",
        "queuectl purge --state dead --state completed --queue nightly --json",
    ),
)
@click.option(
    "--state",
    "states",
    type=click.Choice([state.value for state in _ORDER]),
    multiple=True,
    help="Delete jobs in this final state (completed, dead, cancelled); repeatable "
    "[default: completed and cancelled].",
)
@click.option(
    "--older-than",
    type=Duration(zero="any age"),
    metavar="DURATION",
    help="Only jobs that finished longer ago than this (90, 30s, 5m, 7d, 1h30m) [default: any age].",
)
@queue_option
@json_option
def purge(states: tuple[str, ...], older_than: float | None, queues: tuple[str, ...], as_json: bool) -> None:
    """Delete final jobs, with their output and history; print how many.

    Deletes completed and cancelled jobs (or those of the --state given)
    that finished longer ago than --older-than (any age by default). Dead
    jobs are kept unless --state dead says otherwise. Jobs that are not
    final are never deleted.
    """
    job_states = [JobState(state) for state in dict.fromkeys(states)]
    unfinished = [state.value for state in job_states if state not in FINAL_STATES]
    if unfinished:
        raise click.BadParameter(
            f"only final jobs can be purged (completed, dead, cancelled), not {', '.join(unfinished)} ones",
            param_hint="--state",
        )
    if any(not queue.strip() for queue in queues):
        raise click.BadParameter("a queue name cannot be empty", param_hint="--queue")
    names = list(dict.fromkeys(queues))
    seconds = older_than or None  # 0: any age
    deleted = with_queue(lambda q: q.purge(state=job_states, queue=names, older_than=seconds))
    if as_json:
        from queuectl.cli import render

        render.print_json({"deleted": deleted})
    else:
        click.echo(f"deleted {deleted} job{'' if deleted == 1 else 's'}")
