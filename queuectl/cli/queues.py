"""Queues: ``queue list``, ``queue pause``, ``queue resume`` and ``queue limit``.

Pauses and limits hold for every worker on every host, from one poll interval after the change.
Like ``config set``, the commands that change something print nothing when they succeed; values
are checked before the store is opened, so a refused command writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from queuectl.cli import render
from queuectl.cli.run import examples, json_option, with_queue
from queuectl.errors import InvalidInput
from queuectl.models import UNSET, JobState, Unset
from queuectl.queues import RATE_FORMS, check_concurrency, check_queue_name, parse_rate

if TYPE_CHECKING:
    from queuectl.queues import QueueInfo, Rate

#: The table's columns after the name and the settings: the job states, as ``status`` lists them.
_STATE_HEADERS = tuple(state.value.upper() for state in JobState)


class _Checked(click.ParamType[Any, Any]):
    """An option value checked by one of ``queuectl.queues``' checks (bad: exit 2, its words)."""

    def __init__(self, name: str, check: Any) -> None:
        self.name = name
        self._check = check

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Unset):  # not given
            return value
        try:
            return self._check(value)
        except InvalidInput as error:
            self.fail(str(error), param, ctx)


def _names(names: Sequence[str]) -> list[str]:
    try:
        return [check_queue_name(name) for name in names]
    except InvalidInput as error:
        raise click.BadParameter(str(error), param_hint="NAME") from error


@click.group("queue")
def queue() -> None:
    """Pause, resume and limit queues, across all workers and hosts."""


@queue.command(
    "list",
    short_help="Queues with their jobs by state, pauses and limits.",
    epilog=examples("queuectl queue list", "queuectl queue list --json"),
)
@json_option
def queue_list(as_json: bool) -> None:
    """Every queue that has jobs or settings: its jobs by state, whether it is paused, its limits."""
    queues = with_queue(lambda q: q.list_queues())
    if as_json:
        render.print_json([info.to_dict() for info in queues])
    elif not queues:
        render.note("no queues")
    else:
        _table(queues)


def _table(queues: Sequence[QueueInfo]) -> None:
    rows = (
        (
            info.name,
            "paused" if info.settings.paused else "active",
            "-" if info.settings.concurrency is None else info.settings.concurrency,
            "-" if info.settings.rate is None else str(info.settings.rate),
            *(info.jobs.get(state, 0) for state in JobState),
        )
        for info in queues
    )
    render.table(("QUEUE", "STATE", "CONCURRENCY", "RATE", *_STATE_HEADERS), rows, shrink={0: 8})


@queue.command(
    "pause",
    short_help="Stop workers from starting these queues' jobs.",
    epilog=examples("queuectl queue pause mail", "queuectl queue pause mail reports"),
)
@click.argument("names", metavar="NAME...", nargs=-1, required=True)
def queue_pause(names: tuple[str, ...]) -> None:
    """Stop workers on every host from starting these queues' jobs, from one poll interval on.

    Running jobs finish. Jobs can still be enqueued; they wait until `queue resume`.
    A queue may be paused before it has jobs. `worker start --drain` and `--burst`
    do not wait for paused queues' jobs.
    """
    checked = _names(names)
    with_queue(lambda q: q.pause_queue(*checked))


@queue.command(
    "resume",
    short_help="Let workers start these queues' jobs again.",
    epilog=examples("queuectl queue resume mail"),
)
@click.argument("names", metavar="NAME...", nargs=-1, required=True)
def queue_resume(names: tuple[str, ...]) -> None:
    """Let workers start these queues' jobs again (idle workers wake at once)."""
    checked = _names(names)
    with_queue(lambda q: q.resume_queue(*checked))


@queue.command(
    "limit",
    short_help="Limit how many of a queue's jobs run at once, or start per time.",
    epilog=examples(
        "queuectl queue limit renders --concurrency 2",
        "queuectl queue limit api --rate 10/s",
        "queuectl queue limit api --rate 5/10s --concurrency 3",
        "queuectl queue limit renders --concurrency none",
    ),
)
@click.argument("name", metavar="NAME")
@click.option(
    "--concurrency",
    type=_Checked("N", check_concurrency),
    default=UNSET,
    metavar="N|none",
    help="At most N of the queue's jobs processing at once, across all workers and hosts.",
)
@click.option(
    "--rate",
    type=_Checked("N/DURATION", parse_rate),
    default=UNSET,
    metavar="N/DURATION|none",
    help=f"At most N of the queue's jobs started in any window of DURATION: {RATE_FORMS}.",
)
def queue_limit(name: str, concurrency: int | Unset | None, rate: Rate | Unset | None) -> None:
    """Limit a queue across all workers and hosts; `none` takes a limit away.

    A limit not given stays as it is. Jobs already running are not stopped; new ones
    start only while the queue is within its limits. `queue list` shows the limits.
    """
    (checked,) = _names([name])
    if isinstance(concurrency, Unset) and isinstance(rate, Unset):
        raise click.UsageError("give --concurrency, --rate or both (none takes a limit away)")
    with_queue(lambda q: q.limit_queue(checked, concurrency=concurrency, rate=rate))
