"""``queuectl worker start`` as real processes: signals, stop requests, lost workers, many workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import (
    exit_code_within,
    jobs_state,
    lines,
    pid_alive,
    queuectl_env,
    run_queuectl,
    start_worker,
    wait_until,
)

from queuectl.output import left_out_line

FAST = {"backoff_base": "1", "backoff_max": "0.01", "poll_interval": "0.05"}


@pytest.fixture
def target(store_target: str) -> str:
    for key, value in FAST.items():
        assert run_queuectl(store_target, "config", "set", key, value).returncode == 0
    return store_target


def enqueue(target: str, command: str, *options: str) -> str:
    done = run_queuectl(target, "enqueue", "--command", command, *options)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def show(target: str, job_id: str) -> dict[str, object]:
    shown = run_queuectl(target, "show", job_id, "--json")
    assert shown.returncode == 0, shown.stderr
    data: dict[str, object] = json.loads(shown.stdout)
    return data


def test_burst_worker_runs_jobs_and_prints_a_line_per_job(target: str, tmp_path: Path) -> None:
    job_id = enqueue(target, "echo hello")
    log = tmp_path / "worker.log"
    worker = start_worker(target, "--burst", stderr=log)
    assert exit_code_within(worker) == 0
    assert show(target, job_id)["state"] == "completed"
    text = log.read_text()
    assert job_id in text and "echo hello" in text and "done" in text


def test_quiet_worker_prints_nothing(target: str, tmp_path: Path) -> None:
    enqueue(target, "true")
    log = tmp_path / "worker.log"
    assert exit_code_within(start_worker(target, "--burst", "--quiet", stderr=log)) == 0
    assert log.read_text() == ""


def test_sigterm_finishes_short_job_and_puts_long_job_back(target: str, tmp_path: Path) -> None:
    short_started, long_started = tmp_path / "short", tmp_path / "long"
    short = enqueue(target, f"touch {short_started}; sleep 1; echo short-done", "--priority", "5")
    long = enqueue(target, f"touch {long_started}; echo $$ > {tmp_path / 'long.pid'}; exec sleep 300")
    worker = start_worker(target, "--count", "2", "--grace", "3")
    wait_until(lambda: short_started.exists() and long_started.exists(), what="both jobs to start")
    long_pid = int((tmp_path / "long.pid").read_text())
    worker.send_signal(signal.SIGTERM)
    assert exit_code_within(worker) == 0
    assert show(target, short)["state"] == "completed"
    back = show(target, long)
    assert (back["state"], back["attempts"]) == ("pending", 0)
    wait_until(lambda: not pid_alive(long_pid), what="the long job's process to die")


def test_second_sigint_skips_the_grace(target: str, tmp_path: Path) -> None:
    started = tmp_path / "started"
    job_id = enqueue(target, f"touch {started}; sleep 300")
    worker = start_worker(target, "--grace", "600")
    wait_until(started.exists, what="the job to start")
    worker.send_signal(signal.SIGINT)
    with pytest.raises(subprocess.TimeoutExpired):
        worker.wait(timeout=1)  # still in its grace period
    worker.send_signal(signal.SIGINT)
    assert exit_code_within(worker) == 0
    assert show(target, job_id)["state"] == "pending"


def test_worker_stop_from_another_process(target: str, tmp_path: Path) -> None:
    started = tmp_path / "started"
    job_id = enqueue(target, f"touch {started}; sleep 0.5")
    worker = start_worker(target, "--grace", "60")
    wait_until(started.exists, what="the job to start")
    listed = run_queuectl(target, "worker", "list", "--json")
    workers = json.loads(listed.stdout)
    assert [w["pid"] for w in workers] == [worker.pid]
    stop = run_queuectl(target, "worker", "stop")
    assert stop.returncode == 0
    assert exit_code_within(worker) == 0
    assert show(target, job_id)["state"] == "completed"
    assert json.loads(run_queuectl(target, "worker", "list", "--json").stdout) == []


def test_killed_worker_job_runs_again_after_the_lease(target: str, tmp_path: Path) -> None:
    assert run_queuectl(target, "config", "set", "lease", "1").returncode == 0
    runs = tmp_path / "runs"
    first_started = tmp_path / "first"
    command = (
        f"echo run >> {runs}; if [ ! -e {first_started} ]; then touch {first_started}; sleep 300; fi; echo ok"
    )
    job_id = enqueue(target, command)
    victim = start_worker(target)
    wait_until(first_started.exists, what="the first attempt to start")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    rescuer = start_worker(target, "--drain")
    assert exit_code_within(rescuer) == 0
    job = show(target, job_id)
    assert (job["state"], job["attempts"]) == ("completed", 2)
    assert lines(runs) == ["run", "run"]
    # The first attempt's `sleep 300` was killed before the job ran again.
    orphans = subprocess.run(["pgrep", "-f", f"{first_started}"], capture_output=True, text=True)
    assert orphans.stdout.strip() == ""


PEAK_RSS_OF_CHILD = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if done.returncode == 0 else -1)
"""


