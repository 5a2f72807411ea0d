"""Schedules: ``schedule add``, ``list``, ``remove``, ``pause`` and ``resume``.

``schedule add`` takes the job as ``enqueue`` does, with ``enqueue``'s own options (those that
make sense for a job enqueued again and again: not ``--id``, ``--run-at``, ``--delay`` or
``--after``), checked by the same rules (``job_fields.job_from_options``), before the store is
opened: a refused schedule writes nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import click

from queuectl.cli import formatting
from queuectl.cli.enqueue import enqueue as _enqueue_command
from queuectl.cli.run import examples, json_option, with_queue
from queuectl.job_fields import job_from_options

if TYPE_CHECKING:
    from queuectl.models import NewJob
    from queuectl.queue import Queue
    from queuectl.scheduling import Schedule


#: The ``enqueue`` options a scheduled job takes: those ``job_from_options`` reads, but the ones
#: each run sets itself (its id, its due time) or that would name the same jobs at every run.
_JOB_OPTIONS: list[click.Parameter] = [
    param
    for param in _enqueue_command.params
    if isinstance(param, click.Option)
    and param.name in inspect.signature(job_from_options).parameters
    and param.name not in ("run_at", "delay", "after")
]


@click.group("schedule")
def schedule() -> None:
    """Enqueue jobs by cron expressions or at intervals.

    Each due time enqueues one job (run_at = the due time), however many workers
    run, as long as one does. Due times missed while no worker ran are not
    replayed one by one: the latest is enqueued when a worker runs again.
    """


@schedule.command(
    "add",
    epilog=examples(
        "queuectl schedule add backup --cron '30 2 * * *' --tz Europe/Berlin -c b.sh",
        "queuectl schedule add poll --every 5m --no-overlap -c fetch --queue io",
        """queuectl schedule add report --cron @weekly '{"command": "make report"}'""",
    ),
)
@click.argument("name")
@click.argument("job_json", metavar="[JSON]", required=False)
@click.option(
    "--cron",
    metavar="EXPR",
    help="Five cron fields (minute hour day-of-month month day-of-week: *, lists, ranges, steps,"
    " names) or @hourly, @daily, @weekly, @monthly, @yearly.",
)
@click.option("--tz", metavar="ZONE", help="IANA time zone of --cron [default: UTC].")
@click.option("--every", metavar="DURATION", help="A fixed interval instead: 30s, 5m, 2h, 1d (at least 1s).")
@click.option(
    "--no-overlap",
    is_flag=True,
    help="Skip a due time while the previous job of this schedule is unfinished.",
)
@json_option
def schedule_add(
    name: str,
    job_json: str | None,
    cron: str | None,
    tz: str | None,
    every: str | None,
    no_overlap: bool,
    as_json: bool,
    **job_options: Any,
) -> None:
    """Create a schedule, or replace the one of that name; print it.

    Give --cron (with --tz) or --every, and the job with -c/--command and the
    options of `queuectl enqueue`, or as one JSON object. Each run gets a new id.
    A replaced schedule keeps its paused state and its last job.
    """
    if cron is None and every is None:
        raise click.UsageError("give --cron EXPR or --every DURATION")
    if cron is not None and every is not None:
        raise click.UsageError("give --cron or --every, not both")
    if tz is not None and every is not None:
        raise click.UsageError("--tz is for --cron; --every needs no time zone")
    job = _job(job_json, job_options)
    from queuectl.scheduling import new_schedule

    # Refused before the store is opened: a refused schedule writes nothing.
    new_schedule(name, cron=cron, tz=tz, every=every, no_overlap=no_overlap, job=job)
    stored = with_queue(
        lambda queue: queue.add_schedule(name, job, cron=cron, tz=tz, every=every, no_overlap=no_overlap)
    )
    if as_json:
        formatting.print_json(stored.to_dict())
    else:
        click.echo(f"{stored.name}: next run {formatting.short_time(stored.next_run_at)}")


#: After the schedule's own options, in the order `enqueue --help` shows them.
schedule_add.params[-1:-1] = _JOB_OPTIONS
#: How users spell each of them: ``--no-retry-exit-code`` for ``no_retry_exit_codes``.
_OPTION_NAMES = {param.name: max(param.opts, key=len) for param in _JOB_OPTIONS}


def _job(job_json: str | None, options: dict[str, Any]) -> NewJob | dict[str, Any]:
    """The job from the JSON argument or from ``--command`` and the enqueue options."""
    given = [_OPTION_NAMES[name] for name, value in options.items() if value not in (None, ())]
    if job_json is not None:
        if given:
            raise click.UsageError(
                f"give the job as JSON or with --command, not both (got JSON and {given[0]})"
            )
        from queuectl import validation

        job = validation.loads_strict(job_json)
        if not isinstance(job, dict):
            validation.checked_fields(job)  # refuses it: a job is an object
        return dict(job)
    if options.get("command") is None:
        raise click.UsageError("give the job with --command CMD or as a JSON argument")
    return job_from_options(**options)


@schedule.command("list", epilog=examples("queuectl schedule list", "queuectl schedule list --json"))
@json_option
def schedule_list(as_json: bool) -> None:
    """Every schedule: when it runs, its next run and its last job."""
    schedules = with_queue(lambda queue: queue.list_schedules())
    if as_json:
        formatting.print_json([item.to_dict() for item in schedules])
        return
    if not schedules:
        formatting.note("no schedules")
        return
    _table(schedules)


def _table(schedules: Sequence[Schedule]) -> None:
    term = formatting.Term.detect()
    formatting.table(
        ("NAME", "WHEN", "TZ", "NEXT RUN", "LAST JOB", "PAUSED", "OVERLAP"),
        (
            (
                item.name,
                item.cron if item.cron is not None else f"every {every_text(item.every or 0)}",
                item.tz if item.cron is not None else "-",
                term.when(item.next_run_at),
                item.last_job,
                "yes" if item.paused else "no",
                "skip" if item.no_overlap else "allow",
            )
            for item in schedules
        ),
        term=term,
        shrink={0: 8, 4: 12},
    )


_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def every_text(seconds: float) -> str:
    """An interval as people write it: ``90`` is ``1m30s``, ``86400`` is ``1d``."""
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest, parts = int(seconds), []
    for unit, size in _UNITS:
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def _change(
    verb: str, act: Callable[[Queue, str], Coroutine[Any, Any, Schedule]], help: str
) -> click.Command:
    """``schedule remove|pause|resume NAME``: one change to one schedule, which must exist."""

    @click.command(verb, help=help, epilog=examples(f"queuectl schedule {verb} nightly"))
    @click.argument("name")
    @json_option
    def change(name: str, as_json: bool) -> None:
        changed = with_queue(lambda queue: act(queue, name))
        if as_json:
            formatting.print_json(changed.to_dict())
        else:
            click.echo(changed.name)

    return change


schedule.add_command(
    _change(
        "remove",
        lambda queue, name: queue.remove_schedule(name),
        "Delete a schedule (its jobs stay). Prints its name.",
    )
)
schedule.add_command(
    _change(
        "pause",
        lambda queue, name: queue.pause_schedule(name),
        "Stop a schedule until it is resumed. Prints its name.",
    )
)
schedule.add_command(
    _change(
        "resume",
        lambda queue, name: queue.resume_schedule(name),
        "Resume a paused schedule from now. Prints its name.\n\nDue times missed while it was"
        " paused are not enqueued.",
    )
)
