"""Human output: tables that fit a terminal, short ids, relative times, colours; and ids by prefix.

A terminal is faked two ways: in-process, ``formatting.stdout_is_terminal`` answers yes and
``COLUMNS`` gives the width (on each backend through the ``cli`` fixture); and for real, a
``queuectl`` process whose stdout is a pseudo-terminal of 80 columns. Into a pipe (the
in-process default) the output stays the stable text scripts read.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import (
    DEADLINE,
    Cli,
    assert_error,
    block_on,
    make_completed,
    make_dead,
    make_processing,
    ok,
    queuectl_env,
)

from queuectl import Queue
from queuectl.cli import formatting, render
from queuectl.display import printable
from queuectl.models import AttemptOutcome, AttemptRecord, Job, JobState, QueueStatus, isoformat

ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
COLOURS = {"processing": "36", "completed": "32", "failed": "33", "dead": "31", "cancelled": "35"}
NOW = datetime.now(UTC)
ID_A = "aaaaaaaa-1111-4111-8111-111111111111"
ID_B = "aaaaaaaa-1222-4222-8222-222222222222"
ID_C = "bbbbbbbb-3333-4333-8333-333333333333"


def visible(text: str) -> str:
    return ESCAPE.sub("", text)


def widest(text: str) -> int:
    return max(len(visible(line)) for line in text.splitlines())


def painted(text: str, state: str) -> bool:
    """Whether ``state`` appears in its colour."""
    return re.search(rf"\x1b\[{COLOURS[state]}m{state}\s*\x1b\[0m", text) is not None


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """stdout counts as an 80-column colour terminal."""
    monkeypatch.setattr(formatting, "stdout_is_terminal", lambda: True)
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    yield


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative times are worked out from ``NOW``, however long the tests took to get here."""
    monkeypatch.setattr(formatting, "now", lambda: NOW)


def a_job(job_id: str, state: JobState = JobState.PENDING, **fields: object) -> Job:
    values: dict[str, object] = {
        "id": job_id,
        "command": "echo hello",
        "queue": "default",
        "priority": 0,
        "timeout": None,
        "max_retries": 3,
        "run_at": NOW - timedelta(minutes=2),
        "state": state,
        "attempts": 0,
        "created_at": NOW - timedelta(minutes=3),
        "updated_at": NOW - timedelta(minutes=2),
        **fields,
    }
    return Job(**values)  # type: ignore[arg-type]


def every_kind_of_job() -> list[Job]:
    """Every state, and every column at its widest: what must still fit 80 columns."""
    huge = "for i in $(seq 100); do echo \x1b[2J$i\n; done; " * 2000
    return [
        a_job(ID_A, JobState.PENDING, run_at=NOW + timedelta(minutes=5, seconds=3)),
        a_job(ID_B, JobState.PROCESSING, attempts=1, progress="123456/999999 files copied so far"),
        a_job(ID_C, JobState.COMPLETED, attempts=1, priority=-20),
        a_job("x" * 200, JobState.FAILED, attempts=2, queue="q" * 200, command=huge),
        a_job("short-id", JobState.DEAD, attempts=4, queue="nightly-backups-of-everything"),
        a_job("cancelled-one", JobState.CANCELLED, run_at=NOW - timedelta(days=3)),
    ]


# --- pure pieces ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "text"),
    [
        (timedelta(0), "now"),
        (timedelta(seconds=5.5), "in 5s"),
        (timedelta(seconds=-5), "5s ago"),
        (timedelta(minutes=-2, seconds=-30), "2m ago"),
        (timedelta(minutes=59, seconds=59), "in 59m"),
        (timedelta(hours=-3), "3h ago"),
        (timedelta(days=4, hours=23), "in 4d"),
        (timedelta(days=-800), "2y ago"),
    ],
)
def test_relative_times(offset: timedelta, text: str) -> None:
    assert render.relative(NOW + offset, NOW) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.042, "0.04s"), (12.53, "12.5s"), (125, "2m05s"), (3725, "1h02m"), (3 * 86400 + 4 * 3600, "3d04h")],
)
def test_attempt_durations(seconds: float, text: str) -> None:
    assert render.span(seconds) == text


def test_ids_are_cut_to_a_prefix_unique_among_them() -> None:
    shown = render.shown_ids(render.id_lengths([ID_A, ID_B, ID_C, "build-42", "a" * 13, "a" * 13 + "b" * 20]))
    assert shown[ID_A] == "aaaaaaaa-11"  # the first 10 characters are shared with ID_B
    assert shown[ID_B] == "aaaaaaaa-12"
    assert shown[ID_C] == "bbbbbbbb"  # at least 8
    assert shown["build-42"] == "build-42"  # short ids stay whole
    assert shown["a" * 13] == "a" * 13  # a prefix of another id: whole, an exact id wins
    assert shown["a" * 13 + "b" * 20] == "a" * 13 + "b"


