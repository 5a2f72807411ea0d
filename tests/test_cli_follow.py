"""``logs``: kept output, ``--attempt N``, and ``-f`` (followers in other processes), on each backend.

Jobs that must be running while a test looks block on a file the test creates, so nothing
races the machine: a follower must show the first half of such a job's output before the test
lets it write the second.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from helpers import (
    DEADLINE,
    Cli,
    Workers,
    assert_error,
    block_on,
    exit_code_within,
    make_completed,
    ok,
    queuectl_env,
    run_jobs,
    start_worker,
    wait_until,
)

#: Fast retries and polls for the workers of these tests.
FAST = {"backoff_base": "1", "backoff_max": "0.01", "poll_interval": "0.05"}


@pytest.fixture
def target(cli: Cli, cli_target: str) -> str:
    for key, value in FAST.items():
        ok(cli("config", "set", key, value))
    return cli_target


class Follower:
    """``queuectl logs ARGS`` in a process of its own; its stdout and stderr read as they come."""

    def __init__(self, target: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "queuectl", "logs", *args],
            env=queuectl_env(target),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.out = _Drain(self.process.stdout)
        self.err = _Drain(self.process.stderr)

    def finish(self) -> tuple[int, bytes, bytes]:
        code = self.process.wait(DEADLINE)
        return code, self.out.all(), self.err.all()

    def close(self) -> None:
        """Kill it if it still runs; close its pipes."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.out.all()
        self.err.all()
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


class _Drain:
    """Everything a pipe gave so far, read by a thread (so the child never blocks on a full pipe)."""

    def __init__(self, pipe: IO[bytes] | None) -> None:
        assert pipe is not None
        self._chunks: queue.Queue[bytes] = queue.Queue()
        self._data = b""
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[bytes]) -> None:
        while chunk := pipe.read1(65536):  # type: ignore[attr-defined]
            self._chunks.put(chunk)

    def now(self) -> bytes:
        while not self._chunks.empty():
            self._data += self._chunks.get()
        return self._data

    def all(self) -> bytes:
        self._thread.join(DEADLINE)
        return self.now()

    def wait_for(self, data: bytes) -> None:
        wait_until(lambda: data in self.now(), what=f"{data!r} from the follower")


@pytest.fixture
def followers() -> Iterator[list[Follower]]:
    """Followers the test starts: killed at the end if still running."""
    started: list[Follower] = []
    yield started
    for follower in started:
        follower.close()


def enqueue(cli: Cli, command: str, *options: str) -> str:
    return ok(cli("enqueue", "-c", command, *options)).stdout.strip()


def gated(tmp_path: Path, before: str, after: str, name: str = "go") -> str:
    """A command that prints ``before``, waits for the file ``name`` to appear, then ``after``."""
    gate = tmp_path / name
    return f"printf '{before}'; while [ ! -e {gate} ]; do sleep 0.02; done; printf '{after}'"


# --- logs ID, --attempt ----------------------------------------------------------------------


def test_logs_resolves_a_prefix_of_six_characters_or_more(cli: Cli, cli_target: str) -> None:
    block_on(make_completed(cli_target, "prefix-job-1", command="echo found"))
    assert ok(cli("logs", "prefix-job")).out == b"found\n"
    assert_error(cli("logs", "prefi"), 1, "no job with id 'prefi'")


def test_logs_of_an_ambiguous_prefix_lists_the_matches(cli: Cli, cli_target: str) -> None:
    block_on(make_completed(cli_target, "twin-job-1", "twin-job-2"))
    line = assert_error(cli("logs", "twin-job"), 1, "ambiguous")
    assert "twin-job-1" in line and "twin-job-2" in line


def test_logs_of_cut_output_says_how_much_was_left_out(cli: Cli, cli_target: str) -> None:
    ok(cli("config", "set", "output_limit", "100"))
    block_on(
        make_completed(cli_target, "long", command="head -c 5000 /dev/zero | tr '\\0' x; echo; echo end")
    )
    result = ok(cli("logs", "long"))
    assert result.out.startswith(b"x" * 50)
    assert b"bytes left out]\n" in result.out
    assert result.out.endswith(b"end\n")
    assert result.stderr.startswith("queuectl: stdout: ")
    assert "bytes left out in the middle" in result.stderr


