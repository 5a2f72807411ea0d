"""The dashboard in a real browser: Debian's chromium driven by Playwright (issue 14).

The dashboard runs as a real ``queuectl dashboard`` process on a SQLite store; jobs are
enqueued and run by real ``queuectl`` processes beside it, as a user would. Every check is on
what the page shows, waited for with Playwright's expectations (no fixed sleeps). Playwright
never downloads a browser here: it launches the system's chromium (``.ci/run`` installs it).

``QUEUECTL_UPDATE_SCREENSHOTS=1`` writes the README's screenshots into ``docs/``; otherwise
they go to a temporary folder, so that a test run leaves the checkout as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import DEADLINE, jobs_state, run_queuectl, wait_until
from playwright.sync_api import Browser, BrowserContext, Cookie, Page, ViewportSize, expect, sync_playwright

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
#: Playwright's waits, in milliseconds: generous, for a loaded 2-core machine.
WAIT_MS = int(DEADLINE * 1000)
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
DOCS = Path(__file__).resolve().parent.parent / "docs"
URL_LINE = re.compile(r"queuectl: dashboard at (http://\S+)")


def chromium_executable() -> str | None:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_executable()
    if executable is None:
        pytest.skip(f"the browser tests need chromium ({CHROMIUM}, or on PATH): apt-get install chromium")
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        # --no-sandbox: chromium's sandbox refuses to run as root, which CI containers are.
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()
    expect.set_options(timeout=None)  # Playwright's own default again


# --- the dashboard process -------------------------------------------------------------------


@dataclass(frozen=True)
class Dashboard:
    process: subprocess.Popen[bytes]
    url: str  # http://127.0.0.1:PORT/
    log: Path


StartDashboard = Callable[..., Dashboard]


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[StartDashboard]:
    """Start ``queuectl --db TARGET dashboard --port 0 OPTIONS``; stopped at the end of the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(target: str, *options: str) -> Dashboard:
        log = tmp_path / f"dashboard-{len(started)}.log"
        env = dict(os.environ)
        env.pop("QUEUECTL_DASHBOARD_TOKEN", None)
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "queuectl", "--db", target, "dashboard", "--port", "0", *options],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
            )
        started.append(process)

        def announced() -> str | None:
            found = URL_LINE.search(log.read_text(errors="replace"))
            return found.group(1) if found else None

        wait_until(lambda: announced() is not None or process.poll() is not None, what="the dashboard's URL")
        url = announced()
        assert url is not None, f"the dashboard exited {process.poll()}: {log.read_text(errors='replace')}"
        return Dashboard(process, url if url.endswith("/") else f"{url}/", log)

    yield start
    for process in started:
        stop(process)
    for log in tmp_path.glob("dashboard-*.log"):
        assert "Traceback" not in log.read_text(errors="replace"), log.read_text(errors="replace")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


OpenPage = Callable[[Dashboard], Page]


@pytest.fixture
def open_page(browser: Browser) -> Iterator[OpenPage]:
    """A new browser context and page on a dashboard; no script error may happen on any page."""
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    def open_(target: Dashboard) -> Page:
        context = browser.new_context(base_url=target.url, viewport=VIEWPORT)
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("dialog", lambda dialog: dialog.accept())  # a confirm() before an action: yes
        return page

    yield open_
    for context in contexts:
        context.close()
    assert errors == [], f"script errors on the dashboard's pages: {errors}"


def mark_loaded(page: Page) -> None:
    """Tag the loaded document: ``assert_not_reloaded`` fails if the page was loaded again since."""
    page.evaluate("() => { window.queuectlTestMark = 'still here'; }")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("() => window.queuectlTestMark") == "still here", "the page was reloaded"


def assert_nav(page: Page) -> None:
    for href in ("/", "/jobs", "/dlq", "/queues", "/schedules", "/workers"):
        expect(page.locator(f'nav a[href="{href}"]').first).to_be_visible()


