"""What a worker tells the person who runs it, and nothing more with ``--quiet``.

A start-up line (worker, store, slots, queues; never a password), when it waits for a scheduled job
when that job is due (once per due time), what a stop signal does now, and per-job lines whose
commands are escaped and shortened, formatted only when INFO logging is on. Durations of
``--idle-timeout`` and ``--grace`` take every form of ``queuectl.durations``.
"""

from __future__ import annotations

import logging
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import helpers
import pytest
from helpers import (
    DEADLINE,
    assert_error,
    exit_code_within,
    invoke,
    is_postgres,
    queuectl_env,
    run_queuectl,
    wait_for,
    wait_until,
)

from queuectl import Queue
from queuectl.cli import worker_start
from queuectl.display import LOG_WIDTH, OneLine, in_words, one_line, printable, quantity, shorten
from queuectl.durations import DURATION_FORMS
from queuectl.storage.base import Store
from queuectl.worker import WorkerPool, attempts

FAST = {"backoff_base": "1", "backoff_max": "0.01", "poll_interval": "0.05"}
START_LINE = (
    r"queuectl: worker (?P<host>[^:\s]+):(?P<pid>\d+):[0-9a-f]{8} started on (?P<store>.+): (?P<capacity>.+)"
)


@pytest.fixture
def target(store_target: str) -> str:
    for key, value in FAST.items():
        assert run_queuectl(store_target, "config", "set", key, value).returncode == 0
    return store_target


@pytest.fixture
async def queue(store_target: str) -> AsyncIterator[Queue]:
    async with await Queue.open(store_target) as opened:
        for key, value in FAST.items():
            await opened.set_setting(key, value)
        yield opened


_STARTED: list[subprocess.Popen[str]] = []


def start_worker(target: str, *args: str, stderr: Path) -> subprocess.Popen[str]:
    """``helpers.start_worker``, remembered so that a failed test leaves no worker behind."""
    worker = helpers.start_worker(target, *args, stderr=stderr)
    _STARTED.append(worker)
    return worker


@pytest.fixture(autouse=True)
def no_worker_left() -> Iterator[None]:
    yield
    while _STARTED:
        worker = _STARTED.pop()
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=DEADLINE)


def enqueue(target: str, *options: str) -> str:
    done = run_queuectl(target, "enqueue", *options)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def shown_store(target: str) -> str:
    """What the start-up line names: a SQLite file's absolute path, a URL without query or password."""
    if not is_postgres(target):
        return str(Path(target).absolute())
    parts = urlsplit(target)  # the test server's URL has no password
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def run_worker(target: str, tmp_path: Path, *args: str) -> tuple[int, str, int]:
    """``queuectl worker start ARGS`` to its end: exit code, stderr, pid."""
    log = tmp_path / "worker.log"
    worker = start_worker(target, *args, stderr=log)
    code = exit_code_within(worker)
    return code, log.read_text(), worker.pid


# --- the start-up line ------------------------------------------------------------------------