def test_logs_of_an_attempt_in_the_history(cli: Cli, target: str, tmp_path: Path, workers: Workers) -> None:
    marker = tmp_path / "ran-once"
    job_id = enqueue(
        cli,
        f"if [ -e {marker} ]; then echo second; else touch {marker}; echo first; echo oops >&2; exit 3; fi",
        "--max-retries",
        "1",
    )
    workers.append(start_worker(target, "--drain", "--quiet"))
    assert exit_code_within(workers[0]) == 0
    first = ok(cli("logs", job_id, "--attempt", "1"))
    assert (first.out, first.err) == (b"first\n", b"oops\n")
    assert ok(cli("logs", job_id, "--attempt", "2")).out == b"second\n"
    assert ok(cli("logs", job_id)).out == b"second\n"
    assert ok(cli("logs", job_id, "--attempt", "1", "--json")).json() == {
        "id": job_id,
        "stdout": "first\n",
        "stderr": "oops\n",
    }
    assert_error(cli("logs", job_id, "--attempt", "3"), 1, job_id, "no attempt 3", "1 to 2")
    assert cli("logs", job_id, "--attempt", "0").code == 2


def test_logs_attempt_of_a_job_that_never_ran(cli: Cli) -> None:
    job_id = enqueue(cli, "true")
    assert_error(cli("logs", job_id, "--attempt", "1"), 1, job_id, "has not run yet")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["-f", "ID", "--attempt", "1"], "--attempt"),
        (["-f", "ID", "--json"], "--json"),
        (["ID", "OTHER"], "--follow"),
        ([], "Missing argument"),
    ],
)
def test_logs_usage_errors(cli: Cli, args: list[str], says: str) -> None:
    assert_error(cli("logs", *args), 2, says)


def test_logs_follow_of_an_unknown_job_exits_1(cli: Cli) -> None:
    ok(cli("enqueue", "--id", "known", "-c", "true"))
    assert_error(cli("logs", "-f", "known", "ghost-job"), 1, "no job with id 'ghost-job'")


# --- logs -f ------------------------------------------------------------------------------


def test_follow_of_a_finished_job_prints_its_output_and_exits_0(cli: Cli, cli_target: str) -> None:
    command = r"printf 'text\n\000\377 raw\n'; printf 'warn\n' >&2"
    block_on(make_completed(cli_target, "done", command=command))
    result = ok(cli("logs", "-f", "done"))
    assert result.out == b"text\n\x00\xff raw\n"
    assert result.err == b"warn\n"


def test_follow_of_a_dead_job_says_how_it_ended(cli: Cli, cli_target: str) -> None:
    block_on(run_jobs(cli_target, {"broken": "echo half; exit 7"}))
    result = ok(cli("logs", "--follow", "broken"))
    assert result.out == b"half\n"
    assert result.stderr == "queuectl: attempt 1 ended: exit code 7; no retries left: the job is dead\n"


def test_follow_started_before_the_job_runs(
    cli: Cli, target: str, followers: list[Follower], workers: Workers
) -> None:
    job_id = enqueue(cli, "echo one; echo two >&2; printf three")
    followers.append(follower := Follower(target, "-f", job_id))
    workers.append(start_worker(target, "--quiet"))
    code, out, err = follower.finish()
    assert (code, out, err) == (0, b"one\nthree", b"two\n")


def test_follow_shows_output_while_the_job_runs(
    cli: Cli, target: str, tmp_path: Path, followers: list[Follower], workers: Workers
) -> None:
    job_id = enqueue(cli, gated(tmp_path, "before\\n", "after\\n") + "; echo err >&2")
    followers.append(follower := Follower(target, "-f", job_id))
    workers.append(start_worker(target, "--quiet"))
    follower.out.wait_for(b"before\n")  # the job still waits for the gate: this came live
    assert follower.process.poll() is None
    (tmp_path / "go").touch()
    assert follower.finish() == (0, b"before\nafter\n", b"err\n")


