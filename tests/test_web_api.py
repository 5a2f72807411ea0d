"""The dashboard's JSON API, pages, chart and ``/metrics`` over HTTP, on both stores (issue 14).

The app runs in-process on the test's event loop (``httpx.ASGITransport``), on one ``Queue``
as ``queuectl dashboard`` runs it; jobs reach their states through the public API
(``helpers``), and every answer is compared with what the store holds.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from helpers import JOB_KEYS, assert_job_object, fake_worker, heartbeat, make_dead, wait_for
from prometheus_client.parser import text_string_to_metric_families

from queuectl import Queue
from queuectl.errors import InvalidInput, JobNotFound, JobStateConflict, ScheduleNotFound, StoreError
from queuectl.models import Claim, JobState
from queuectl.web.app import create_app
from queuectl.web.chart import nice_ceiling
from queuectl.web.responses import error_status

BASE = "http://127.0.0.1:8080"
STATES = ("pending", "processing", "completed", "failed", "dead", "cancelled")


@pytest.fixture
async def queue(store_target: str) -> AsyncIterator[Queue]:
    async with await Queue.open(store_target) as opened:
        yield opened


@pytest.fixture
async def client(queue: Queue) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(queue, token=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as opened:
        yield opened


def error_of(response: httpx.Response, status: int) -> str:
    """The one-line ``{"error": ...}`` of a refused request."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str) and "\n" not in body["error"] and body["error"]
    text: str = body["error"]
    return text


async def enqueue(into: Queue, job_id: str, /, **fields: Any) -> str:
    await into.enqueue({"id": job_id, "command": "true", **fields})
    return job_id


# --- reading ---------------------------------------------------------------------------------


async def test_status_is_the_cli_shape_with_queues_and_minutes(
    queue: Queue, client: httpx.AsyncClient, store_target: str
) -> None:
    await enqueue(queue, "s-pending-1", queue="alpha")
    await enqueue(queue, "s-pending-2", queue="beta")
    await make_dead(store_target, "s-dead")

    body = (await client.get("/api/status")).json()

    assert body["jobs"] == (await queue.status()).to_dict()["jobs"]
    assert body["jobs"]["pending"] == 2 and body["jobs"]["dead"] == 1
    assert body["workers"] == 0
    assert body["next_run_at"].endswith("Z")
    assert body["queues"] == [info.to_dict() for info in await queue.list_queues()]
    minutes = body["finished_per_minute"]
    assert len(minutes) == 60
    assert set(minutes[0]) == {"minute", "completed", "failed", "dead"}
    assert sum(item["dead"] for item in minutes) == 1


