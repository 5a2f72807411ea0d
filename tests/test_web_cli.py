"""``queuectl dashboard`` and ``worker start --dashboard`` as real processes (issue 14).

Each process prints ``queuectl: dashboard at URL`` once it listens (with the real port when
``--port 0`` asked for any); the tests read that line from its stderr, use the server, and
stop it as a user would.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import httpx
import pytest
from helpers import DEADLINE, invoke, queuectl_env, run_queuectl, wait_until
from prometheus_client.parser import text_string_to_metric_families

URL_LINE = re.compile(r"queuectl: dashboard at (http://\S+)")
TOKEN_ENV = "QUEUECTL_DASHBOARD_TOKEN"


class Started:
    """A background ``queuectl`` process whose stderr goes to a file."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    @property
    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def url(self) -> str:
        """The address the process announced, once it did (fails if it exited first)."""
        wait_until(
            lambda: URL_LINE.search(self.stderr) is not None or self.process.poll() is not None,
            what="the dashboard's address",
        )
        found = URL_LINE.search(self.stderr)
        assert found is not None, (self.process.poll(), self.stderr)
        return found.group(1)


class Start(Protocol):
    def __call__(self, target: str, *args: str, env: dict[str, str] | None = None) -> Started: ...


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Start ``queuectl ARGS`` on ``target`` (``$QUEUECTL_DASHBOARD_TOKEN`` only if ``env`` sets it)."""
    started: list[Started] = []

    def run(target: str, *args: str, env: dict[str, str] | None = None) -> Started:
        log = tmp_path / f"process-{len(started)}.log"
        environment = queuectl_env(target, env)
        if env is None or TOKEN_ENV not in env:
            environment.pop(TOKEN_ENV, None)
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "queuectl", *args],
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        started.append(Started(process, log))
        return started[-1]

    yield run
    for each in started:
        if each.process.poll() is None:
            each.process.kill()
            each.process.wait()


def stop(started: Started) -> int:
    started.process.send_signal(signal.SIGTERM)
    return started.process.wait(DEADLINE)


def metrics(url: str, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{url}metrics", headers=headers, timeout=DEADLINE)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_dashboard_serves_until_sigterm(start: Start, tmp_path: Path) -> None:
    target = str(tmp_path / "queue.db")
    assert run_queuectl(target, "enqueue", "-c", "true").returncode == 0
    dashboard = start(target, "dashboard", "--port", "0")
    url = dashboard.url()
    assert re.fullmatch(r"http://127\.0\.0\.1:[1-9]\d*/", url), url

    status = httpx.get(f"{url}api/status", timeout=DEADLINE)

    assert status.status_code == 200
    assert status.json()["jobs"]["pending"] == 1
    assert stop(dashboard) == 0
    assert dashboard.stderr.splitlines() == [f"queuectl: dashboard at {url}"]


def test_a_token_from_the_environment_guards_every_address(start: Start, tmp_path: Path) -> None:
    target = str(tmp_path / "queue.db")
    dashboard = start(target, "dashboard", "--host", "0.0.0.0", "--port", "0", env={TOKEN_ENV: "tok"})
    port = dashboard.url().rstrip("/").rsplit(":", 1)[1]
    url = f"http://127.0.0.1:{port}"

    assert httpx.get(f"{url}/api/status", timeout=DEADLINE).status_code == 401
    assert httpx.get(f"{url}/metrics", timeout=DEADLINE).status_code == 401
    authorized = httpx.get(f"{url}/api/status", headers={"authorization": "Bearer tok"}, timeout=DEADLINE)
    assert authorized.status_code == 200
    assert stop(dashboard) == 0


def test_a_non_loopback_host_without_a_token_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "store" / "queue.db"
    target.parent.mkdir()
    env = {key: value for key, value in os.environ.items() if key != TOKEN_ENV}
    for args, shown in (
        (["dashboard", "--host", "0.0.0.0"], "--host 0.0.0.0"),
        (["worker", "start", "--dashboard", "0.0.0.0:0", "--burst"], "--dashboard 0.0.0.0:0"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "queuectl", "--db", str(target), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        hint = (
            "--token or $QUEUECTL_DASHBOARD_TOKEN" if args[0] == "dashboard" else "$QUEUECTL_DASHBOARD_TOKEN"
        )
        assert result.stderr.splitlines() == [
            f"queuectl: error: {shown} is not loopback: a token is required ({hint})"
        ]
    assert list(target.parent.iterdir()) == []  # nothing opened, nothing created


def test_a_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for args in (["dashboard", "--port", port], ["worker", "start", "--burst", "--dashboard", port]):
            result = run_queuectl(str(tmp_path / "queue.db"), *args)
            assert result.returncode == 1, result.stderr
            (line,) = result.stderr.splitlines()[-1:]
            assert line.startswith("queuectl: error: cannot "), result.stderr
            assert "Traceback" not in result.stderr


def test_bad_dashboard_addresses_are_bad_usage(tmp_path: Path) -> None:
    for value in ("nonsense", "127.0.0.1:", "1:99999"):
        result = run_queuectl(str(tmp_path / "queue.db"), "worker", "start", "--burst", "--dashboard", value)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.splitlines()) == 1 and "--dashboard" in result.stderr


def test_without_the_web_extra_the_command_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "queuectl.web.server", None)  # import fails as if not installed

    result = invoke("dashboard")

    assert result.code == 1
    assert result.stderr.splitlines() == [
        "queuectl: error: the dashboard needs the web extra: pip install 'queuectl[web]'"
    ]


def test_worker_serves_metrics_while_it_works(start: Start, tmp_path: Path) -> None:
    target = str(tmp_path / "queue.db")
    go = tmp_path / "go"
    command = f"while [ ! -e {go} ]; do sleep 0.05; done"
    enqueued = run_queuectl(target, "enqueue", "-c", command, "--queue", "work")
    assert enqueued.returncode == 0, enqueued.stderr
    worker = start(target, "worker", "start", "--burst", "--dashboard", "127.0.0.1:0")
    url = worker.url()

    def processing() -> bool:
        found = metrics(url)
        return found.get(("queuectl_jobs", (("queue", "work"), ("state", "processing")))) == 1

    wait_until(processing, what="the job processing in /metrics")
    assert metrics(url)[("queuectl_workers", ())] == 1
    assert httpx.get(f"{url}api/workers", timeout=DEADLINE).json()[0]["running"] in (0, 1)

    go.touch()

    assert worker.process.wait(DEADLINE) == 0  # the burst ends, and the dashboard with it
    assert "Traceback" not in worker.stderr
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}api/status", timeout=5)


def test_worker_stops_its_dashboard_on_sigterm(start: Start, tmp_path: Path) -> None:
    target = str(tmp_path / "queue.db")
    worker = start(target, "worker", "start", "--dashboard", "0", env={TOKEN_ENV: "tok"})
    url = worker.url()
    assert url.startswith("http://127.0.0.1:")
    assert httpx.get(f"{url}api/status", timeout=DEADLINE).status_code == 401  # a token set: required
    assert stop(worker) == 0
    assert "Traceback" not in worker.stderr