def test_big_output_keeps_worker_memory_flat(target: str) -> None:
    job_id = enqueue(target, "head -c 100000000 /dev/zero; echo; printf tail-end")
    # Measured in a fresh parent whose only child is the worker: the peak RSS of the worker itself.
    worker = [sys.executable, "-m", "queuectl", "worker", "start", "--burst"]
    measured = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_OF_CHILD, *worker],
        env=queuectl_env(target),
        capture_output=True,
        text=True,
        timeout=120,
    )
    peak_kib = int(measured.stdout.strip())
    assert 0 < peak_kib < 100_000, f"worker peak RSS {peak_kib} KiB"
    logs = subprocess.run(
        [sys.executable, "-m", "queuectl", "logs", job_id],
        env=queuectl_env(target),
        capture_output=True,
        timeout=60,
    )
    written = 100_000_000 + len(b"\ntail-end")
    kept_tail = (b"\0" * 32768 + b"\ntail-end")[-32768:]
    assert logs.stdout == b"\0" * 32768 + left_out_line(written - 65536) + kept_tail


def test_three_workers_run_each_job_exactly_once_while_jobs_arrive(target: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = [enqueue(target, f"echo {index} >> {runs}") for index in range(20)]
    workers = [start_worker(target, "--count", "4", "--quiet") for _ in range(3)]
    more_file = tmp_path / "more.jsonl"
    more_file.write_text(
        "\n".join(
            json.dumps({"id": f"late-{index}", "command": f"echo late-{index} >> {runs}"})
            for index in range(100)
        )
    )
    producers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "queuectl",
                "enqueue",
                "--command",
                f"echo p{index} >> {runs}",
                "--id",
                f"p{index}",
            ],
            env=queuectl_env(target),
            stdout=subprocess.DEVNULL,
        )
        for index in range(10)
    ]
    assert run_queuectl(target, "enqueue-file", str(more_file)).returncode == 0
    for producer in producers:
        assert producer.wait(timeout=60) == 0
    total = len(first) + 100 + 10
    wait_until(lambda: len(lines(runs)) >= total, what="every job to run")
    wait_until(
        lambda: json.loads(run_queuectl(target, "status", "--json").stdout)["jobs"]["completed"] == total,
        what="every job to be recorded",
    )
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        assert exit_code_within(worker) == 0
    counts = Counter(lines(runs))
    assert len(counts) == total and set(counts.values()) == {1}
    assert set(jobs_state(target, first[:5]).values()) == {"completed"}


def test_worker_exits_nonzero_with_one_line_when_the_store_is_bad(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-db"
    bogus.write_bytes(b"hello world" * 100)
    done = subprocess.run(
        [sys.executable, "-m", "queuectl", "--db", str(bogus), "worker", "start", "--burst"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "QUEUECTL_DB"},
    )
    assert done.returncode == 1
    assert str(bogus) in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_idle_worker_wakes_for_a_job_from_another_process(target: str, tmp_path: Path) -> None:
    # With a one-minute poll interval, only the wake-up path can start the job quickly.
    assert run_queuectl(target, "config", "set", "lease", "120").returncode == 0  # at least 2 polls
    assert run_queuectl(target, "config", "set", "poll_interval", "60").returncode == 0
    worker = start_worker(target, "--quiet")
    try:
        wait_until(
            lambda: len(json.loads(run_queuectl(target, "worker", "list", "--json").stdout)) == 1,
            what="the worker to register",
        )
        marker = tmp_path / "ran"
        enqueue(target, f"touch {marker}")
        wait_until(marker.exists, timeout=30, what="the job to run well within the poll interval")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert exit_code_within(worker) == 0
