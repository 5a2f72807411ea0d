"""Who may use the dashboard, and what a job's fields can do to its pages (issue 14).

The token (Bearer header or the sign-in cookie), refusal of actions from other origins, the
loopback-only Host check without a token, escaping of every value from a job, and masked
``env`` values. The store does not matter here, apart from the pages, run on both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from queuectl import Queue
from queuectl.web.app import create_app
from queuectl.web.security import is_loopback, same_origin

BASE = "http://127.0.0.1:8080"
TOKEN = "s3cret;with spaces=and%"
FOREIGN = "http://evil.example"
SCRIPT = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture
async def queue(store_target: str) -> AsyncIterator[Queue]:
    async with await Queue.open(store_target) as opened:
        yield opened


def client_for(queue: Queue, *, token: str | None, base: str = BASE) -> httpx.AsyncClient:
    app = create_app(queue, token=token)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)


@pytest.fixture
async def guarded(queue: Queue) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(queue, token=TOKEN) as client:
        yield client


@pytest.fixture
async def open_client(queue: Queue) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(queue, token=None) as client:
        yield client


BEARER = {"authorization": f"Bearer {TOKEN}"}


# --- the token -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/status", "/api/jobs", "/api/workers", "/metrics", "/chart.svg"])
async def test_data_needs_the_token(guarded: httpx.AsyncClient, path: str) -> None:
    refused = await guarded.get(path)
    assert refused.status_code == 401
    assert set(refused.json()) == {"error"}
    assert refused.headers["www-authenticate"] == "Bearer"
    wrong = await guarded.get(path, headers={"authorization": "Bearer s3cret"})
    assert wrong.status_code == 401
    assert (await guarded.get(path, headers=BEARER)).status_code == 200


@pytest.mark.parametrize("path", ["/", "/jobs", "/dlq", "/queues", "/schedules", "/workers", "/jobs/x"])
async def test_pages_redirect_to_sign_in(guarded: httpx.AsyncClient, path: str) -> None:
    response = await guarded.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"


async def test_actions_need_the_token(queue: Queue, guarded: httpx.AsyncClient) -> None:
    job = await queue.enqueue(command="true")
    assert (await guarded.post(f"/api/jobs/{job.id}/cancel")).status_code == 401
    assert (await queue.get(job.id)).state.value == "pending"
    assert (await guarded.post(f"/api/jobs/{job.id}/cancel", headers=BEARER)).status_code == 200


async def test_sign_in_sets_a_strict_http_only_cookie(guarded: httpx.AsyncClient) -> None:
    assert (await guarded.get("/static/app.js")).status_code == 200  # no token for static files
    form = await guarded.get("/login")
    assert form.status_code == 200 and 'form id="login"' in form.text and 'name="token"' in form.text

    wrong = await guarded.post("/login", data={"token": "guess"})
    assert wrong.status_code == 401 and 'form id="login"' in wrong.text
    assert "set-cookie" not in wrong.headers
    assert guarded.cookies.get("queuectl_token") is None

    signed_in = await guarded.post("/login", data={"token": TOKEN}, headers={"origin": BASE})
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
    cookie = signed_in.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower(): part for part in cookie.split(";")}
    assert "httponly" in attributes
    assert attributes["samesite"].strip().lower() == "samesite=strict"
    assert attributes["path"].strip().lower() == "path=/"
    assert (await guarded.get("/api/status")).status_code == 200  # the client sends the cookie now
    page = await guarded.get("/")
    assert page.status_code == 200 and 'data-state-count="pending"' in page.text

    signed_out = await guarded.post("/logout", headers={"origin": BASE})
    assert signed_out.status_code == 303
    assert (await guarded.get("/api/status")).status_code == 401


async def test_a_forged_cookie_is_refused(guarded: httpx.AsyncClient) -> None:
    guarded.cookies.set("queuectl_token", "s3cret")
    assert (await guarded.get("/api/status")).status_code == 401


# --- other origins ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": FOREIGN},
        {"origin": "null"},
        {"origin": "http://127.0.0.1:9999"},  # another port is another origin
        {"origin": "http://localhost:8080"},  # another name is another site to a browser
        {"referer": f"{FOREIGN}/page"},
    ],
)
async def test_actions_from_another_origin_are_refused(
    queue: Queue, open_client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    job = await queue.enqueue(command="true")
    await queue.add_schedule("nightly", every=3600, command="true")

    for path in (
        f"/api/jobs/{job.id}/cancel",
        "/api/queues/default/pause",
        "/api/schedules/nightly/pause",
        "/api/workers/stop",
        "/api/dlq/retry-all",
    ):
        refused = await open_client.post(path, headers=headers)
        assert refused.status_code == 403, (path, refused.text)
        assert set(refused.json()) == {"error"}

    assert (await queue.get(job.id)).state.value == "pending"
    assert [info.settings.paused for info in await queue.list_queues()] == [False]
    assert not (await queue.list_schedules())[0].paused


async def test_actions_from_the_same_origin_or_no_browser_work(
    queue: Queue, open_client: httpx.AsyncClient
) -> None:
    first = await queue.enqueue(command="true")
    second = await queue.enqueue(command="true")
    same = await open_client.post(f"/api/jobs/{first.id}/cancel", headers={"origin": BASE})
    assert same.status_code == 200
    scripted = await open_client.post(f"/api/jobs/{second.id}/cancel")  # curl sends no Origin
    assert scripted.status_code == 200


async def test_a_foreign_origin_cannot_sign_in(guarded: httpx.AsyncClient) -> None:
    response = await guarded.post("/login", data={"token": TOKEN}, headers={"origin": FOREIGN})
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


async def test_without_a_token_only_loopback_names_are_answered(queue: Queue) -> None:
    """A site re-pointing its name at 127.0.0.1 (DNS rebinding) gets nothing."""
    async with client_for(queue, token=None, base="http://evil.example:8080") as rebound:
        assert (await rebound.get("/api/status")).status_code == 403
        assert (await rebound.get("/")).status_code == 403
    for base in ("http://localhost:8080", "http://[::1]:8080", "http://127.0.0.2"):
        async with client_for(queue, token=None, base=base) as local:
            assert (await local.get("/api/status")).status_code == 200, base
    async with client_for(queue, token=TOKEN, base="http://dashboard.example") as named:
        assert (await named.get("/api/status", headers=BEARER)).status_code == 200


def test_loopback_and_origin_rules() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "example.com", "", "127.0.0.1.example"]))
    assert same_origin("http://127.0.0.1:8080", "127.0.0.1:8080")
    assert same_origin("http://127.0.0.1:8080/jobs?x=1", "127.0.0.1:8080")
    assert same_origin("http://example.com", "example.com:80")
    assert same_origin("https://dash.example.com", "dash.example.com")  # through a TLS proxy
    assert same_origin("http://[::1]:8080", "[::1]:8080")
    assert not same_origin("https://dash.example.com", "dash.example.com:8080")
    assert not same_origin("http://127.0.0.1:8081", "127.0.0.1:8080")
    assert not same_origin("http://evil.example", "127.0.0.1")
    assert not same_origin("null", "127.0.0.1:8080")
    assert not same_origin("http://127.0.0.1:bad", "127.0.0.1:8080")


# --- what a job's fields can do ----------------------------------------------------------------


async def test_a_job_cannot_add_markup(queue: Queue, open_client: httpx.AsyncClient) -> None:
    job = await queue.enqueue(command=SCRIPT, unique_key=SCRIPT, queue="q", cwd="/tmp/<b>")

    for path in ("/jobs", f"/jobs/{job.id}", f"/jobs?q={SCRIPT}"):
        page = await open_client.get(path)
        assert page.status_code == 200, path
        assert SCRIPT not in page.text, path
        assert "<b>" not in page.text, path
        assert ESCAPED in page.text, path


async def test_env_values_are_masked_on_pages(queue: Queue, open_client: httpx.AsyncClient) -> None:
    job = await queue.enqueue(command="true", env={"API_KEY": "hunter2-value", "MODE": "fast"})

    page = (await open_client.get(f"/jobs/{job.id}")).text

    assert "hunter2-value" not in page and "fast" not in page
    assert "API_KEY=••••" in page and "MODE=••••" in page
    # The API keeps the CLI's shape, env included, behind the same checks as everything else.
    assert (await open_client.get(f"/api/jobs/{job.id}")).json()["env"]["API_KEY"] == "hunter2-value"