def enqueue(target: str, *args: str) -> str:
    result = run_queuectl(target, "enqueue", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def run_burst(target: str, *args: str) -> None:
    result = run_queuectl(target, "worker", "start", "--burst", "--quiet", *args)
    assert result.returncode == 0, result.stderr


def start_worker(
    target: str, log: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``queuectl worker start --grace 0 ARGS`` in the background (stopped jobs end at once)."""
    env = dict(os.environ, QUEUECTL_DB=target, **(env or {}))
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "queuectl", "worker", "start", "--grace", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        )


@pytest.fixture
def worker_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        stop(process)


# --- scenarios ---------------------------------------------------------------------------------


def test_overview_counts_follow_an_enqueue_without_reload(
    tmp_path: Path, dashboard: StartDashboard, open_page: OpenPage
) -> None:
    target = str(tmp_path / "queue.db")
    page = open_page(dashboard(target))
    page.goto("/")
    pending = page.locator('[data-state-count="pending"]')
    expect(pending).to_have_text("0")
    mark_loaded(page)

    enqueue(target, "-c", "true")

    expect(pending).to_have_text("1")
    assert_not_reloaded(page)
    expect(page.locator('tr[data-queue="default"]')).to_be_visible()
    assert_nav(page)


def test_a_dead_job_is_retried_from_the_dlq_page(
    tmp_path: Path, dashboard: StartDashboard, open_page: OpenPage
) -> None:
    target = str(tmp_path / "queue.db")
    job_id = enqueue(target, "-c", "exit 3", "--max-retries", "0")
    run_burst(target)
    assert jobs_state(target, [job_id]) == {job_id: "dead"}
    page = open_page(dashboard(target))
    page.goto("/dlq")
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    expect(row).to_be_visible()
    expect(page.locator('button[data-action="retry-all"]')).to_be_visible()

    row.locator('button[data-action="retry"]').click()

    wait_until(lambda: jobs_state(target, [job_id]) == {job_id: "pending"}, what="the job back to pending")
    expect(page.locator("[role=alert]:visible")).to_have_count(0)
    page.goto(f"/jobs/{job_id}")
    expect(page.locator("[data-job-state]")).to_have_text("pending")


def test_a_running_jobs_output_appears_live(
    tmp_path: Path,
    dashboard: StartDashboard,
    open_page: OpenPage,
    worker_processes: list[subprocess.Popen[bytes]],
) -> None:
    target = str(tmp_path / "queue.db")
    go = tmp_path / "go"
    # The second line waits for the test's signal (a file), so that it cannot be printed
    # before the page has shown the first; then the job sleeps until the worker is stopped.
    command = f"echo 'first line'; while [ ! -e {go} ]; do sleep 0.05; done; echo 'second line'; sleep 60"
    job_id = enqueue(target, "-c", command)
    worker_processes.append(start_worker(target, tmp_path / "worker.log"))
    wait_until(lambda: jobs_state(target, [job_id]) == {job_id: "processing"}, what="the job to start")
    page = open_page(dashboard(target))
    page.goto(f"/jobs/{job_id}")
    mark_loaded(page)
    output = page.locator("pre#output")
    state = page.locator("[data-job-state]")

    expect(output).to_contain_text("first line")
    expect(state).to_have_text("processing")
    assert "second line" not in output.inner_text()

    go.touch()

    expect(output).to_contain_text("second line")
    expect(state).to_have_text("processing")
    assert output.inner_text().index("first line") < output.inner_text().index("second line")
    assert_not_reloaded(page)
    # Only what the state allows: a running job can be cancelled, not retried; once cancelled
    # (from the page), the other way round, without a reload.
    expect(page.locator('button[data-action="retry"]')).to_be_hidden()
    page.locator('button[data-action="cancel"]').click()
    expect(state).to_have_text("cancelled")
    expect(page.locator('button[data-action="cancel"]')).to_be_hidden()
    expect(page.locator('button[data-action="retry"]')).to_be_visible()
    assert_not_reloaded(page)


def test_sign_in_with_a_token(
    tmp_path: Path, browser: Browser, dashboard: StartDashboard, open_page: OpenPage
) -> None:
    target = str(tmp_path / "queue.db")
    guarded = dashboard(target, "--token", "secret")
    page = open_page(guarded)
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login(\?.*)?$"))

    page.locator("form#login input[name=token]").fill("wrong")
    page.locator("form#login [type=submit]").click()
    expect(page.locator("form#login")).to_be_visible()
    expect(page.locator('[data-state-count="pending"]')).to_have_count(0)
    assert signed_in_cookies(page) == []

    page.locator("form#login input[name=token]").fill("secret")
    page.locator("form#login [type=submit]").click()
    expect(page.locator('[data-state-count="pending"]')).to_have_text("0")
    expect(page).to_have_url(guarded.url)
    cookies = signed_in_cookies(page)
    assert len(cookies) == 1, cookies
    assert (cookies[0]["httpOnly"], cookies[0]["sameSite"]) == (True, "Strict")
    assert "queuectl_token" not in page.evaluate("() => document.cookie")  # no script can read it
    # The signed-in browser reads the API; a browser without the cookie is refused.
    assert page.context.request.get("/api/status").status == 200
    anonymous = browser.new_context(base_url=guarded.url)
    try:
        refused = anonymous.request.get("/api/status")
        assert refused.status == 401
        assert "error" in refused.json()
    finally:
        anonymous.close()


def signed_in_cookies(page: Page) -> list[Cookie]:
    return [cookie for cookie in page.context.cookies() if cookie.get("name") == "queuectl_token"]


def test_every_page_has_its_hooks_and_a_queue_pauses_from_its_page(
    tmp_path: Path, dashboard: StartDashboard, open_page: OpenPage
) -> None:
    target = str(tmp_path / "queue.db")
    dead = enqueue(target, "-c", "exit 1", "--max-retries", "0", "--queue", "mail")
    run_burst(target)
    added = run_queuectl(target, "schedule", "add", "nightly", "--cron", "0 2 * * *", "-c", "true")
    assert added.returncode == 0, added.stderr
    page = open_page(dashboard(target))
    hooks = {
        "/": [
            '[data-state-count="dead"]',
            "#chart",
            "[data-workers]",
            "[data-next-run]",
            'tr[data-queue="mail"]',
        ],
        "/jobs": [
            f'tr[data-job-id="{dead}"] a[href="/jobs/{dead}"]',
            "form#filter select[name=state]",
            "form#filter input[name=queue]",
            "form#filter input[name=q]",
        ],
        f"/jobs/{dead}": ["[data-job-state]", "pre#output", "table#history", 'button[data-action="retry"]'],
        "/dlq": [f'tr[data-job-id="{dead}"] button[data-action="retry"]', 'button[data-action="retry-all"]'],
        "/queues": ['tr[data-queue="mail"] button[data-action="pause"]'],
        "/schedules": ['tr[data-schedule="nightly"] button[data-action="pause"]'],
        "/workers": ['button[data-action="stop-all"]'],
    }
    for path, selectors in hooks.items():
        page.goto(path)
        assert_nav(page)
        for selector in selectors:
            expect(page.locator(selector).first, f"{selector} on {path}").to_be_attached()
    expect(page.locator("[data-job-state]")).to_have_count(0)  # the last page, /workers

    page.goto("/queues")
    mark_loaded(page)
    page.locator('tr[data-queue="mail"] button[data-action="pause"]').click()

    expect(page.locator('tr[data-queue="mail"] button[data-action="resume"]')).to_be_visible()
    listed = run_queuectl(target, "queue", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {queue["name"]: queue["paused"] for queue in json.loads(listed.stdout)} == {"mail": True}
    assert_not_reloaded(page)


def test_job_values_are_shown_as_text_never_as_markup(
    tmp_path: Path, dashboard: StartDashboard, open_page: OpenPage
) -> None:
    target = str(tmp_path / "queue.db")
    page = open_page(dashboard(target))
    page.goto("/jobs")
    mark_loaded(page)
    markup = '<img src=x onerror="window.pwned=1">'
    # Enqueued while the page is open: the page's own script adds the row.
    job_id = enqueue(target, "-c", f"echo '{markup}'", "--queue", "<b>q</b>")

    row = page.locator(f'tr[data-job-id="{job_id}"]')
    expect(row).to_contain_text(markup)
    expect(row).to_contain_text("<b>q</b>")
    assert_not_reloaded(page)
    page.goto(f"/jobs/{job_id}")
    expect(page.locator("[data-job-state]")).to_have_text("pending")
    expect(page.locator("body")).to_contain_text(markup)
    for path in ("/jobs", f"/jobs/{job_id}", "/", "/queues"):
        page.goto(path)
        expect(page.locator("nav")).to_be_visible()
        assert page.locator("main img:not(#chart), main b, table img, table b").count() == 0, path
        assert page.evaluate("() => window.pwned") is None, path


# --- screenshots -------------------------------------------------------------------------------

#: Small scripts the screenshot jobs run, as a team's tools would be: name -> body.
SCRIPTS = {
    "resize-images": 'echo "resizing 48 images in $1 to 800px"; echo "done: 48 written, 0 skipped"',
    "sync-invoices": 'echo "fetched 212 invoices since $1"; echo "synced 212, 3 updated"',
    "rebuild-search-index": 'echo "indexed 18,402 documents in 3 shards"',
    "daily-report": 'echo "report for $2: 1,204 orders, 37 refunds"; echo "wrote reports/$2.pdf"',
    "send-newsletter": 'echo "smtp: connection refused (mail.internal:587)" >&2; exit 1',
    "export-ledger": 'echo "ledger export: account 4410 is locked" >&2; exit 2',
    "fetch-rates": 'echo "rates api: 503 Service Unavailable" >&2; exit 1',
    "reindex-archive": (
        'echo "reindexing archive 2019..2024"; for year in 2019 2020 2021; do'
        ' echo "$year: 41,003 rows"; done; echo "2022: in progress"; sleep 120'
    ),
}
#: The jobs of the screenshots, and the state each ends in after one burst.
SCREENSHOT_JOBS: list[tuple[dict[str, object], str]] = [
    ({"command": "resize-images uploads/2026-12"}, "completed"),
    ({"command": "sync-invoices 2026-12-01"}, "completed"),
    ({"command": "rebuild-search-index", "priority": 5}, "completed"),
    ({"command": "resize-images uploads/2026-11"}, "completed"),
    ({"command": "send-newsletter --list weekly", "max_retries": 0}, "dead"),
    ({"command": "fetch-rates EUR USD", "max_retries": 3}, "failed"),
    ({"command": "daily-report --date 2026-12-03", "queue": "reports"}, "completed"),
    ({"command": "daily-report --date 2026-12-04", "queue": "reports"}, "completed"),
    ({"command": "export-ledger --year 2026", "queue": "reports", "max_retries": 0}, "dead"),
    ({"command": "daily-report --date 2026-12-05", "queue": "reports", "delay": "6h"}, "pending"),
    ({"command": "sync-invoices 2026-12-05", "delay": "30m"}, "pending"),
]


def test_screenshots(
    tmp_path: Path,
    dashboard: StartDashboard,
    open_page: OpenPage,
    worker_processes: list[subprocess.Popen[bytes]],
) -> None:
    target = str(tmp_path / "queue.db")
    scripts = tmp_path / "bin"
    scripts.mkdir()
    for name, body in SCRIPTS.items():
        script = scripts / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    # The workers find the scripts on their PATH, as they would a team's tools.
    tools = {"PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"}
    # A failed job waits for its retry: long enough that the burst below does not run it again.
    assert run_queuectl(target, "config", "set", "backoff_base", "30").returncode == 0
    jobs = "\n".join(json.dumps(job) for job, _ in SCREENSHOT_JOBS)
    enqueued = run_queuectl(target, "enqueue-file", "-", input=jobs)
    assert enqueued.returncode == 0, enqueued.stderr
    ids = enqueued.stdout.split()
    burst = start_worker(target, tmp_path / "burst.log", "--burst", "--count", "4", env=tools)
    assert burst.wait(DEADLINE) == 0, (tmp_path / "burst.log").read_text()
    assert list(jobs_state(target, ids).values()) == [state for _, state in SCREENSHOT_JOBS]
    for command in (
        ("schedule", "add", "nightly-backup", "--cron", "0 2 * * *", "-c", "backup --full"),
        ("queue", "pause", "reports"),
        ("queue", "limit", "default", "--rate", "10/s"),
        ("queue", "limit", "archive", "--concurrency", "1"),
    ):
        done = run_queuectl(target, *command)
        assert done.returncode == 0, done.stderr
    # One job running now, on a worker that serves only its queue (the others stay as they are).
    running = enqueue(
        target,
        "-c",
        "reindex-archive --from 2019",
        "--queue",
        "archive",
        "--env",
        "ARCHIVE_TOKEN=s3cr3t-value",
    )
    worker_processes.append(start_worker(target, tmp_path / "worker.log", "--queue", "archive", env=tools))
    wait_until(lambda: jobs_state(target, [running]) == {running: "processing"}, what="the job to start")

    folder = DOCS if os.environ.get("QUEUECTL_UPDATE_SCREENSHOTS") == "1" else tmp_path / "docs"
    folder.mkdir(exist_ok=True)
    page = open_page(dashboard(target))

    page.goto("/")
    expect(page.locator('[data-state-count="completed"]')).to_have_text("6")
    expect(page.locator('[data-state-count="processing"]')).to_have_text("1")
    expect(page.locator('tr[data-queue="reports"]')).to_be_visible()
    expect(page.locator("[data-workers]")).to_have_text("1")
    page.screenshot(path=folder / "dashboard-overview.png")

    page.goto("/jobs")
    expect(page.locator("tr[data-job-id]")).to_have_count(len(ids) + 1)
    page.screenshot(path=folder / "dashboard-jobs.png")

    page.goto(f"/jobs/{running}")
    expect(page.locator("pre#output")).to_contain_text("2022: in progress")
    expect(page.locator("[data-job-state]")).to_have_text("processing")
    expect(page.locator("body")).to_contain_text("ARCHIVE_TOKEN")
    expect(page.locator("body")).not_to_contain_text("s3cr3t-value")  # env values are masked
    page.screenshot(path=folder / "dashboard-job.png", full_page=True)  # the output is below the fields

    page.goto("/queues")
    expect(page.locator("tr[data-queue]")).to_have_count(3)
    expect(page.locator('tr[data-queue="reports"] button[data-action="resume"]')).to_be_visible()
    page.screenshot(path=folder / "dashboard-queues.png")

    for name in ("overview", "jobs", "job", "queues"):
        shot = folder / f"dashboard-{name}.png"
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", shot