async def test_jobs_filter_search_and_pages(queue: Queue, client: httpx.AsyncClient) -> None:
    ids = [await enqueue(queue, f"page-{n}", queue="even" if n % 2 else "odd") for n in range(5)]
    await enqueue(queue, "needle-job", command="echo haystack-needle")
    await queue.cancel("page-0")

    listed = (await client.get("/api/jobs")).json()
    assert listed["next_cursor"] is None
    assert [job["id"] for job in listed["jobs"]] == ["needle-job", *reversed(ids)]
    for job in listed["jobs"]:
        assert_job_object(job)

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/jobs", params=params)).json()
        assert len(page["jobs"]) <= 2
        seen += [job["id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["needle-job", *reversed(ids)]

    async def found(**params: str) -> list[str]:
        response = await client.get("/api/jobs", params=params)
        assert response.status_code == 200, response.text
        return [job["id"] for job in response.json()["jobs"]]

    assert await found(state="cancelled") == ["page-0"]
    assert await found(queue="even") == ["page-3", "page-1"]
    assert await found(queue="even,odd", state="pending") == ["page-4", "page-3", "page-2", "page-1"]
    assert await found(q="haystack") == ["needle-job"]
    assert await found(q="page-3") == ["page-3"]


async def test_job_by_id_or_unique_prefix(queue: Queue, client: httpx.AsyncClient) -> None:
    job = await queue.enqueue(command="echo hi", env={"A": "1"})

    whole = (await client.get(f"/api/jobs/{job.id}")).json()
    assert set(whole) == JOB_KEYS | {"history", "stdout", "stderr"}
    assert whole["id"] == job.id and whole["env"] == {"A": "1"}
    assert (await client.get(f"/api/jobs/{job.id[:6]}")).json()["id"] == job.id

    assert "no job" in error_of(await client.get("/api/jobs/0000000000-unknown"), 404)
    error_of(await client.get(f"/api/jobs/{job.id[:5]}"), 404)  # shorter than 6: not a prefix


async def test_output_of_a_running_attempt_then_its_end(
    queue: Queue, client: httpx.AsyncClient, store_target: str
) -> None:
    pending = await enqueue(queue, "out-pending")
    assert (await client.get(f"/api/jobs/{pending}/output")).json() == {
        "state": "pending",
        "running": False,
        "chunks": [],
        "after": -1,
    }
    await queue.enqueue({"id": "out-running", "command": "true", "queue": "q-out"})
    await queue.store.register_worker(worker_id="w-out", host="elsewhere", pid=1)
    (claim,) = await queue.store.claim(worker_id="w-out", queues=["q-out"], limit=1, lease=3600)
    await append(queue, claim, (1, 0, b"first\n"), (2, 0, b"oops\n"))

    first = (await client.get("/api/jobs/out-running/output", params={"after": "-1"})).json()
    assert first["state"] == "processing" and first["running"] is True
    assert [(c["stream"], c["text"]) for c in first["chunks"]] == [
        ("stdout", "first\n"),
        ("stderr", "oops\n"),
    ]
    await append(queue, claim, (1, 6, b"second\n"))
    second = (await client.get("/api/jobs/out-running/output", params={"after": str(first["after"])})).json()
    assert [c["text"] for c in second["chunks"]] == ["second\n"]
    assert second["after"] > first["after"]

    error_of(await client.get("/api/jobs/out-running/output", params={"after": "x"}), 400)
    error_of(await client.get("/api/jobs/no-such-job-here/output"), 404)


async def append(queue: Queue, claim: Claim, *chunks: tuple[int, int, bytes]) -> None:
    """Output of a running attempt, written as its worker writes it."""
    assert await queue.store.append_output(claim, chunks, progress=None, keep=1 << 16, lease=3600)


async def test_queues_schedules_and_workers_lists(
    queue: Queue, client: httpx.AsyncClient, store_target: str
) -> None:
    await enqueue(queue, "lists-1", queue="reports")
    await queue.add_schedule("nightly", every=3600, command="backup.sh")
    await fake_worker(store_target, worker_id="w-lists", host="box", pid=4242)

    assert (await client.get("/api/queues")).json() == [info.to_dict() for info in await queue.list_queues()]
    schedules = (await client.get("/api/schedules")).json()
    assert [item["name"] for item in schedules] == ["nightly"]
    assert schedules[0] == (await queue.list_schedules())[0].to_dict()
    workers = (await client.get("/api/workers")).json()
    assert [(item["id"], item["host"], item["pid"]) for item in workers] == [("w-lists", "box", 4242)]


# --- actions ---------------------------------------------------------------------------------


async def test_cancel_and_retry(queue: Queue, client: httpx.AsyncClient, store_target: str) -> None:
    job_id = await enqueue(queue, "act-1")

    cancelled = await client.post(f"/api/jobs/{job_id[:6]}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert_job_object(cancelled.json())
    assert cancelled.json()["state"] == "cancelled"
    assert "cancelled" in error_of(await client.post(f"/api/jobs/{job_id}/cancel"), 409)

    retried = await client.post(f"/api/jobs/{job_id}/retry")
    assert retried.status_code == 200 and retried.json()["state"] == "pending"
    error_of(await client.post(f"/api/jobs/{job_id}/retry"), 409)  # pending: nothing to retry
    assert (await queue.get(job_id)).state.value == "pending"

    error_of(await client.post("/api/jobs/no-such-job-here/cancel"), 404)
    error_of(await client.post("/api/jobs/no-such-job-here/retry"), 404)
    assert "POST" in error_of(await client.get(f"/api/jobs/{job_id}/cancel"), 405)
    error_of(await client.get(f"/api/jobs/{job_id}/retry"), 405)


async def test_retry_all_dead(queue: Queue, client: httpx.AsyncClient, store_target: str) -> None:
    await make_dead(store_target, "dead-a", "dead-b")
    await enqueue(queue, "alive")

    response = await client.post("/api/dlq/retry-all")

    assert response.status_code == 200
    assert sorted(response.json()["retried"]) == ["dead-a", "dead-b"]
    assert (await queue.count_matching(state=JobState.DEAD)) == 0
    assert (await client.post("/api/dlq/retry-all")).json() == {"retried": []}
    error_of(await client.get("/api/dlq/retry-all"), 405)


async def test_queue_pause_resume_and_limits(queue: Queue, client: httpx.AsyncClient) -> None:
    await enqueue(queue, "q-1", queue="mail")

    paused = await client.post("/api/queues/mail/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert set(paused.json()) == {"name", "jobs", "paused", "concurrency", "rate"}
    assert [info.settings.paused for info in await queue.list_queues()] == [True]
    resumed = await client.post("/api/queues/mail/resume")
    assert resumed.json()["paused"] is False

    limited = await client.post("/api/queues/mail/limit", json={"concurrency": 2, "rate": "10/s"})
    assert limited.status_code == 200, limited.text
    assert (limited.json()["concurrency"], limited.json()["rate"]) == (2, "10/s")
    only_rate = await client.post("/api/queues/mail/limit", data={"concurrency": "", "rate": "5/10s"})
    assert (only_rate.json()["concurrency"], only_rate.json()["rate"]) == (2, "5/10s")
    cleared = await client.post("/api/queues/mail/limit", json={"concurrency": None})
    assert (cleared.json()["concurrency"], cleared.json()["rate"]) == (None, "5/10s")

    for bad in ({"concurrency": 0}, {"rate": "5"}, {"rate": "0/s"}, {}, {"concurrency": "many"}):
        error_of(await client.post("/api/queues/mail/limit", json=bad), 400)
    bad_json = await client.post(
        "/api/queues/mail/limit", content=b"{", headers={"content-type": "application/json"}
    )
    error_of(bad_json, 400)
    error_of(await client.post("/api/queues/mail/limit", json=[1]), 400)
    (info,) = await queue.list_queues()
    assert (info.settings.concurrency, str(info.settings.rate)) == (None, "5/10s")  # refused: unchanged
    error_of(await client.get("/api/queues/mail/pause"), 405)


async def test_schedule_pause_and_resume(queue: Queue, client: httpx.AsyncClient) -> None:
    await queue.add_schedule("hourly", every=3600, command="true")

    paused = await client.post("/api/schedules/hourly/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert (await queue.list_schedules())[0].paused
    resumed = await client.post("/api/schedules/hourly/resume")
    assert resumed.json()["paused"] is False

    error_of(await client.post("/api/schedules/nope/pause"), 404)
    error_of(await client.post("/api/schedules/nope/resume"), 404)
    error_of(await client.get("/api/schedules/hourly/pause"), 405)


async def test_stop_workers(client: httpx.AsyncClient, store_target: str) -> None:
    await fake_worker(store_target, worker_id="w-stop", host="box", pid=1)

    response = await client.post("/api/workers/stop")

    assert response.json() == {"asked": 1}
    assert await heartbeat(store_target, worker_id="w-stop", running=0) is True
    error_of(await client.get("/api/workers/stop"), 405)


def test_errors_map_to_statuses() -> None:
    assert error_status(JobNotFound()) == 404
    assert error_status(ScheduleNotFound()) == 404
    assert error_status(JobStateConflict()) == 409
    assert error_status(InvalidInput()) == 400
    assert error_status(StoreError()) == 503


# --- metrics, chart, pages -------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_match_the_store(queue: Queue, client: httpx.AsyncClient, store_target: str) -> None:
    await enqueue(queue, "m-1", queue="mail")
    await enqueue(queue, "m-2", queue="mail")
    await enqueue(queue, "m-later", queue="later", delay=3600)
    await make_dead(store_target, "m-dead")
    await queue.pause_queue("later")
    await fake_worker(store_target, worker_id="w-metrics", host="box", pid=7)

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    for info in await queue.list_queues():
        for state in STATES:
            key = ("queuectl_jobs", (("queue", info.name), ("state", state)))
            assert found[key] == info.jobs[next(s for s in info.jobs if s.value == state)], key
        paused = found[("queuectl_queue_paused", (("queue", info.name),))]
        assert paused == (1.0 if info.settings.paused else 0.0)
    assert found[("queuectl_jobs", (("queue", "mail"), ("state", "pending")))] == 2
    assert found[("queuectl_workers", ())] == len(await queue.workers()) == 1
    assert found[("queuectl_queue_paused", (("queue", "later"),))] == 1
    assert found[("queuectl_queue_oldest_due_seconds", (("queue", "mail"),))] > 0
    assert found[("queuectl_queue_oldest_due_seconds", (("queue", "later"),))] == 0  # not due yet


async def test_chart_is_svg_of_the_last_hour(queue: Queue, client: httpx.AsyncClient) -> None:
    now = datetime.now(UTC)
    await queue.store.add_finished({(now, "completed"): 7, (now, "dead"): 2})

    response = await client.get("/chart.svg")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    root = ElementTree.fromstring(response.text)
    namespace = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{namespace}svg"
    assert len(root.findall(f"{namespace}g")) == 60
    classes = [rect.get("class") for rect in root.iter(f"{namespace}rect")]
    assert classes == ["ok", "bad"]  # one minute had jobs: completed below, dead on top
    texts = [text.text for text in root.iter(f"{namespace}text")]
    assert "10" in texts and "0" in texts  # the axis: 0 to a round 10 above the 9 of that minute


def test_nice_ceiling() -> None:
    assert [nice_ceiling(n) for n in (0, 1, 2, 3, 6, 11, 99, 101)] == [1, 1, 2, 5, 10, 20, 100, 200]


@pytest.mark.parametrize(
    ("path", "hooks"),
    [
        (
            "/",
            [
                'data-state-count="pending"',
                'data-state-count="dead"',
                "data-workers",
                "data-next-run",
                'id="chart"',
            ],
        ),
        ("/jobs", ['form id="filter"', 'select name="state"', 'name="queue"', 'name="q"']),
        ("/dlq", ['data-action="retry-all"']),
        ("/queues", ["<table"]),
        ("/schedules", ["<table"]),
        ("/workers", ['data-action="stop-all"']),
    ],
)
async def test_pages_render_with_their_hooks(
    queue: Queue, client: httpx.AsyncClient, path: str, hooks: list[str]
) -> None:
    await enqueue(queue, "page-job", queue="mail")

    response = await client.get(path)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    for href in ("/", "/jobs", "/dlq", "/queues", "/schedules", "/workers"):
        assert f'<a href="{href}"' in response.text
    for hook in hooks:
        assert hook in response.text, hook


async def test_job_pages_show_rows_history_and_output(
    queue: Queue, client: httpx.AsyncClient, store_target: str
) -> None:
    await make_dead(store_target, "shown-dead", command="echo to-stdout; echo to-stderr >&2; exit 1")
    await queue.pause_queue("q-shown-dead")
    await queue.add_schedule("nightly", every=3600, command="true")

    dlq = (await client.get("/dlq")).text
    assert 'tr data-job-id="shown-dead"' in dlq and 'data-action="retry"' in dlq
    listed = (await client.get("/jobs", params={"state": "dead"})).text
    assert 'href="/jobs/shown-dead"' in listed
    page = await client.get("/jobs/shown-d")  # a prefix, as on the command line
    assert page.status_code == 200
    assert 'data-job-state data-state="dead">dead<' in page.text
    assert 'table id="history"' in page.text and 'tr data-attempt="1"' in page.text
    assert "to-stdout" in page.text and "to-stderr" in page.text
    assert 'data-action="cancel"' in page.text and 'data-action="retry"' in page.text
    queues = (await client.get("/queues")).text
    assert 'tr data-queue="q-shown-dead"' in queues and 'data-action="resume"' in queues
    assert 'tr data-schedule="nightly"' in (await client.get("/schedules")).text

    missing = await client.get("/jobs/no-such-job-here")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    bad_filter = await client.get("/jobs", params={"state": "sleeping"})
    assert bad_filter.status_code == 400


async def test_a_plain_form_post_goes_back_to_its_page(queue: Queue, client: httpx.AsyncClient) -> None:
    job_id = await enqueue(queue, "form-1")
    headers = {"accept": "text/html", "referer": f"{BASE}/jobs/{job_id}", "origin": BASE}

    response = await client.post(f"/api/jobs/{job_id}/cancel", headers=headers)

    assert response.status_code == 303
    assert response.headers["location"] == f"/jobs/{job_id}"
    refused = await client.post(f"/api/jobs/{job_id}/cancel", headers=headers)
    assert refused.status_code == 409 and refused.headers["content-type"].startswith("text/html")


async def test_live_pages_follow_the_store(queue: Queue, client: httpx.AsyncClient) -> None:
    """What a page's script polls changes as soon as the store does."""
    before = (await client.get("/api/status")).json()["jobs"]["pending"]
    await enqueue(queue, "live-1")

    async def counted() -> bool:
        return bool((await client.get("/api/status")).json()["jobs"]["pending"] == before + 1)

    await wait_for(counted, what="the new job in /api/status")


async def test_unknown_paths(client: httpx.AsyncClient) -> None:
    error_of(await client.get("/api/nothing-here"), 404)
    page = await client.get("/nothing-here")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert (await client.post("/jobs")).status_code == 405
