"""``wait`` and ``run``, on each backend: exit codes for every way a job ends, timeouts, Ctrl-C.

Jobs that must still run while a test acts block on a file the test creates: no fixed sleeps.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers import (
    DEADLINE,
    Cli,
    Workers,
    assert_error,
    assert_wrote_nothing,
    block_on,
    job_state,
    make_completed,
    ok,
    queuectl_env,
    run_jobs,
    start_worker,
    wait_until,
)

if TYPE_CHECKING:
    from queuectl import Job

FAST = {"backoff_base": "1", "backoff_max": "0.01", "poll_interval": "0.05"}


@pytest.fixture
def target(cli: Cli, cli_target: str) -> str:
    for key, value in FAST.items():
        ok(cli("config", "set", key, value))
    return cli_target


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """``queuectl`` processes the test starts: killed at the end if still running."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()  # and close its pipes


def spawn(target: str, processes: list[subprocess.Popen[bytes]], *args: str) -> subprocess.Popen[bytes]:
    """``queuectl ARGS`` in the background; stdout and stderr to files (read with ``output``)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "queuectl", *args],
        env=queuectl_env(target),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    processes.append(process)
    return process


def enqueue(cli: Cli, command: str, *options: str) -> str:
    return ok(cli("enqueue", "-c", command, *options)).stdout.strip()


def state(target: str, job_id: str) -> str:
    return block_on(job_state(target, job_id))[0]


# --- wait ---------------------------------------------------------------------------------


def test_wait_for_completed_jobs_exits_0(cli: Cli, cli_target: str) -> None:
    block_on(make_completed(cli_target, "one", "two"))
    result = ok(cli("wait", "one", "two"))
    assert result.out == b"" and result.err == b""  # a pipe: nothing but errors


def test_wait_exits_with_the_exit_code_of_the_first_job_that_did_not_complete(
    cli: Cli, cli_target: str
) -> None:
    block_on(run_jobs(cli_target, {"fine": "true", "three": "exit 3", "five": "exit 5"}))
    assert cli("wait", "fine", "three", "five").code == 3
    assert cli("wait", "five", "three").code == 5
    assert cli("wait", "fine").code == 0


def test_wait_for_a_cancelled_job_exits_1(cli: Cli, cli_target: str) -> None:
    block_on(make_completed(cli_target, "fine"))
    ok(cli("enqueue", "--id", "dropped", "-c", "true", "--delay", "1h"))
    ok(cli("cancel", "dropped"))
    assert cli("wait", "fine", "dropped").code == 1


def test_wait_for_a_job_that_timed_out_exits_1(cli: Cli, cli_target: str) -> None:
    from queuectl import Queue

    async def timed_out() -> None:
        async with await Queue.open(cli_target) as queue:
            await queue.enqueue(id="slow", command="sleep 30", timeout=0.2, max_retries=0)
            await queue.pool(count=1, mode="burst").run()

    block_on(timed_out())
    assert state(cli_target, "slow") == "dead"
    assert cli("wait", "slow").code == 1  # no exit code of its own


def test_wait_json_prints_the_jobs_in_argument_order(cli: Cli, cli_target: str) -> None:
    block_on(run_jobs(cli_target, {"bad": "exit 9", "good": "true"}))
    result = cli("wait", "good", "bad", "--json")
    assert result.code == 9
    data = result.json()
    assert [job["id"] for job in data] == ["good", "bad"]
    assert [job["state"] for job in data] == ["completed", "dead"]
    assert data[1]["exit_code"] == 9


def test_wait_of_an_unknown_id_exits_1_at_once(cli: Cli) -> None:
    ok(cli("enqueue", "--id", "waiting", "-c", "true", "--delay", "1h"))
    assert_error(cli("wait", "waiting", "ghost-job"), 1, "no job with id 'ghost-job'")


def test_wait_takes_id_prefixes(cli: Cli, cli_target: str) -> None:
    block_on(make_completed(cli_target, "prefixed-job"))
    ok(cli("wait", "prefixed"))


def test_wait_timeout_exits_124_naming_the_unfinished_jobs(cli: Cli, cli_target: str) -> None:
    block_on(make_completed(cli_target, "done"))
    late = enqueue(cli, "true", "--delay", "1h")
    result = cli("wait", "done", late, "--timeout", "0.3")
    assert result.code == 124
    assert result.out == b""
    (line,) = result.stderr.splitlines()
    assert line.startswith("queuectl: error: timed out")
    assert line.endswith(f"not final: {late} (pending)")
    with_json = cli("wait", late, "--timeout", "0.3", "--json")
    assert with_json.code == 124
    (job,) = with_json.json()
    assert (job["id"], job["state"]) == (late, "pending")


@pytest.mark.parametrize("bad", ["0", "-1", "soon"])
def test_wait_refuses_a_bad_timeout(cli: Cli, bad: str) -> None:
    assert cli("wait", "x", "--timeout", bad).code == 2


def test_wait_returns_when_the_job_ends(
    cli: Cli, target: str, tmp_path: Path, workers: Workers, processes: list[subprocess.Popen[bytes]]
) -> None:
    gate = tmp_path / "go"
    job_id = enqueue(cli, f"while [ ! -e {gate} ]; do sleep 0.02; done; exit 6", "--max-retries", "0")
    waiter = spawn(target, processes, "wait", job_id)
    workers.append(start_worker(target, "--quiet"))
    wait_until(lambda: state(target, job_id) == "processing", what="the job to run")
    assert waiter.poll() is None
    gate.touch()
    assert waiter.wait(DEADLINE) == 6
    assert waiter.stdout is not None and waiter.stdout.read() == b""


# --- run ----------------------------------------------------------------------------------


def test_run_prints_the_job_output_and_exits_as_it_did(
    target: str, workers: Workers, processes: list[subprocess.Popen[bytes]]
) -> None:
    workers.append(start_worker(target, "--quiet"))
    process = spawn(target, processes, "run", "--max-retries", "0", "echo out; echo err >&2; exit 5")
    out, err = process.communicate(timeout=DEADLINE)
    assert process.returncode == 5
    assert out == b"out\n"
    lines = err.decode().splitlines()
    assert lines[0].startswith("queuectl: job ") and lines[0].endswith(" enqueued")
    job_id = lines[0].split()[2]
    assert "err" in lines
    assert lines[-1] == "queuectl: attempt 1 ended: exit code 5; no retries left: the job is dead"
    assert state(target, job_id) == "dead"


def test_run_joins_its_words_and_takes_enqueue_options(
    cli: Cli, target: str, workers: Workers, processes: list[subprocess.Popen[bytes]]
) -> None:
    workers.append(start_worker(target, "--quiet", "--queue", "special"))
    process = spawn(target, processes, "run", "--queue", "special", "--id", "my-run", "echo", "a", "b", "-n")
    out, err = process.communicate(timeout=DEADLINE)
    assert process.returncode == 0, err
    assert out == b"a b -n\n"
    shown = ok(cli("show", "my-run", "--json")).json()
    assert (shown["queue"], shown["command"], shown["state"]) == ("special", "echo a b -n", "completed")


def test_run_without_a_live_worker_says_so_once_and_waits(
    target: str, workers: Workers, processes: list[subprocess.Popen[bytes]]
) -> None:
    process = spawn(target, processes, "run", "echo", "finally")
    assert process.stderr is not None
    assert process.stderr.readline().endswith(b" enqueued\n")
    warning = process.stderr.readline().decode()
    assert warning == (
        "queuectl: no live worker serves queue 'default'; the job waits for one (queuectl worker start)\n"
    )
    workers.append(start_worker(target, "--quiet"))
    out, err = process.communicate(timeout=DEADLINE)
    assert process.returncode == 0
    assert out == b"finally\n"
    assert b"no live worker" not in err  # once


def test_ctrl_c_detaches_run_and_the_job_keeps_going(
    cli: Cli, target: str, tmp_path: Path, workers: Workers, processes: list[subprocess.Popen[bytes]]
) -> None:
    gate = tmp_path / "go"
    workers.append(start_worker(target, "--quiet"))
    command = f"echo started; while [ ! -e {gate} ]; do sleep 0.02; done; echo finished"
    process = spawn(target, processes, "run", command)
    assert process.stdout is not None
    assert process.stdout.readline() == b"started\n"  # it follows: the job runs
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=DEADLINE)
    assert process.returncode == 130
    assert out == b""
    first, *_, last = err.decode().splitlines()
    job_id = first.split()[2]
    assert last == f"queuectl: detached from job {job_id}; it keeps going (queuectl logs -f {job_id})"
    assert state(target, job_id) == "processing"
    gate.touch()
    ok(cli("wait", job_id, "--timeout", str(DEADLINE)))
    assert ok(cli("logs", job_id)).out == b"started\nfinished\n"


@pytest.mark.parametrize(
    ("args", "code"),
    [([], 2), (["--priority", "high", "true"], 2), (["--delay", "1h", "--run-at", "2030-01-01", "true"], 2)],
)
def test_run_refuses_bad_input_and_writes_nothing(
    cli: Cli, cli_target: str, args: list[str], code: int
) -> None:
    result = cli("run", *args)
    assert result.code == code, result.stderr
    assert result.out == b""
    assert_wrote_nothing(cli_target)


def test_wait_help_has_examples(cli: Cli) -> None:
    for command in ("wait", "run"):
        text = ok(cli(command, "--help")).stdout
        assert "Examples:" in text


def test_wait_json_of_completed_jobs(cli: Cli, cli_target: str) -> None:
    block_on(make_completed(cli_target, "a1"))
    data = json.loads(ok(cli("wait", "a1", "--json")).out)
    assert [job["state"] for job in data] == ["completed"]


def test_run_takes_the_job_options_of_enqueue(
    target: str, tmp_path: Path, workers: Workers, processes: list[subprocess.Popen[bytes]]
) -> None:
    workers.append(start_worker(target, "--quiet"))
    process = spawn(
        target, processes, "run", "--cwd", str(tmp_path), "--env", "GREETING=hi", "echo $GREETING; pwd"
    )
    out, err = process.communicate(timeout=DEADLINE)
    assert process.returncode == 0, err
    assert out == f"hi\n{tmp_path}\n".encode()


# --- the status line ------------------------------------------------------------------------


def test_status_text_counts_states_and_shows_progress(cli: Cli, cli_target: str) -> None:
    from queuectl import Queue
    from queuectl.cli.waiting import status_text

    async def jobs() -> list[Job]:
        async with await Queue.open(cli_target) as queue:
            return [await queue.get(job_id) for job_id in ("done", "gone", "waiting")]

    block_on(run_jobs(cli_target, {"done": "true", "gone": "exit 2"}))
    ok(cli("enqueue", "--id", "waiting", "-c", "true", "--delay", "1h"))
    text = status_text(block_on(jobs()))
    assert text == "queuectl: 2/3 final: 1 completed, 1 dead, 1 pending"


def test_the_status_line_is_rewritten_in_place_on_a_terminal(
    cli: Cli, cli_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from queuectl import Queue
    from queuectl.cli.waiting import StatusLine

    async def job(job_id: str) -> Job:
        async with await Queue.open(cli_target) as queue:
            return await queue.get(job_id)

    block_on(make_completed(cli_target, "done"))
    line = StatusLine(enabled=True)
    done = block_on(job("done"))
    line.show([done])
    line.show([done])
    line.close()
    assert capsys.readouterr().err == "\r\x1b[Kqueuectl: 1/1 final: 1 completed\n"
    quiet = StatusLine(enabled=False)
    quiet.show([done])
    quiet.close()
    assert capsys.readouterr().err == ""
