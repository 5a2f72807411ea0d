"""The HTML pages, drawn on the server so that they work without script; ``static/app.js`` then
keeps their live parts current from the JSON API.

Every value reaches the HTML through Jinja2 with autoescaping on: a job's command, queue name
or output cannot add markup. ``env`` values are never drawn: the job page shows them as dots.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from queuectl.models import SUMMARY_FIELDS, JobState
from queuectl.web import chart
from queuectl.web.data import JobFilters, job_filters, jobs_page, queue_infos, queue_of, status_dict
from queuectl.web.live import kept_text, live_text
from queuectl.web.responses import form_fields
from queuectl.web.security import COOKIE, cookie_value, token_matches

__all__ = ("error_page", "routes")

TEMPLATES = Path(__file__).parent / "templates"
#: How ``env`` values show on a page.
MASK = "••••"
_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
#: The job fields the job page lists, in order (``env`` masked; the state has its own line).
_JOB_FIELDS = tuple(name for name in SUMMARY_FIELDS if name != "state")


def cell(value: Any) -> str:
    """A value as a table cell shows it (``app.js`` writes the same): times to the second, UTC."""
    if value is None or value == []:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # as JavaScript writes it: 300, not 300.0
    text = str(value)
    if _ISO.match(text):
        return text[:19].replace("T", " ")
    return text


#: The items the rows of a ``<template>`` are drawn from: app.js fills in the fields and puts
#: the row's key where ``__key__`` stands (in links and forms' actions).
_KEY = "__key__"
_BLANKS: dict[str, dict[str, Any]] = {
    "BLANK_JOB": {**dict.fromkeys(SUMMARY_FIELDS, ""), "id": _KEY},
    "BLANK_QUEUE": {"name": _KEY, "jobs": {}, "paused": False, "concurrency": None, "rate": None},
    "BLANK_SCHEDULE": {
        **dict.fromkeys(("cron", "every", "tz", "next_run_at", "last_job", "overlap"), ""),
        "name": _KEY,
        "paused": False,
    },
    "BLANK_WORKER": {
        **dict.fromkeys(("host", "pid", "started_at", "heartbeat_at", "running"), ""),
        "id": _KEY,
    },
    "BLANK_ATTEMPT": dict.fromkeys(
        ("outcome", "exit_code", "started_at", "finished_at", "worker", "host", "pid", "error"), ""
    ),
}


@functools.cache
def _environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["cell"] = cell
    environment.filters["path"] = lambda value: quote(str(value), safe="")
    environment.globals["STATES"] = [state.value for state in JobState]
    environment.globals.update(_BLANKS)
    return environment


def render(request: Request, name: str, *, code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("alert", None)
    context["token_required"] = request.app.state.token is not None
    html = _environment().get_template(name).render(context)
    return HTMLResponse(html, status_code=code, headers={"cache-control": "no-store"})


def error_page(request: Request, status: int, message: str) -> Response:
    return render(request, "error.html", code=status, page="error", title=f"Error {status}", alert=message)


# --- pages ----------------------------------------------------------------------------------


async def overview(request: Request) -> Response:
    status = await status_dict(request)
    return render(request, "overview.html", page="overview", title="Overview", status=status)


async def jobs(request: Request) -> Response:
    filters = job_filters(request.query_params)
    found = await jobs_page(queue_of(request), filters)
    return render(
        request,
        "jobs.html",
        page="jobs",
        title="Jobs",
        filters=filters,
        found=found,
        source=f"/api/jobs?{filters.query(cursor=filters.cursor)}",
        newer=filters.query(cursor=None) if filters.cursor else None,
        older=filters.query(cursor=found["next_cursor"]) if found["next_cursor"] else None,
        base_query=filters.query(cursor=None),
    )


async def job(request: Request) -> Response:
    queue = queue_of(request)
    job_id = await queue.resolve_id(request.path_params["job_id"])
    found = await queue.get(job_id)
    data = found.to_dict(with_output=True)
    if found.state is JobState.PROCESSING:
        output, after = await live_text(queue, job_id)
        running = True
    else:
        output, after, running = kept_text(found), -1, False
    env = {key: MASK for key in (found.env or {})}
    return render(
        request,
        "job.html",
        page="job",
        title=f"Job {job_id}",
        job=data,
        fields=_JOB_FIELDS,
        env=env,
        output=output,
        after=after,
        running=running,
    )


async def dlq(request: Request) -> Response:
    filters = JobFilters(states=(JobState.DEAD,), cursor=request.query_params.get("cursor") or None)
    found = await jobs_page(queue_of(request), filters)
    older = filters.query(cursor=found["next_cursor"]) if found["next_cursor"] else None
    source = f"/api/jobs?{filters.query(cursor=filters.cursor)}"
    return render(request, "dlq.html", page="dlq", title="Dead jobs", found=found, older=older, source=source)


async def queues(request: Request) -> Response:
    items = [info.to_dict() for info in await queue_infos(request)]
    return render(request, "queues.html", page="queues", title="Queues", queues=items)


async def schedules(request: Request) -> Response:
    items = [item.to_dict() for item in await queue_of(request).list_schedules()]
    return render(request, "schedules.html", page="schedules", title="Schedules", schedules=items)


async def workers(request: Request) -> Response:
    items = [info.to_dict() for info in await queue_of(request).workers()]
    return render(request, "workers.html", page="workers", title="Workers", workers=items)


async def chart_svg(request: Request) -> Response:
    minutes = await queue_of(request).finished_per_minute()
    return Response(chart.svg(minutes), media_type="image/svg+xml", headers={"cache-control": "no-store"})


# --- signing in -----------------------------------------------------------------------------


async def login_form(request: Request) -> Response:
    if request.app.state.token is None:
        return RedirectResponse("/", status_code=303)  # nothing to sign in to
    return render(request, "login.html", page="login", title="Sign in")


async def login(request: Request) -> Response:
    token: str | None = request.app.state.token
    if token is None:
        return RedirectResponse("/", status_code=303)
    given = (await form_fields(request)).get("token")
    if not token_matches(given, token):
        return render(request, "login.html", code=401, page="login", title="Sign in", alert="wrong token")
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE,
        cookie_value(token),
        httponly=True,
        samesite="strict",
        path="/",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


def routes() -> list[BaseRoute]:
    get = ["GET"]
    return [
        Route("/", overview, methods=get),
        Route("/jobs", jobs, methods=get),
        Route("/jobs/{job_id}", job, methods=get),
        Route("/dlq", dlq, methods=get),
        Route("/queues", queues, methods=get),
        Route("/schedules", schedules, methods=get),
        Route("/workers", workers, methods=get),
        Route("/chart.svg", chart_svg, methods=get),
        Route("/login", login_form, methods=get),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
