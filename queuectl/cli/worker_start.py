"""``queuectl worker start``: run a worker pool in the foreground until it is done or told to stop.

The command, not the library, handles SIGINT and SIGTERM, and it does so from its first line to the
exit of the process (``_Signals``): a stop signal that arrives while the pool winds down, while the
store closes, or while the interpreter exits must not end a worker that stopped as asked with the
signal's default action (exit 143) or a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any, NamedTuple

import click

from queuectl.cli.run import cli_state, examples
from queuectl.durations import DURATION_FORMS, duration_seconds

if TYPE_CHECKING:
    import asyncio

    from queuectl.queue import Queue
    from queuectl.worker import WorkerPool

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Duration(click.ParamType[float, Any]):
    """A duration in any of the forms of ``queuectl.durations`` (``90``, ``1.5``, ``30s``, ``1h30m``)."""

    name = "duration"

    def __init__(self, *, zero: str | None = None) -> None:
        self.zero = zero  # what 0 means, if 0 is allowed

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float | int) and not isinstance(value, bool):
            seconds = float(value)  # a default
        else:
            try:
                seconds = duration_seconds(str(value))
            except ValueError:
                self.fail(f"{str(value)!r} is not a duration: use {DURATION_FORMS}", param, ctx)
        least = f"0 ({self.zero}) or more" if self.zero else "more than 0"
        if seconds < 0 or (seconds == 0 and not self.zero):
            what = "is negative" if seconds < 0 else "is too short"
            self.fail(f"{str(value)!r} {what}: use {least}, as {DURATION_FORMS}", param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{str(value)!r} is too long: use {DURATION_FORMS}", param, ctx)
        return seconds


@click.command(
    "start",
    short_help="Run jobs in the foreground until stopped.",
    epilog=examples(
        "queuectl worker start --count 4",
        "queuectl worker start --drain --queue nightly",
        "queuectl worker start --idle-timeout 5m --grace 1m",
    ),
)
@click.option("--count", type=click.IntRange(1, 1024), default=1, show_default=True, help="Jobs run at once.")
@click.option("--queue", "queues", multiple=True, metavar="Q", help="Only these queues (repeatable).")
@click.option("--burst", is_flag=True, help="Exit when no job is due now and none runs here.")
@click.option("--drain", is_flag=True, help="Exit when no job is pending, failed or processing.")
@click.option(
    "--idle-timeout",
    type=Duration(),
    metavar="DURATION",
    help="Exit after DURATION with nothing to do (90, 1.5, 30s, 5m, 1h30m).",
)
@click.option(
    "--grace",
    type=Duration(zero="stop running jobs at once"),
    default="30s",
    show_default=True,
    metavar="DURATION",
    help="How long running jobs may finish after a stop request (0: stop them at once).",
)
@click.option(
    "--quiet", is_flag=True, help="Only warnings and errors on stderr: no start-up or per-job lines."
)
@click.option(
    "--dashboard",
    metavar="[HOST:]PORT",
    help="Also serve the dashboard and /metrics there while the worker runs (HOST: 127.0.0.1; "
    "another address needs $QUEUECTL_DASHBOARD_TOKEN).",
)
def start_command(
    count: int,
    queues: tuple[str, ...],
    burst: bool,
    drain: bool,
    idle_timeout: float | None,
    grace: float,
    quiet: bool,
    dashboard: str | None,
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
    listen = None if dashboard is None else _dashboard_address(dashboard)
    signals = _Signals(quiet=quiet)
    signals.install()  # first: from here on, no stop signal ends the process by its default action
    try:
        mode = "burst" if burst else "drain" if drain else "forever"
        from queuectl.cli.logging_setup import configure_logging

        verbose = cli_state().verbose
        configure_logging(verbose)
        # The worker's lines by default; --quiet: its warnings and errors only, whatever -v says.
        level = logging.WARNING if quiet else logging.DEBUG if verbose >= 2 else logging.INFO
        logging.getLogger("queuectl.worker").setLevel(level)
        _run_pool(
            cli_state().target,
            signals,
            count=count,
            queues=list(queues) or None,
            mode=mode,
            idle_timeout=idle_timeout,
            grace=grace,
            create_parent=cli_state().uses_default_target,
            dashboard=listen,
        )
    finally:
        signals.ignore()
    if signals.interrupted:
        raise click.Abort  # before the worker started: exit 130


def _run_pool(
    target: str,
    signals: _Signals,
    *,
    count: int,
    queues: list[str] | None,
    create_parent: bool,
    dashboard: _Listen | None = None,
    **options: Any,
) -> None:
    import asyncio

    from queuectl.cli.run import make_data_dir
    from queuectl.queue import Queue
    from queuectl.worker import use_fast_child_watcher

    if create_parent:
        make_data_dir(target)

    async def run() -> None:
        if not signals.attach(asyncio.get_running_loop(), asyncio.current_task()):
            return
        use_fast_child_watcher()
        opening = asyncio.ensure_future(Queue.open(target))
        try:
            queue = await asyncio.shield(opening)
        except asyncio.CancelledError:
            if signals.interrupted:
                await _abandon(opening)
                return
            raise
        async with queue:
            pool = queue.pool(count=count, queues=queues, **options)
            signals.started(pool)
            if not signals.quiet:
                _say(
                    f"worker {pool.worker_id} started on {_shown_target(target)}: {_capacity(count, queues)}"
                )
            server = None if dashboard is None else await _start_dashboard(queue, dashboard, signals.quiet)
            try:
                await pool.run()
            finally:
                signals.finished()
                if server is not None:
                    server.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await server

    asyncio.run(run())


#: How long an interrupted start-up waits for the store it was opening (see ``_abandon``).
_OPEN_GRACE = 5.0


async def _abandon(opening: asyncio.Future[Queue]) -> None:
    """Close the store that ``opening`` opens, once it has: cancelled half-way, the SQLite store's
    threads would go on and report to an event loop that is gone (a traceback as the process
    exits). Opening takes milliseconds; a store that takes longer is left to the exit."""
    import asyncio

    try:
        queue = await asyncio.wait_for(asyncio.shield(opening), _OPEN_GRACE)
    except (asyncio.CancelledError, Exception):  # another signal, too slow, or it failed: nothing open
        return
    await queue.aclose()


class _Listen(NamedTuple):
    """Where ``--dashboard`` serves, and the token it requires (None on loopback without one)."""

    host: str
    port: int
    token: str | None


def _dashboard_address(text: str) -> _Listen:
    """``--dashboard [HOST:]PORT`` checked before the worker starts: bad usage exits 2, a missing
    web extra exits 1, and so does a non-loopback HOST without a token."""
    import os

    from queuectl.cli.dashboard import TOKEN_ENV, WEB_EXTRA, check_listen

    host, colon, port_text = text.strip().rpartition(":")
    host = (host if colon else "127.0.0.1").strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise click.BadParameter(
            f"{text!r} is not [HOST:]PORT, such as 9100 or 0.0.0.0:9100", param_hint="--dashboard"
        )
    try:
        import queuectl.web.server  # noqa: F401  (fail now, not once the worker runs)
    except ImportError:
        raise click.ClickException(WEB_EXTRA) from None
    token = os.environ.get(TOKEN_ENV) or None
    check_listen(f"--dashboard {text}", host, token, f"${TOKEN_ENV}")
    return _Listen(host, port, token)


async def _start_dashboard(queue: Queue, listen: _Listen, quiet: bool) -> asyncio.Task[None]:
    """The dashboard served beside the pool, as a task of this loop, once it listens."""
    import asyncio

    from queuectl.web.server import serve

    listening = asyncio.Event()

    def ready(url: str) -> None:
        listening.set()
        if not quiet:
            _say(f"dashboard at {url}")

    server = asyncio.ensure_future(
        serve(queue, host=listen.host, port=listen.port, token=listen.token, ready=ready)
    )
    waiting = asyncio.ensure_future(listening.wait())
    await asyncio.wait({server, waiting}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if server.done():
        error = server.exception()
        reason = (error.strerror or str(error)) if isinstance(error, OSError) else str(error)
        raise click.ClickException(
            f"cannot serve the dashboard on {listen.host}:{listen.port}: {reason.lower()}"
        )
    return server


class _Signals:
    """SIGINT and SIGTERM, from the first line of ``worker start`` until the process exits.

    Before the worker starts, a signal interrupts it (exit 130). Once it has started, the first asks
    the pool to stop gracefully and says what happens now; the second ends the grace period. Once
    the pool has returned, stop signals are ignored: the worker stops already, as asked.

    The handlers are plain ``signal.signal`` handlers rather than the loop's: they outlive the
    event loop, which removes its own handlers when it closes.
    """

    def __init__(self, *, quiet: bool) -> None:
        self.quiet = quiet
        self.interrupted = False  # a signal came before the worker started
        self._received = 0  # signals since it started
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._pool: WorkerPool | None = None
        self._done = False

    def install(self) -> None:
        for number in _STOP_SIGNALS:
            signal.signal(number, self._handle)

    def ignore(self) -> None:
        """For the rest of the process: nothing is left to stop, and no signal may end it now.

        Ignored rather than handled: the interpreter puts handled signals back to their default
        action as it exits.
        """
        self._done = True
        # Blocked meanwhile: a signal that Python's C-level handler catches just before its
        # handler becomes SIG_IGN would raise "Signal N ignored due to race condition" at the next
        # check. Blocked, it waits in the kernel, which drops it once it is ignored.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            for number in _STOP_SIGNALS:
                signal.signal(number, signal.SIG_IGN)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def attach(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any] | None) -> bool:
        """From now on, signals go to ``loop``; False if one came before."""
        self._loop, self._task = loop, task
        return not self.interrupted

    def started(self, pool: WorkerPool) -> None:
        self._pool = pool

    def finished(self) -> None:
        self._done = True

    def _handle(self, number: int, frame: FrameType | None) -> None:
        """Runs between two bytecodes of whatever the main thread does: only hands the signal on."""
        if self._done:
            return
        loop = self._loop
        if loop is None:
            self.interrupted = True  # the event loop has not started: the worker never will
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile: nothing left to stop
            loop.call_soon_threadsafe(self._in_loop, number)

    def _in_loop(self, number: int) -> None:
        if self._done:
            return
        pool = self._pool
        if pool is None:  # still opening the store
            self.interrupted = True
            if self._task is not None:
                self._task.cancel()
            return
        self._received += 1
        if self._received == 1:
            if not pool.stopping:  # a stop through the store keeps its grace period
                pool.request_stop()
            plan = pool.stop_plan()
            if plan is None:
                self._note("stopping")
            elif pool.grace > 0:
                again = "Ctrl-C" if number == signal.SIGINT else "SIGTERM"
                self._note(f"stopping: {plan}; {again} again to stop them now")
            else:
                self._note(f"stopping: {plan}")
        else:
            pool.request_stop(now=True)
            plan = pool.stop_plan()
            if self._received == 2 and plan is not None and pool.grace > 0:
                self._note(f"stopping now: {plan}")

    def _note(self, line: str) -> None:
        if not self.quiet:
            _say(line)


def _say(line: str) -> None:
    """A note on stderr; a closed stderr is no reason to fail."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"queuectl: {line}\n")
        sys.stderr.flush()


def _capacity(count: int, queues: list[str] | None) -> str:
    from queuectl.display import one_line, quantity

    slots = quantity(count, "slot")
    if not queues:
        return f"{slots}, all queues"
    names = ", ".join(one_line(name, 80) for name in queues)
    return f"{slots}, {'queue' if len(queues) == 1 else 'queues'} {names}"


def _shown_target(target: str) -> str:
    """The store for people: a SQLite file's absolute path; a PostgreSQL URL without its password."""
    from urllib.parse import urlsplit, urlunsplit

    from queuectl.config import is_postgres_target, sqlite_path
    from queuectl.display import printable

    if not is_postgres_target(target):
        return printable(str(sqlite_path(target).absolute()))
    parts = urlsplit(target)
    user, at, hosts = parts.netloc.rpartition("@")
    netloc = f"{user.partition(':')[0]}@{hosts}" if at and user.partition(":")[0] else hosts
    # The query may hold a password too (?password=...): leave it out whole.
    return printable(urlunsplit((parts.scheme, netloc, parts.path, "", "")))
