"""What the pages and the API read through the ``Queue`` façade, in the CLI's ``--json`` shapes.

Pages render the very dicts the API returns, so a page drawn by the server and the same page
refreshed by its script show the same fields in the same words.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from queuectl.errors import InvalidInput
from queuectl.models import JobState, isoformat
from queuectl.queues import QueueInfo, QueueSettings
from queuectl.records import Record, record

if TYPE_CHECKING:
    from datetime import datetime

    from starlette.requests import Request

    from queuectl.queue import Queue
    from queuectl.web.counts import QueueCounts

__all__ = (
    "PAGE_SIZE",
    "JobFilters",
    "MinuteLike",
    "job_filters",
    "jobs_page",
    "minute_dicts",
    "queue_dict",
    "queue_infos",
    "queue_of",
    "status_dict",
)

#: Jobs per page, on the jobs page and by default in ``/api/jobs``.
PAGE_SIZE = 50
#: The most ``/api/jobs?limit=`` returns at once.
MAX_LIMIT = 500


class MinuteLike(Protocol):
    """One minute of ``Queue.finished_per_minute``: what the chart and ``/api/status`` read."""

    @property
    def minute(self) -> datetime: ...
    @property
    def completed(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def dead(self) -> int: ...


def queue_of(request: Request) -> Queue:
    """The app's one ``Queue`` (``create_app`` put it there)."""
    queue: Queue = request.app.state.queue
    return queue


@record
class JobFilters(Record):
    """The filters of the jobs page and ``/api/jobs``, checked."""

    states: tuple[JobState, ...] = ()
    queues: tuple[str, ...] = ()
    text: str | None = None
    cursor: str | None = None
    limit: int = PAGE_SIZE

    def query(self, *, cursor: str | None) -> str:
        """The query string of these filters at ``cursor`` (the "older" link)."""
        from urllib.parse import urlencode

        pairs: list[tuple[str, str]] = [("state", state.value) for state in self.states]
        pairs += [("queue", name) for name in self.queues]
        if self.text:
            pairs.append(("q", self.text))
        if cursor:
            pairs.append(("cursor", cursor))
        return urlencode(pairs)


def _values(params: Any, name: str) -> list[str]:
    """Every non-empty value of ``name``, repeated (``state=a&state=b``) or comma-separated."""
    found: list[str] = []
    for value in params.getlist(name):
        found += [part.strip() for part in str(value).split(",") if part.strip()]
    return found


def job_filters(params: Any, *, limit: bool = False) -> JobFilters:
    """The filters in a request's query (``InvalidInput`` for an unknown state or a bad limit)."""
    states: list[JobState] = []
    for value in _values(params, "state"):
        try:
            states.append(JobState(value))
        except ValueError:
            known = ", ".join(state.value for state in JobState)
            raise InvalidInput(f"unknown state {value!r}: use one of {known}") from None
    size = PAGE_SIZE
    if limit and params.get("limit"):
        text = params["limit"]
        try:
            size = int(text)
        except ValueError:
            size = 0
        if not 1 <= size <= MAX_LIMIT:
            raise InvalidInput(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {text!r}")
    text = (params.get("q") or "").strip() or None
    return JobFilters(
        states=tuple(dict.fromkeys(states)),
        queues=tuple(dict.fromkeys(_values(params, "queue"))),
        text=text,
        cursor=params.get("cursor") or None,
        limit=size,
    )


async def jobs_page(queue: Queue, filters: JobFilters) -> dict[str, Any]:
    """``{"jobs": [...], "next_cursor": ...}``: one page of jobs, newest first."""
    page = await queue.search_jobs(
        state=filters.states,
        queue=filters.queues,
        text=filters.text,
        limit=filters.limit,
        cursor=filters.cursor,
    )
    return {"jobs": [job.to_dict() for job in page.jobs], "next_cursor": page.next_cursor}


def minute_dicts(minutes: Sequence[MinuteLike]) -> list[dict[str, Any]]:
    return [
        {
            "minute": isoformat(item.minute),
            "completed": item.completed,
            "failed": item.failed,
            "dead": item.dead,
        }
        for item in minutes
    ]


def queue_infos(request: Request) -> Awaitable[list[QueueInfo]]:
    """Every queue, as ``queue list`` shows them (``counts.QueueCounts``: never a long wait)."""
    counts: QueueCounts = request.app.state.queue_counts
    return counts.infos()


async def status_dict(request: Request) -> dict[str, Any]:
    """``/api/status``: ``status --json``, the queues (``queue list --json``) and the chart's minutes."""
    queue = queue_of(request)
    status = (await queue.status()).to_dict()
    status["queues"] = [info.to_dict() for info in await queue_infos(request)]
    status["finished_per_minute"] = minute_dicts(await queue.finished_per_minute())
    return status


async def queue_dict(request: Request, name: str) -> dict[str, Any]:
    """One queue as ``queue list --json`` shows it (a queue with no jobs and no settings: zeros)."""
    for info in await queue_infos(request):
        if info.name == name:
            return info.to_dict()
    return QueueInfo(name=name, jobs={}, settings=QueueSettings(name=name)).to_dict()


def limit_values(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``concurrency`` and ``rate`` a limit action gives, for ``Queue.limit_queue``.

    A key left out (or, from a form, left empty) keeps that limit; ``null`` or ``none`` clears it.
    """
    values: dict[str, Any] = {}
    for key in ("concurrency", "rate"):
        if key not in body:
            continue
        value = body[key]
        if isinstance(value, str) and not value.strip():
            continue
        values[key] = value
    return values
