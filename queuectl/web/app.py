"""The dashboard's ASGI app: ``create_app(queue, token=...)``.

The caller opens the ``Queue`` and closes it; the app only uses it, one for every request, so
the app can run in its own process (``queuectl dashboard``) or beside a worker pool on the
pool's event loop (``worker start --dashboard``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from queuectl.errors import QueueError
from queuectl.queue import Queue
from queuectl.web import api, pages
from queuectl.web.counts import QueueCounts
from queuectl.web.metrics import metrics
from queuectl.web.responses import JSON_HEADERS, error_status, one_line, wants_html
from queuectl.web.security import Guard

__all__ = ("create_app", "warm_up")

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


def create_app(queue: Queue, *, token: str | None) -> Starlette:
    """The dashboard on ``queue``. With ``token``, every request but static files and the sign-in
    page must carry it (``queuectl.web.security``); without, only loopback requests are answered."""
    routes: list[BaseRoute] = [
        *pages.routes(),
        *api.routes(),
        Route("/metrics", metrics, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, token=token)],
        exception_handlers={QueueError: _failed, HTTPException: _failed, Exception: _crashed},
    )
    app.state.queue = queue
    app.state.queue_counts = QueueCounts(queue)
    app.state.token = token
    return app


async def warm_up(app: Starlette) -> None:
    """Count the jobs per queue once before the first request: on a big store that request
    would otherwise wait for the count (``counts.QueueCounts``)."""
    counts: QueueCounts = app.state.queue_counts
    try:
        await counts.infos()
    except QueueError as error:  # the pages say so when they are asked for
        log.warning("could not count the jobs per queue: %s", error)


def _is_data(request: Request) -> bool:
    return request.url.path.startswith(("/api/", "/metrics", "/chart.svg"))


async def _failed(request: Request, error: Exception) -> Response:
    """A refused request: ``{"error": ...}`` for the API, an error page for a browser."""
    status = error_status(error)
    if isinstance(error, HTTPException) and error.status_code == 405:
        message = f"{request.method} is not allowed here: actions are POST requests"
    else:
        message = one_line(error)
    if status >= 500:
        log.warning("dashboard: %s %s: %s", request.method, request.url.path, message)
    if not _is_data(request) or wants_html(request):
        return pages.error_page(request, status, message)
    return JSONResponse({"error": message}, status_code=status, headers=JSON_HEADERS)


async def _crashed(request: Request, error: Exception) -> Response:
    """A bug: the answer names its type only; Starlette raises it on to uvicorn, which logs it."""
    return JSONResponse(
        {"error": f"internal error: {type(error).__name__}"}, status_code=500, headers=JSON_HEADERS
    )
