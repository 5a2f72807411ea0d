"""``queuectl dashboard``: serve the web dashboard and ``/metrics`` until stopped.

The web extra is imported only here, when the command runs; without it the command says how to
install it. The command owns SIGINT and SIGTERM: either stops the server cleanly (exit 0).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import TYPE_CHECKING

import click

from queuectl.cli.run import cli_state, examples, make_data_dir

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from queuectl.queue import Queue

#: Where the token comes from when ``--token`` is not given (``queuectl.web.security.TOKEN_ENV``,
#: written out so that ``--help`` needs no part of the web extra).
TOKEN_ENV = "QUEUECTL_DASHBOARD_TOKEN"
WEB_EXTRA = "the dashboard needs the web extra: pip install 'queuectl[web]'"


@click.command(
    "dashboard",
    short_help="Serve the web dashboard and Prometheus metrics.",
    epilog=examples(
        "queuectl dashboard",
        "queuectl dashboard --port 9000",
        "QUEUECTL_DASHBOARD_TOKEN=s3cret queuectl dashboard --host 0.0.0.0",
    ),
)
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0 picks a free port."
)
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    show_envvar=True,
    metavar="TOKEN",
    help="Require this token on every request (needed for an address other than loopback).",
)
def dashboard(host: str, port: int, token: str | None) -> None:
    """Serve the dashboard: live counts, jobs, output, the DLQ, queues, schedules,
    workers, and /metrics for Prometheus.

    On a loopback address (the default) no token is needed. Any other address
    needs one: browsers sign in once at /login, scripts and Prometheus send
    `Authorization: Bearer TOKEN`. Stop it with Ctrl-C or SIGTERM.
    """
    check_listen(f"--host {host}", host, token, "--token or $" + TOKEN_ENV)
    try:
        from queuectl.web.server import serve
    except ImportError:
        raise click.ClickException(WEB_EXTRA) from None
    state = cli_state()
    from queuectl.cli.logging_setup import configure_logging

    configure_logging(state.verbose)
    target = state.target
    if state.uses_default_target:
        make_data_dir(target)

    async def run(queue: Queue) -> None:
        await serve(queue, host=host, port=port, token=token or None, ready=announce)

    serve_until_stopped(target, run, where=f"{host}:{port}")


def check_listen(what: str, host: str, token: str | None, hint: str) -> None:
    """Refuse a non-loopback address without a token: bad usage (exit 2), before anything starts."""
    from queuectl.errors import InvalidInput

    if not token and not _is_loopback(host):
        raise InvalidInput(f"{what} is not loopback: a token is required ({hint})")


def _is_loopback(host: str) -> bool:
    try:
        from queuectl.web.security import is_loopback
    except ImportError:  # the extra is missing: the import of the server says so next
        return True
    return is_loopback(host)


def announce(url: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"queuectl: dashboard at {url}\n")
        sys.stderr.flush()


def serve_until_stopped(target: str, serving: Callable[[Queue], Awaitable[None]], *, where: str) -> None:
    """Open the store, run ``serving(queue)`` until it ends or SIGINT/SIGTERM comes, close the store."""
    import asyncio

    from queuectl.queue import Queue

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, stop.set)
        async with await Queue.open(target) as queue:
            server = asyncio.ensure_future(serving(queue))
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({server, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not server.done():
                server.cancel()
            try:
                await server
            except asyncio.CancelledError:
                pass
            except OSError as error:
                reason = (error.strerror or str(error)).lower()
                raise click.ClickException(f"cannot listen on {where}: {reason}") from None

    asyncio.run(main())