def test_follow_started_while_the_job_runs_prints_what_it_wrote_so_far(
    cli: Cli, target: str, tmp_path: Path, followers: list[Follower], workers: Workers
) -> None:
    job_id = enqueue(cli, gated(tmp_path, "early\\n", "late\\n"))
    followers.append(first := Follower(target, "-f", job_id))
    workers.append(start_worker(target, "--quiet"))
    first.out.wait_for(b"early\n")  # flushed to the store by now
    followers.append(second := Follower(target, "-f", job_id))
    second.out.wait_for(b"early\n")
    (tmp_path / "go").touch()
    assert second.finish() == (0, b"early\nlate\n", b"")
    assert first.finish() == (0, b"early\nlate\n", b"")


def test_follow_shows_the_progress_the_job_reports(
    cli: Cli, target: str, tmp_path: Path, followers: list[Follower], workers: Workers
) -> None:
    job_id = enqueue(cli, 'echo 3/10 > "$QUEUECTL_PROGRESS"; ' + gated(tmp_path, "", "done\\n"))
    followers.append(follower := Follower(target, "-f", job_id))
    workers.append(start_worker(target, "--quiet"))
    follower.err.wait_for(b"queuectl: progress 3/10\n")
    (tmp_path / "go").touch()
    code, out, _ = follower.finish()
    assert (code, out) == (0, b"done\n")


def test_follow_goes_across_retries(
    cli: Cli, target: str, tmp_path: Path, followers: list[Follower], workers: Workers
) -> None:
    marker = tmp_path / "ran-once"
    first = gated(tmp_path, "first\\n", "")
    command = f"if [ -e {marker} ]; then echo second; else touch {marker}; {first}; exit 3; fi"
    job_id = enqueue(cli, command, "--max-retries", "2")
    followers.append(follower := Follower(target, "-f", job_id))
    workers.append(start_worker(target, "--quiet"))
    follower.out.wait_for(b"first\n")  # attempt 1 waits for the gate: the follower is on it
    (tmp_path / "go").touch()
    code, out, err = follower.finish()
    assert (code, out) == (0, b"first\nsecond\n"), err
    notes = err.decode().splitlines()
    assert len(notes) == 2, notes
    assert notes[0].startswith("queuectl: attempt 1 ended: exit code 3, retr"), notes  # retried, retry in 1s
    assert notes[1] == "queuectl: attempt 2 started", notes


def test_follow_of_several_jobs_prefixes_each_line_with_its_short_id(
    cli: Cli, target: str, followers: list[Follower], workers: Workers
) -> None:
    one = enqueue(cli, "echo a1; echo a2; printf 'no newline'", "--id", "job-one-0001")
    two = enqueue(cli, "echo b1 >&2; exit 4", "--id", "job-two-0002", "--max-retries", "0")
    followers.append(follower := Follower(target, "-f", one, two))
    workers.append(start_worker(target, "--quiet", "--count", "2"))
    code, out, err = follower.finish()
    assert code == 0
    assert out.decode().splitlines() == ["job-one- | a1", "job-one- | a2", "job-one- | no newline"]
    assert err.decode().splitlines() == [
        "job-two- | b1",
        "queuectl: job job-two-0002: attempt 1 ended: exit code 4; no retries left: the job is dead",
    ]


def test_follow_of_cut_output_marks_what_was_left_out(cli: Cli, cli_target: str) -> None:
    ok(cli("config", "set", "output_limit", "100"))
    block_on(
        make_completed(cli_target, "long", command="head -c 5000 /dev/zero | tr '\\0' x; echo; echo end")
    )
    assert ok(cli("logs", "-f", "long")).out == ok(cli("logs", "long")).out