@pytest.mark.parametrize("verbose", [(), ("-vv",)], ids=["plain", "vv"])
def test_an_idle_worker_says_it_started(target: str, tmp_path: Path, verbose: tuple[str, ...]) -> None:
    log = tmp_path / "worker.log"
    with log.open("w") as stderr:
        worker = subprocess.Popen(
            [sys.executable, "-m", "queuectl", *verbose, "worker", "start", "--idle-timeout", "0.1s"],
            env=queuectl_env(target),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
    _STARTED.append(worker)
    assert worker.wait(timeout=DEADLINE) == 0
    text = log.read_text()
    (line,) = [line for line in text.splitlines() if line.startswith("queuectl: worker ")]  # -vv logs more
    match = re.fullmatch(START_LINE, line)
    assert match is not None, text
    assert match["host"] == socket.gethostname() and int(match["pid"]) == worker.pid
    assert match["store"] == shown_store(target)
    assert match["capacity"] == "1 slot, all queues"


def test_the_start_up_line_names_slots_and_queues(target: str, tmp_path: Path) -> None:
    code, text, _ = run_worker(
        target, tmp_path, "--burst", "--count", "4", "--queue", "a", "--queue", "b\x1b"
    )
    assert code == 0
    assert text.splitlines()[0].endswith(": 4 slots, queues a, b\\x1b"), text


@pytest.mark.postgres
def test_the_start_up_line_never_shows_a_postgres_password(postgres_target: str, tmp_path: Path) -> None:
    parts = urlsplit(postgres_target)
    user, _, hosts = parts.netloc.rpartition("@")
    with_password = urlunsplit(
        parts._replace(netloc=f"{user}:pass-in-netloc@{hosts}", query=f"{parts.query}&password=pass-in-query")
    )
    code, text, _ = run_worker(with_password, tmp_path, "--burst")
    assert code == 0, text
    assert "pass-in" not in text
    assert f"started on {parts.scheme}://{user}@{hosts}{parts.path}: 1 slot" in text, text


# --- waiting for a scheduled job --------------------------------------------------------------


def test_drain_says_when_the_scheduled_job_is_due(target: str, tmp_path: Path) -> None:
    enqueue(target, "--command", "true", "--run-at", "2030-01-01T00:00:00Z")
    log = tmp_path / "worker.log"
    worker = start_worker(target, "--drain", stderr=log)
    wait_until(lambda: "next job due" in log.read_text(), what="the waiting notice")
    assert run_queuectl(target, "worker", "stop").returncode == 0
    assert exit_code_within(worker) == 0
    notices = [line for line in log.read_text().splitlines() if "next job due" in line]
    assert len(notices) == 1, notices
    assert re.search(
        r"INFO queuectl\.worker\.pool: next job due 2030-01-01 00:00:00 UTC, in \d+ years?", notices[0]
    )


class CountingStore:
    """A store that counts how often the pool asks when the next job is due."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.polls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def next_run_at(self, queues: Sequence[str] | None = None) -> float | None:
        self.polls += 1
        return await self.store.next_run_at(queues)


async def test_the_waiting_notice_comes_once_per_due_time(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="queuectl.worker")
    counting = CountingStore(queue.store)
    await queue.enqueue(command="true", delay=3 * 3600)

    def notices() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("next job due")]

    async def polled(times: int) -> None:
        target = counting.polls + times
        await wait_for(lambda: _true(counting.polls >= target), what=f"{times} more polls")

    async with WorkerPool(cast(Store, counting)):
        await polled(10)
        assert len(notices()) == 1 and notices()[0].endswith(", in 3 hours"), notices()
        await queue.enqueue(command="true", delay=90 * 60)  # a sooner one
        await polled(10)
        assert len(notices()) == 2 and notices()[1].endswith(", in 1 hour 30 minutes"), notices()


async def _true(value: bool) -> bool:
    return value


# --- stopping ---------------------------------------------------------------------------------


def test_signals_say_what_happens_to_the_running_job(target: str, tmp_path: Path) -> None:
    started = tmp_path / "started"
    job_id = enqueue(target, "--command", f"touch {started}; sleep 30")
    log = tmp_path / "worker.log"
    worker = start_worker(target, stderr=log)
    wait_until(started.exists, what="the job to start")
    worker.send_signal(signal.SIGINT)
    first = "queuectl: stopping: waiting up to 30s for 1 running job; Ctrl-C again to stop them now"
    wait_until(lambda: first in log.read_text().splitlines(), what="the stopping note")
    worker.send_signal(signal.SIGINT)
    assert exit_code_within(worker) == 0
    lines = log.read_text().splitlines()
    assert "queuectl: stopping now: putting 1 running job back to pending" in lines, lines
    assert f"put back {job_id}" in lines[-1]


def test_a_signal_with_no_grace_says_the_jobs_go_back(target: str, tmp_path: Path) -> None:
    started = tmp_path / "started"
    enqueue(target, "--command", f"touch {started}; sleep 30")
    log = tmp_path / "worker.log"
    worker = start_worker(target, "--grace", "0", stderr=log)
    wait_until(started.exists, what="the job to start")
    worker.send_signal(signal.SIGTERM)
    assert exit_code_within(worker) == 0
    assert "queuectl: stopping: putting 1 running job back to pending" in log.read_text().splitlines()


def test_a_signal_to_an_idle_worker_just_says_stopping(target: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    worker = start_worker(target, stderr=log)
    wait_until(lambda: "started on" in log.read_text(), what="the start-up line")
    worker.send_signal(signal.SIGTERM)
    assert exit_code_within(worker) == 0
    assert log.read_text().splitlines()[1:] == ["queuectl: stopping"]


def test_quiet_silences_every_notice(target: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    job_id = enqueue(target, "--command", f"touch {marker}")
    enqueue(target, "--command", "true", "--run-at", "2030-01-01T00:00:00Z")
    log = tmp_path / "worker.log"
    worker = start_worker(target, "--drain", "--quiet", stderr=log)
    wait_until(marker.exists, what="the first job to run")
    wait_until(
        lambda: f'"id": "{job_id}"' in run_queuectl(target, "list", "--state", "completed", "--json").stdout
    )
    assert run_queuectl(target, "worker", "stop").returncode == 0  # "stop requested through the store"
    worker.send_signal(signal.SIGTERM)  # "stopping"
    assert exit_code_within(worker) == 0
    assert log.read_text() == ""


# --- commands in log lines --------------------------------------------------------------------

CLEAR_SCREEN = "printf '\\033[2J\\033[H'"


async def test_log_lines_escape_and_shorten_commands(queue: Queue, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="queuectl.worker")
    tricky = f"echo one\necho two; {CLEAR_SCREEN}\r"
    huge = "true " + "x" * 131_000
    failing = "exit 3 # \x1b]0;title\x07"
    for command in (tricky, huge, failing):
        await queue.enqueue(command=command, max_retries=0)
    await queue.pool(mode="burst", count=3).run()
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("queuectl.worker")]
    assert len(messages) == 6, messages
    for message in messages:
        assert message.isprintable(), message
        assert len(message) < LOG_WIDTH + 150, len(message)
    joined = "\n".join(messages)
    assert "echo one\\necho two; printf '\\033[2J\\033[H'\\r" in joined
    assert "exit 3 # \\x1b]0;title\\x07" in joined
    assert "true xxx" in joined and "x..." in joined


def test_a_worker_process_prints_no_control_characters(target: str, tmp_path: Path) -> None:
    enqueue(target, "--command", "true '\x1b[2J\x1bc'")
    enqueue(target, "--command", "true " + "y" * 131_000)
    code, text, _ = run_worker(target, tmp_path, "--burst")
    assert code == 0
    assert "\x1b" not in text and "\\x1b[2J\\x1bc" in text
    assert max(len(line) for line in text.splitlines()) < 500


class CountedOneLine(OneLine):
    made = 0

    def __init__(self, text: str) -> None:
        CountedOneLine.made += 1
        super().__init__(text)


@pytest.mark.parametrize("info", [False, True], ids=["info-off", "info-on"])
async def test_commands_are_formatted_only_when_info_is_on(
    queue: Queue, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, info: bool
) -> None:
    caplog.set_level(logging.INFO if info else logging.WARNING, logger="queuectl.worker")
    monkeypatch.setattr(attempts, "OneLine", CountedOneLine)
    monkeypatch.setattr(CountedOneLine, "made", 0)
    for index in range(3):
        await queue.enqueue(command=f"exit {index}", max_retries=0)
    await queue.pool(mode="burst", count=3).run()
    assert (CountedOneLine.made > 0) is info


def test_display_helpers() -> None:
    assert printable("a\tb\nc\x1b[2J\x7f\ud800") == "a\\tb\\nc\\x1b[2J\\x7f\\ud800"
    assert printable("a\tb", keep="\t") == "a\tb"
    assert shorten("abcdef", 6) == "abcdef" and shorten("abcdefg", 6) == "abc..."
    assert one_line("x" * 10**6, 10) == "xxxxxxx..." and one_line("\n" * 10, 10) == "\\n\\n\\n..."
    assert one_line("ab\ncd", 6) == "ab\\ncd" and one_line("ab\ncd", 5) == "ab..."  # no escape cut in two
    assert one_line("short") == "short" and str(OneLine("a\nb")) == "a\\nb"
    assert [quantity(n, "slot") for n in (0, 1, 2)] == ["0 slots", "1 slot", "2 slots"]
    spans = {
        0.2: "1 second",
        59: "59 seconds",
        90: "1 minute 30 seconds",
        5400: "1 hour 30 minutes",
        7200: "2 hours",
        90000: "1 day 1 hour",
        3 * 365 * 86400 + 50 * 86400: "3 years",
    }
    assert {seconds: in_words(seconds) for seconds in spans} == spans


# --- durations of --idle-timeout and --grace --------------------------------------------------


@pytest.fixture
def stop_signals_restored() -> Iterator[None]:
    """``worker start`` owns SIGINT and SIGTERM until its process exits: in-process, give them back."""
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)


@pytest.mark.parametrize(
    ("args", "idle_timeout", "grace"),
    [
        (["--idle-timeout", "2s"], 2.0, 30.0),
        (["--idle-timeout", "1h30m", "--grace", "30s"], 5400.0, 30.0),
        (["--idle-timeout", "90", "--grace", "1.5m"], 90.0, 90.0),
        (["--grace", "0"], None, 0.0),
        (["--grace", "1d"], None, 86400.0),
    ],
)
def test_idle_timeout_and_grace_take_every_duration_form(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    stop_signals_restored: None,
    args: list[str],
    idle_timeout: float | None,
    grace: float,
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(worker_start, "_run_pool", lambda target, signals, **options: seen.update(options))
    result = invoke("--db", str(tmp_path / "queue.db"), "worker", "start", *args)
    assert result.code == 0, result.stderr
    assert (seen["idle_timeout"], seen["grace"]) == (idle_timeout, grace)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--idle-timeout", "2x"], ["--idle-timeout", "'2x' is not a duration", DURATION_FORMS]),
        (["--idle-timeout", "0"], ["--idle-timeout", "'0' is too short: use more than 0", DURATION_FORMS]),
        (["--idle-timeout", "-5s"], ["--idle-timeout", "'-5s' is negative", DURATION_FORMS]),
        (["--grace", "-1"], ["--grace", "'-1' is negative: use 0 (stop running jobs at once) or more"]),
        (["--grace", "soon"], ["--grace", "'soon' is not a duration", DURATION_FORMS]),
        (["--grace", "9" * 400], ["--grace", "is too long", DURATION_FORMS]),
    ],
)
def test_a_bad_duration_is_bad_usage(tmp_path: Path, args: list[str], words: list[str]) -> None:
    store = tmp_path / "queue.db"
    assert_error(invoke("--db", str(store), "worker", "start", *args), 2, *words)
    assert not store.exists()


def test_an_idle_timeout_with_a_unit_ends_an_idle_worker(target: str, tmp_path: Path) -> None:
    began = time.monotonic()
    code, text, _ = run_worker(target, tmp_path, "--idle-timeout", "0.5s", "--grace", "1m")
    assert code == 0, text
    assert time.monotonic() - began >= 0.5
