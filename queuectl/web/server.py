"""Serving the dashboard with uvicorn on the caller's event loop, until the caller cancels it.

The socket is bound here, before uvicorn starts, so that a port in use is an ``OSError`` the
caller reports in one line (uvicorn itself would log it and exit the process). uvicorn's own
signal handling is switched off: the command that runs the server owns SIGINT and SIGTERM
(``queuectl dashboard``, or ``worker start``, whose stop signals stop the pool first).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Generator

import uvicorn

from queuectl.queue import Queue
from queuectl.web.app import create_app, warm_up

__all__ = ("bind", "serve", "url_of")

#: How long open connections get to finish when the server stops.
SHUTDOWN_GRACE = 2


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers, telling ``ready`` once it listens."""

    def __init__(self, config: uvicorn.Config, ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._ready = ready

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._ready()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``OSError`` when that cannot be)."""
    name = host.strip("[]")
    infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    # A name with both (``localhost``): IPv4, as the printed address then shows it.
    family, kind, proto, _, address = min(infos, key=lambda info: info[0] != socket.AF_INET)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://HOST:PORT/`` of a bound socket (the real port when port 0 was asked)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


async def serve(
    queue: Queue,
    *,
    host: str,
    port: int,
    token: str | None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the dashboard on ``queue`` at ``host:port`` until cancelled; ``ready(url)`` is called
    once it listens. Cancelled, it stops taking connections, lets open ones finish for up to
    ``SHUTDOWN_GRACE`` seconds, and re-raises the cancellation. ``OSError`` if it cannot listen."""
    app = create_app(queue, token=token)
    await warm_up(app)
    sock = bind(host, port)
    url = url_of(sock)
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
    )
    server = _Server(config, ready=(lambda: ready(url)) if ready is not None else (lambda: None))
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(task), SHUTDOWN_GRACE + 1.0)
        if not task.done():
            task.cancel()
        raise
    finally:
        sock.close()
