"""The files in examples/ work as the README says (the public API: test_public_api.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_queuectl

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_embed_example_runs_end_to_end(store_target: str) -> None:
    command = [sys.executable, str(EXAMPLES / "embed.py"), store_target]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "hello from an embedded worker" in done.stdout
    assert "completed=2 dead=1" in done.stdout


def test_embed_example_leaves_a_busy_store_as_it_was(store_target: str) -> None:
    """Run twice on a store with its own jobs and settings: both runs pass, nothing else changes."""
    assert run_queuectl(store_target, "config", "set", "backoff_max", "60").returncode == 0
    theirs = run_queuectl(store_target, "enqueue", "--command", "echo not yours").stdout.strip()
    command = [sys.executable, str(EXAMPLES / "embed.py"), store_target]
    for _ in range(2):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "completed=2 dead=1" in done.stdout
    assert json.loads(run_queuectl(store_target, "show", theirs, "--json").stdout)["state"] == "pending"
    assert run_queuectl(store_target, "config", "get", "backoff_max").stdout.strip() == "60"


@pytest.mark.parametrize(
    ("name", "count"),
    [("simple.json", 1), ("batch.jsonl", 3), ("priority.json", 3), ("failing.json", 1), ("timeout.json", 1)],
)
def test_job_files_enqueue_and_run(sqlite_target: str, name: str, count: int) -> None:
    for key, value in (("backoff_base", "1"), ("backoff_max", "0.01")):
        assert run_queuectl(sqlite_target, "config", "set", key, value).returncode == 0
    enqueued = run_queuectl(sqlite_target, "enqueue-file", str(EXAMPLES / name))
    assert enqueued.returncode == 0, enqueued.stderr
    assert len(enqueued.stdout.split()) == count
    drained = run_queuectl(sqlite_target, "worker", "start", "--drain", "--count", "4", timeout=120)
    assert drained.returncode == 0
    counts = json.loads(run_queuectl(sqlite_target, "status", "--json").stdout)["jobs"]
    expected = "dead" if name in ("failing.json", "timeout.json") else "completed"
    assert counts[expected] == count


def test_scheduled_example_waits(sqlite_target: str) -> None:
    assert run_queuectl(sqlite_target, "enqueue-file", str(EXAMPLES / "scheduled.json")).returncode == 0
    assert run_queuectl(sqlite_target, "worker", "start", "--burst").returncode == 0
    status = json.loads(run_queuectl(sqlite_target, "status", "--json").stdout)
    assert status["jobs"]["pending"] == 2 and status["next_run_at"] is not None
