"""Polling helpers: tests wait on conditions with deadlines, never on fixed sleeps."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import anyio

#: Generous: catches a hang without racing a loaded 2-core machine.
DEADLINE = 60.0


def wait_until(predicate: Callable[[], bool], timeout: float = DEADLINE, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout: float = DEADLINE, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(0.02)


def queuectl_env(target: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["QUEUECTL_DB"] = target
    env.update(extra or {})
    return env


def run_queuectl(
    target: str, *args: str, input: str | None = None, timeout: float = DEADLINE
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m queuectl`` to completion as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "queuectl", *args],
        env=queuectl_env(target),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_worker(target: str, *args: str, stderr: Path | None = None) -> subprocess.Popen[str]:
    """Start ``queuectl worker start ARGS`` in the background (its stderr to ``stderr``)."""
    log = stderr.open("w") if stderr else None
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "queuectl", "worker", "start", *args],
            env=queuectl_env(target),
            stdout=subprocess.DEVNULL,
            stderr=log or subprocess.DEVNULL,
            text=True,
        )
    finally:
        if log is not None:
            log.close()  # the child has its own copy


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def exit_code_within(process: subprocess.Popen[str], timeout: float = DEADLINE) -> int:
    return process.wait(timeout=timeout)


def jobs_state(target: str, job_ids: Sequence[str]) -> dict[str, str]:
    """States read through the CLI (``show --json``)."""
    import json

    states = {}
    for job_id in job_ids:
        shown = run_queuectl(target, "show", job_id, "--json")
        assert shown.returncode == 0, shown.stderr
        states[job_id] = json.loads(shown.stdout)["state"]
    return states
