"""queuectl's errors as HTTP answers, and the answer an action gives to a plain HTML form.

Every route raises what the façade raises; the app's exception handlers turn it into a status
and a one-line ``{"error": ...}`` body (for the API) or a small error page (for pages).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from queuectl.errors import (
    AmbiguousId,
    InvalidInput,
    JobNotFound,
    JobStateConflict,
    ScheduleNotFound,
    StoreError,
)

__all__ = ("JSON_HEADERS", "acted", "error_status", "form_fields", "one_line", "wants_html")

#: Live data: a browser or proxy keeps no copy.
JSON_HEADERS = {"cache-control": "no-store"}


def error_status(error: Exception) -> int:
    """The HTTP status of one of queuectl's errors."""
    if isinstance(error, JobNotFound | ScheduleNotFound | AmbiguousId):
        return 404
    if isinstance(error, JobStateConflict):
        return 409
    if isinstance(error, InvalidInput):
        return 400
    if isinstance(error, StoreError):
        return 503
    if isinstance(error, HTTPException):
        return error.status_code
    return 500


def one_line(error: Exception) -> str:
    """The error's message as one line (an ``HTTPException`` by its detail)."""
    text = str(error.detail) if isinstance(error, HTTPException) else str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def wants_html(request: Request) -> bool:
    """Whether a browser posted a plain form (no script ran): it gets a page, not JSON."""
    return "text/html" in request.headers.get("accept", "") and request.method == "POST"


def acted(request: Request, data: Any) -> Response:
    """An action's answer: its JSON, or for a plain form a redirect back to the page it came from."""
    if wants_html(request):
        return RedirectResponse(_back(request), status_code=303)
    return JSONResponse(data, headers=JSON_HEADERS)


def _back(request: Request) -> str:
    """The page a form was posted from: the path of the ``Referer`` (the guard checked its origin)."""
    referer = request.headers.get("referer")
    if referer is None:
        return "/"
    parts = urlsplit(referer)
    # Only a path of this server: never "//elsewhere", which a browser reads as another host.
    path = parts.path if parts.path.startswith("/") and not parts.path.startswith("//") else "/"
    return f"{path}?{parts.query}" if parts.query else path


#: The most a form may hold: a sign-in or a limit needs a few dozen bytes.
MAX_FORM_BYTES = 64 * 1024


async def form_fields(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (what browsers and app.js send) as a dict.

    Read here rather than with ``request.form()``, which needs the ``python-multipart`` package
    for every kind of form; these forms are never multipart. ``InvalidInput`` for another body.
    """
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidInput("the form is too large")
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("the form is not valid UTF-8 form data") from None