def test_follow_of_a_cancelled_job_ends(
    cli: Cli, target: str, followers: list[Follower], workers: Workers
) -> None:
    job_id = enqueue(cli, "echo never", "--delay", "1h")
    followers.append(follower := Follower(target, "-f", job_id))
    ok(cli("cancel", job_id))
    assert follower.finish() == (0, b"", b"")


def test_follow_of_a_job_cancelled_while_it_runs(
    cli: Cli, target: str, tmp_path: Path, followers: list[Follower], workers: Workers
) -> None:
    job_id = enqueue(cli, gated(tmp_path, "started\\n", "never\\n"))
    followers.append(follower := Follower(target, "-f", job_id))
    workers.append(start_worker(target, "--quiet"))
    follower.out.wait_for(b"started\n")
    ok(cli("cancel", job_id))
    assert follower.finish() == (0, b"started\n", b"queuectl: attempt 1 ended: cancelled\n")


def test_ctrl_c_stops_a_follower_quietly(cli: Cli, target: str, followers: list[Follower]) -> None:
    job_id = enqueue(cli, "true", "--delay", "1h")
    followers.append(follower := Follower(target, "-f", job_id))
    # Once it follows (a first read of the store done): its import and start-up are over.
    wait_until(lambda: _has_store_connection(follower.process.pid, target), what="the follower to start")
    follower.process.send_signal(signal.SIGINT)
    assert follower.finish() == (130, b"", b"")


def _has_store_connection(pid: int, target: str) -> bool:
    """Whether process ``pid`` has opened the store (SQLite: the file; PostgreSQL: a socket)."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        links = [str(path.readlink()) for path in fds.iterdir()]
    except OSError:
        return False
    if target.startswith("postgres"):
        return any(link.startswith("socket:") for link in links)
    return any(link == target for link in links)


# --- the library: Queue.follow ------------------------------------------------------------


async def test_queue_follow_yields_output_notes_and_the_end(store_target: str, tmp_path: Path) -> None:
    from queuectl import Queue
    from queuectl.follow import FollowKind

    marker = tmp_path / "ran-once"
    command = f"if [ -e {marker} ]; then echo second; else touch {marker}; echo first >&2; exit 3; fi"
    async with await Queue.open(store_target) as q:
        for key, value in FAST.items():
            await q.set_setting(key, value)
        job = await q.enqueue(command=command, max_retries=1)
        await q.pool(count=1, mode="drain").run()
        events = [event async for event in q.follow(job.id)]
    # Followed after the end: the latest attempt's output, then the end.
    assert [(event.kind, event.stream, event.data) for event in events[:-1]] == [
        (FollowKind.OUTPUT, 1, b"second\n")
    ]
    end = events[-1]
    assert end.kind is FollowKind.END and end.job is not None and end.job.state.value == "completed"
    assert all(event.attempt == 2 for event in events)


def test_follow_output_reaches_the_follower_within_a_second(
    cli: Cli, target: str, tmp_path: Path, followers: list[Follower], workers: Workers
) -> None:
    job_id = enqueue(
        cli, gated(tmp_path, "a\\n", "", "gate-1") + "; " + gated(tmp_path, "b\\n", "c\\n", "gate-2")
    )
    followers.append(follower := Follower(target, "-f", job_id))
    workers.append(start_worker(target, "--quiet"))
    follower.out.wait_for(b"a\n")
    (tmp_path / "gate-1").touch()
    written = time.monotonic()
    follower.out.wait_for(b"b\n")
    # Generous for a loaded machine: the SPEC's second plus start-up noise of nothing (all warm).
    assert time.monotonic() - written < 5
    (tmp_path / "gate-2").touch()
    assert follower.finish() == (0, b"a\nb\nc\n", b"")


def test_logs_json_is_one_document(cli: Cli, cli_target: str) -> None:
    block_on(make_completed(cli_target, "doc", command="echo hi"))
    assert json.loads(ok(cli("logs", "doc", "--json")).out) == {"id": "doc", "stdout": "hi\n", "stderr": ""}
