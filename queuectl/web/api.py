"""``/api/...``: JSON in the CLI's ``--json`` shapes, and the actions, POST only.

Ids may be given as a unique prefix of at least six characters, as on the command line
(``Queue.resolve_id``). Errors become statuses in ``responses.error_status``.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from queuectl.errors import InvalidInput
from queuectl.web.data import (
    job_filters,
    jobs_page,
    limit_values,
    queue_dict,
    queue_infos,
    queue_of,
    status_dict,
)
from queuectl.web.live import job_output
from queuectl.web.responses import JSON_HEADERS, acted, form_fields

__all__ = ("routes",)


def _json(data: Any) -> JSONResponse:
    return JSONResponse(data, headers=JSON_HEADERS)


async def _job_id(request: Request) -> str:
    return await queue_of(request).resolve_id(request.path_params["job_id"])


# --- reading --------------------------------------------------------------------------------


async def status(request: Request) -> Response:
    return _json(await status_dict(request))


async def jobs(request: Request) -> Response:
    filters = job_filters(request.query_params, limit=True)
    return _json(await jobs_page(queue_of(request), filters))


async def job(request: Request) -> Response:
    queue = queue_of(request)
    found = await queue.get(await _job_id(request))
    return _json(found.to_dict(with_output=True))


async def output(request: Request) -> Response:
    text = request.query_params.get("after", "-1")
    try:
        after = int(text)
    except ValueError:
        raise InvalidInput(f"after must be a whole number (a chunk's seq), got {text!r}") from None
    return _json(await job_output(queue_of(request), await _job_id(request), after=after))


async def queues(request: Request) -> Response:
    return _json([info.to_dict() for info in await queue_infos(request)])


async def schedules(request: Request) -> Response:
    return _json([item.to_dict() for item in await queue_of(request).list_schedules()])


async def workers(request: Request) -> Response:
    return _json([info.to_dict() for info in await queue_of(request).workers()])


# --- actions --------------------------------------------------------------------------------


async def cancel(request: Request) -> Response:
    queue = queue_of(request)
    return acted(request, (await queue.cancel(await _job_id(request))).to_dict())


async def retry(request: Request) -> Response:
    queue = queue_of(request)
    return acted(request, (await queue.retry(await _job_id(request))).to_dict())


async def retry_all_dead(request: Request) -> Response:
    retried = await queue_of(request).retry_all_dead()
    return acted(request, {"retried": [item.id for item in retried]})


async def pause_queue(request: Request) -> Response:
    queue, name = queue_of(request), request.path_params["name"]
    await queue.pause_queue(name)
    return acted(request, await queue_dict(request, name))


async def resume_queue(request: Request) -> Response:
    queue, name = queue_of(request), request.path_params["name"]
    await queue.resume_queue(name)
    return acted(request, await queue_dict(request, name))


async def limit_queue(request: Request) -> Response:
    queue, name = queue_of(request), request.path_params["name"]
    await queue.limit_queue(name, **limit_values(await _body(request)))
    return acted(request, await queue_dict(request, name))


async def pause_schedule(request: Request) -> Response:
    changed = await queue_of(request).pause_schedule(request.path_params["name"])
    return acted(request, changed.to_dict())


async def resume_schedule(request: Request) -> Response:
    changed = await queue_of(request).resume_schedule(request.path_params["name"])
    return acted(request, changed.to_dict())


async def stop_workers(request: Request) -> Response:
    return acted(request, {"asked": await queue_of(request).stop_workers()})


async def _body(request: Request) -> dict[str, Any]:
    """A JSON object, or an urlencoded form's fields (``InvalidInput`` for anything else)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        return await form_fields(request)
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput('the body must be a JSON object, such as {"concurrency": 4}')
    return body


def routes() -> list[BaseRoute]:
    get, post = ["GET"], ["POST"]
    return [
        Route("/api/status", status, methods=get),
        Route("/api/jobs", jobs, methods=get),
        Route("/api/jobs/{job_id}", job, methods=get),
        Route("/api/jobs/{job_id}/output", output, methods=get),
        Route("/api/jobs/{job_id}/cancel", cancel, methods=post),
        Route("/api/jobs/{job_id}/retry", retry, methods=post),
        Route("/api/dlq/retry-all", retry_all_dead, methods=post),
        Route("/api/queues", queues, methods=get),
        Route("/api/queues/{name}/pause", pause_queue, methods=post),
        Route("/api/queues/{name}/resume", resume_queue, methods=post),
        Route("/api/queues/{name}/limit", limit_queue, methods=post),
        Route("/api/schedules", schedules, methods=get),
        Route("/api/schedules/{name}/pause", pause_schedule, methods=post),
        Route("/api/schedules/{name}/resume", resume_schedule, methods=post),
        Route("/api/workers", workers, methods=get),
        Route("/api/workers/stop", stop_workers, methods=post),
    ]