# --- the jobs table ---------------------------------------------------------------------------


def test_the_table_fits_80_columns_on_a_terminal(
    terminal: None, capsys: pytest.CaptureFixture[str], frozen: None
) -> None:
    render.jobs(every_kind_of_job(), as_json=False)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 7  # a header and a line per job: the command's newlines are escaped
    assert widest(out) <= 80, out
    header = visible(lines[0]).split()
    assert header == ["ID", "STATE", "TRIES", "PRI", "QUEUE", "RUN", "AT", "PROGRESS", "COMMAND"]
    rows = [visible(line) for line in lines[1:]]
    assert rows[0].startswith("aaaaaaaa-11 ") and "in 5m" in rows[0]
    assert rows[1].startswith("aaaaaaaa-12 ")
    assert rows[2].startswith("bbbbbbbb ")
    assert rows[5].startswith("cancelled-one") and "3d ago" in rows[5]
    assert rows[3].split()[-4:] == ["for", "i", "in", "$..."]  # cut to fit, with ...
    assert "\x1b[2J" not in out  # the command's escape is not sent to the terminal
    for state in COLOURS:
        assert painted(out, state), state


@pytest.mark.parametrize("columns", [80, 60, 40])
def test_even_the_widest_values_fit(
    terminal: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], columns: int
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    jobs = [*every_kind_of_job(), a_job("y" * 30, priority=-2147483648, progress="p" * 100)]
    render.jobs(jobs, as_json=False)
    out = capsys.readouterr().out
    assert widest(out) <= 80, out  # narrower: what cannot be cut (ids, states, numbers) stays


