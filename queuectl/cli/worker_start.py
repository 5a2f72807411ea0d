"""``queuectl worker start``: run a worker pool in the foreground until it is done or told to stop."""

from __future__ import annotations

import logging

import click

from queuectl.cli.run import cli_state


@click.command("start")
@click.option("--count", type=click.IntRange(1, 1024), default=1, show_default=True, help="Jobs run at once.")
@click.option("--queue", "queues", multiple=True, metavar="Q", help="Only these queues (repeatable).")
@click.option("--burst", is_flag=True, help="Exit when no job is due now and none runs here.")
@click.option("--drain", is_flag=True, help="Exit when no job is pending, failed or processing.")
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="Exit after S seconds with nothing to do.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="S",
    help="How long running jobs may finish after a stop request.",
)
@click.option("--quiet", is_flag=True, help="No line per job on stderr.")
def start_command(
    count: int,
    queues: tuple[str, ...],
    burst: bool,
    drain: bool,
    idle_timeout: float | None,
    grace: float,
    quiet: bool,
) -> None:
    """Run COUNT jobs at a time until stopped (SIGINT, SIGTERM or `queuectl worker stop`).

    On a stop request the worker claims nothing new, lets running jobs finish
    within the grace period, then kills them and puts them back to pending.
    A second SIGINT or SIGTERM ends the grace period at once.
    """
    if sum((burst, drain, idle_timeout is not None)) > 1:
        raise click.UsageError("choose one of --burst, --drain and --idle-timeout")
    if any(not queue.strip() for queue in queues):
        raise click.BadParameter("a queue name cannot be empty", param_hint="--queue")
    mode = "burst" if burst else "drain" if drain else "forever"
    from queuectl.cli.logging_setup import configure_logging

    configure_logging(cli_state().verbose)
    if not quiet:
        logging.getLogger("queuectl.worker").setLevel(logging.INFO)
    _run_pool(
        cli_state().target,
        count=count,
        queues=list(queues) or None,
        mode=mode,
        idle_timeout=idle_timeout,
        grace=grace,
        create_parent=cli_state().uses_default_target,
    )


def _run_pool(target: str, *, create_parent: bool, **options: object) -> None:
    import asyncio
    import signal

    from queuectl.cli.run import make_data_dir
    from queuectl.queue import Queue
    from queuectl.worker.runner import use_fast_child_watcher

    if create_parent:
        make_data_dir(target)

    async def run() -> None:
        use_fast_child_watcher()
        async with await Queue.open(target) as queue:
            pool = queue.pool(**options)
            loop = asyncio.get_running_loop()
            for number in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(number, pool.request_stop)
            try:
                await pool.run()
            finally:
                for number in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(number)

    asyncio.run(run())