def test_the_table_uses_a_wider_terminal(
    terminal: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    render.jobs(every_kind_of_job(), as_json=False)
    out = capsys.readouterr().out
    assert 80 < widest(out) <= 160


def test_a_terminal_table_shows_only_columns_that_say_something(
    terminal: None, capsys: pytest.CaptureFixture[str]
) -> None:
    render.jobs([a_job(ID_A), a_job(ID_C, JobState.COMPLETED, attempts=1)], as_json=False)
    header = visible(capsys.readouterr().out.splitlines()[0]).split()
    assert header == ["ID", "STATE", "TRIES", "RUN", "AT", "COMMAND"]


@pytest.mark.parametrize(("variable", "value"), [("NO_COLOR", "1"), ("TERM", "dumb")])
def test_no_colour_with_no_color_or_a_dumb_terminal(
    terminal: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
) -> None:
    monkeypatch.setenv(variable, value)
    render.jobs(every_kind_of_job(), as_json=False)
    render.status(QueueStatus(jobs={JobState.DEAD: 2}, workers=1, next_run_at=None), as_json=False)
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert widest(out) <= 80
    assert out.splitlines()[1].startswith("aaaaaaaa-11 ")  # still the terminal's form


def test_an_empty_no_color_still_colours(
    terminal: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NO_COLOR", "")
    render.jobs(every_kind_of_job(), as_json=False)
    assert painted(capsys.readouterr().out, "dead")


def test_into_a_pipe_the_table_is_whole_and_plain(capsys: pytest.CaptureFixture[str]) -> None:
    jobs = every_kind_of_job()
    render.jobs(jobs, as_json=False)
    out = capsys.readouterr().out
    assert "\x1b" not in out
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID",
        "STATE",
        "ATTEMPTS",
        "PRIORITY",
        "QUEUE",
        "RUN",
        "AT",
        "PROGRESS",
        "COMMAND",
    ]
    assert lines[1].split()[:6] == [ID_A, "pending", "0", "0", "default", render.short_time(jobs[0].run_at)]
    assert lines[1].split()[6] == "-"  # no progress
    assert lines[2].split()[6] == "123456/999999"
    assert lines[4].startswith("x" * 200) and "q" * 200 in lines[4]  # nothing cut
    assert lines[4].endswith(printable(jobs[3].command))


def test_the_progress_column_only_when_a_job_reports_one(capsys: pytest.CaptureFixture[str]) -> None:
    render.jobs([a_job(ID_A), a_job(ID_C)], as_json=False)
    assert "PROGRESS" not in capsys.readouterr().out


# --- status, show --------------------------------------------------------------------------------


def test_status_on_a_terminal(terminal: None, capsys: pytest.CaptureFixture[str], frozen: None) -> None:
    counts = {JobState.PENDING: 3, JobState.COMPLETED: 10, JobState.DEAD: 1, JobState.CANCELLED: 2}
    render.status(
        QueueStatus(jobs=counts, workers=2, next_run_at=NOW + timedelta(minutes=59, seconds=50)),
        as_json=False,
    )
    out = capsys.readouterr().out
    assert widest(out) <= 80
    plain = visible(out)
    assert [line.split()[0] for line in plain.splitlines()[:6]] == [state.value for state in JobState]
    assert plain.splitlines()[5].split() == ["cancelled", "2"]
    assert plain.splitlines()[-1].split() == ["next", "run", "in", "59m"]
    assert painted(out, "dead") and painted(out, "completed")
    render.status(QueueStatus(jobs={}, workers=0, next_run_at=NOW - timedelta(seconds=90)), as_json=False)
    assert visible(capsys.readouterr().out).splitlines()[-1].split() == [
        "next",
        "run",
        "due",
        "(since",
        "1m)",
    ]


def test_status_into_a_pipe_has_iso_times(capsys: pytest.CaptureFixture[str], frozen: None) -> None:
    moment = NOW + timedelta(hours=1)
    render.status(QueueStatus(jobs={}, workers=0, next_run_at=moment), as_json=False)
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert out.splitlines()[-1].split() == ["next", "run", render.short_time(moment)]


def history_job() -> Job:
    start = NOW - timedelta(minutes=10)
    entries = (
        AttemptRecord(
            worker="build-host.example.com:4242:ab12cd34",
            host="build-host.example.com",
            pid=31337,
            started_at=start,
            finished_at=start + timedelta(seconds=2.5),
            exit_code=3,
            outcome=AttemptOutcome.FAILED,
            error="exit code 3",
        ),
        AttemptRecord(
            worker="w2",
            host="h2",
            pid=None,
            started_at=start + timedelta(minutes=1),
            finished_at=start + timedelta(minutes=1),
            exit_code=None,
            outcome=AttemptOutcome.NOT_STARTED,
            error="could not start: [Errno 2] No such file or directory: '/srv/gone' " + "x" * 200,
        ),
        AttemptRecord(
            worker="w3",
            host="h3",
            pid=77,
            started_at=start + timedelta(minutes=2),
            finished_at=start + timedelta(minutes=4, seconds=5),
            exit_code=0,
            outcome=AttemptOutcome.COMPLETED,
            error=None,
        ),
    )
    return a_job(
        ID_A,
        JobState.COMPLETED,
        attempts=3,
        cwd="/srv/app",
        env={"STAGE": "prod", "TOKEN": "s3cret\nline"},
        progress="10/10",
        schedule="nightly",
        history=entries,
        stdout=b"done\n",
    )


def test_show_lists_the_new_fields_and_the_history_into_a_pipe(capsys: pytest.CaptureFixture[str]) -> None:
    render.job_details(history_job(), as_json=False)
    lines = capsys.readouterr().out.splitlines()
    listed = lines[: lines.index("--- stdout ---")]
    fields = {line.split()[0]: line.split(None, 1)[1] for line in listed if line[:1].isalpha()}
    assert fields["cwd"] == "/srv/app"
    assert fields["env"] == "STAGE=prod"
    assert any(line.split() == ["TOKEN=s3cret\\nline"] for line in lines)  # the CLI shows values
    assert (fields["progress"], fields["schedule"], fields["history"]) == ("10/10", "nightly", "3 attempts")
    header = next(index for index, line in enumerate(lines) if line.split()[:2] == ["#", "OUTCOME"])
    assert lines[header].split() == ["#", "OUTCOME", "EXIT", "STARTED", "TOOK", "WORKER", "PID", "ERROR"]
    first, second, third = (line.split() for line in lines[header + 1 : header + 4])
    assert first == [
        "1", "failed", "3", render.short_time(NOW - timedelta(minutes=10)), "2.50s",
        "build-host.example.com:4242:ab12cd34", "31337", "exit", "code", "3",
    ]  # fmt: skip
    assert second[:3] == ["2", "could", "not"] and second[-1].endswith("x" * 200)
    assert "w2@h2" in second  # a worker id that does not name its host gets it
    assert third[:2] == ["3", "completed"] and "2m05s" in third and third[-1] == "-"
    assert "--- stdout ---" in lines and "done" in lines


def test_show_on_a_terminal_has_relative_times_and_a_history_that_fits(
    terminal: None, capsys: pytest.CaptureFixture[str], frozen: None
) -> None:
    render.job_details(history_job(), as_json=False)
    out = capsys.readouterr().out
    plain = visible(out)
    created = next(line for line in plain.splitlines() if line.startswith("created_at"))
    assert created.endswith(f"{render.short_time(NOW - timedelta(minutes=3))} (3m ago)")
    history = plain[plain.index("  #  OUTCOME") :].split("--- stdout ---")[0]
    assert widest(history) <= 80, history
    assert "10m ago" in history
    assert painted(out, "completed")


def test_show_json_has_the_history_as_objects(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    render.job_details(history_job(), as_json=True)
    data = json.loads(capsys.readouterr().out)
    assert data["env"] == {"STAGE": "prod", "TOKEN": "s3cret\nline"}
    assert data["history"][0] == {
        "worker": "build-host.example.com:4242:ab12cd34",
        "host": "build-host.example.com",
        "pid": 31337,
        "started_at": isoformat(NOW - timedelta(minutes=10)),
        "finished_at": isoformat(NOW - timedelta(minutes=10) + timedelta(seconds=2.5)),
        "exit_code": 3,
        "outcome": "failed",
        "error": "exit code 3",
    }
    assert [entry["outcome"] for entry in data["history"]] == ["failed", "could not start", "completed"]


# --- on each backend, through the command line -----------------------------------------------------


def enqueue_ids(cli: Cli, *ids: str, queue: str = "default") -> None:
    for job_id in ids:
        ok(cli("enqueue", "--id", job_id, "--queue", queue, "-c", "true"))


def test_list_on_a_terminal_cuts_ids_where_the_store_allows(cli: Cli, terminal: None) -> None:
    enqueue_ids(cli, ID_A, ID_C)
    enqueue_ids(cli, ID_B, queue="other")  # not listed below, but it shares 10 characters with ID_A
    out = ok(cli("list", "--queue", "default")).stdout
    assert widest(out) <= 80
    rows = [visible(line).split()[0] for line in out.splitlines()[1:]]
    assert rows == ["bbbbbbbb", "aaaaaaaa-11"]
    for prefix, job_id in (("bbbbbbbb", ID_C), ("aaaaaaaa-11", ID_A)):
        assert ok(cli("show", prefix, "--json")).json()["id"] == job_id
    assert "\x1b" not in ok(cli("list", "--json")).stdout  # --json: full ids, no colour
    assert {job["id"] for job in ok(cli("list", "--json")).json()} == {ID_A, ID_B, ID_C}


def test_list_colours_states_on_a_terminal(cli: Cli, cli_target: str, terminal: None) -> None:
    block_on(make_completed(cli_target, "done-job"))
    block_on(make_dead(cli_target, "dead-job"))
    block_on(make_processing(cli_target, "busy-job"))
    out = ok(cli("list")).stdout
    assert widest(out) <= 80
    for state in ("completed", "dead", "processing"):
        assert painted(out, state), (state, out)
    assert painted(ok(cli("dlq", "list")).stdout, "dead")
    status = ok(cli("status")).stdout
    assert widest(status) <= 80 and painted(status, "dead")


def test_list_into_a_pipe_has_no_escapes_and_full_ids(cli: Cli, cli_target: str) -> None:
    enqueue_ids(cli, ID_A, ID_B)
    block_on(make_dead(cli_target, "dead-job"))
    for args in (["list"], ["dlq", "list"], ["status"], ["show", "dead-job"]):
        assert "\x1b" not in ok(cli(*args)).stdout, args
    ids = [line.split()[0] for line in ok(cli("list")).stdout.splitlines()[1:]]
    assert ids == ["dead-job", ID_B, ID_A]


def test_show_prints_history_cwd_env_and_progress(cli: Cli, cli_target: str) -> None:
    block_on(make_dead(cli_target, "hist", command="echo out; exit 3"))
    data = ok(cli("show", "hist", "--json")).json()
    assert [(entry["outcome"], entry["exit_code"], entry["error"]) for entry in data["history"]] == [
        ("failed", 3, "exit code 3")
    ]
    entry = data["history"][0]
    assert entry["worker"] and entry["host"] and entry["started_at"].endswith("Z")
    text = ok(cli("show", "hist")).stdout
    row = next(line for line in text.splitlines() if line.split()[:2] == ["1", "failed"])
    assert row.split()[2] == "3" and row.rstrip().endswith("exit code 3")
    assert entry["worker"] in row and entry["host"] in row
    block_on(report_progress(cli_target, "prog", "3/10"))
    shown = ok(cli("show", "prog")).stdout
    assert any(line.split() == ["progress", "3/10"] for line in shown.splitlines())
    assert ok(cli("show", "prog", "--json")).json()["progress"] == "3/10"
    listed = ok(cli("list")).stdout.splitlines()
    assert "PROGRESS" in listed[0].split()
    assert "3/10" in next(line for line in listed if line.startswith("prog "))


async def report_progress(target: str, job_id: str, progress: str) -> None:
    """A job a worker that is not there claimed, and whose command reported ``progress``."""
    async with await Queue.open(target) as queue:
        await queue.enqueue({"id": job_id, "command": "true", "queue": f"q-{job_id}"})
        await queue.store.register_worker(worker_id=f"w-{job_id}", host="elsewhere", pid=1)
        (claim,) = await queue.store.claim(
            worker_id=f"w-{job_id}", queues=[f"q-{job_id}"], limit=1, lease=3600
        )
        assert await queue.store.append_output(claim, [], progress=progress, keep=65536, lease=3600)


# --- ids by prefix -------------------------------------------------------------------------------


def test_show_takes_a_unique_prefix_of_6_or_more(cli: Cli) -> None:
    enqueue_ids(cli, ID_A, ID_B, ID_C)
    assert ok(cli("show", "bbbbbb", "--json")).json()["id"] == ID_C
    assert ok(cli("show", "aaaaaaaa-12", "--json")).json()["id"] == ID_B
    assert_error(cli("show", "bbbbb"), 1, "no job with id 'bbbbb'")  # 5 characters: not a prefix
    line = assert_error(cli("show", "aaaaaaaa"), 1, "ambiguous")
    assert ID_A in line and ID_B in line
    assert_error(cli("show", "cccccccc"), 1, "no job with id 'cccccccc'")


def test_an_exact_id_wins_over_a_prefix(cli: Cli) -> None:
    enqueue_ids(cli, "abcdefg", "abcdefgh", "abcdefgh-longer")
    assert ok(cli("show", "abcdefg", "--json")).json()["id"] == "abcdefg"
    assert ok(cli("show", "abcdefgh", "--json")).json()["id"] == "abcdefgh"
    assert ok(cli("show", "abcdefgh-l", "--json")).json()["id"] == "abcdefgh-longer"


def test_dlq_retry_takes_prefixes(cli: Cli, cli_target: str) -> None:
    block_on(make_dead(cli_target, ID_A, ID_C))
    assert ok(cli("dlq", "retry", "aaaaaaaa", "bbbbbbbb-3")).stdout.split() == [ID_A, ID_C]
    assert {job["state"] for job in ok(cli("list", "--json")).json()} == {"pending"}
    assert_error(cli("dlq", "retry", "aaaaa"), 1, "no job with id 'aaaaa'")


# --- a real terminal ------------------------------------------------------------------------------


def on_a_terminal(target: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``queuectl ARGS`` with its stdout on an 80x24 pseudo-terminal; return what it showed."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    variables = {
        key: value for key, value in queuectl_env(target, env).items() if key not in ("COLUMNS", "LINES")
    }
    variables.setdefault("TERM", "xterm")
    if env is None:
        variables.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "queuectl", *args],
        stdout=child,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=variables,
    )
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the terminal's last writer closed it
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    _, err = process.communicate(timeout=DEADLINE)
    assert process.returncode == 0, err
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_a_real_terminal_of_80_columns(sqlite_target: str, tmp_path: Path) -> None:
    long_command = "python3 -c 'print(42)' && " + "echo step && " * 30 + "true"
    for job_id in (ID_A, ID_B, ID_C):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "queuectl",
                "enqueue",
                "--id",
                job_id,
                "-c",
                long_command,
                "--delay",
                "1h",
            ],
            env=queuectl_env(sqlite_target),
            capture_output=True,
            timeout=DEADLINE,
        )
        assert done.returncode == 0, done.stderr
    block_on(make_dead(sqlite_target, "dead-job"))
    shown = on_a_terminal(sqlite_target, "list")
    assert widest(shown) <= 80, shown
    assert painted(shown, "dead")
    rows = [visible(line).split() for line in shown.splitlines()[1:]]
    assert [row[0] for row in rows] == ["dead-job", "bbbbbbbb", "aaaaaaaa-12", "aaaaaaaa-11"]
    assert "in 59m" in " ".join(rows[1])
    status = on_a_terminal(sqlite_target, "status")
    assert widest(status) <= 80 and painted(status, "dead")
    plain = on_a_terminal(sqlite_target, "list", env={"NO_COLOR": "1"})
    assert "\x1b" not in plain and widest(plain) <= 80
