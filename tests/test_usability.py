"""What a new user trips over (issue 11): each case is a real `queuectl` process, as typed in a shell."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def queuectl(*args: str | bytes, cwd: Path, db: str | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("QUEUECTL_", "PG"))}
    env["HOME"] = str(cwd)  # the default store, if anything reached it, would land here
    if db is not None:
        env["QUEUECTL_DB"] = db
    argv: list[str | bytes] = [sys.executable, "-m", "queuectl", *args]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, timeout=60)


def one_error_line(done: subprocess.CompletedProcess[bytes]) -> str:
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "internal error" not in lines[0] and "Traceback" not in lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [
        [b"show", b"\xff"],
        [b"list", b"--queue", b"\xff"],
        [b"dlq", b"retry", b"ab\xffc"],
        [b"worker", b"start", b"--burst", b"--queue", b"\xff"],
        [b"enqueue", b"--command", b"echo \xff"],
    ],
    ids=["show", "list", "dlq-retry", "worker-start", "enqueue"],
)
def test_arguments_that_are_not_utf8_are_bad_input(tmp_path: Path, args: list[bytes]) -> None:
    db = str(tmp_path / "queue.db")
    done = queuectl(*args, cwd=tmp_path, db=db)
    assert done.returncode == 2
    assert "not valid UTF-8" in one_error_line(done)
    assert not Path(db).exists()  # refused before the store was opened


def test_output_that_cannot_be_written_is_one_line_and_exit_1(tmp_path: Path) -> None:
    db = str(tmp_path / "queue.db")
    assert queuectl("enqueue", "--command", "true", cwd=tmp_path, db=db).returncode == 0
    with open("/dev/full", "wb") as full:
        done = subprocess.run(
            [sys.executable, "-m", "queuectl", "--db", db, "list"],
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr.decode().strip() == "queuectl: error: cannot write output: no space left on device"


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("postgresql://", "the host is missing"),
        ("postgres://", "the host is missing"),
        ("postgresql://postgres@127.0.0.1:99999/db", "port must be a number from 1 to 65535"),
        ("postgresql://postgres@127.0.0.1:0/db", "port must be a number from 1 to 65535"),
        ("postgresql://postgres@127.0.0.1:abc/db", "port must be a number from 1 to 65535"),
        ("postgresql://postgres:secret@127.0.0.1:5432", "the database is missing"),
        ("postgresql://postgres:secret@127.0.0.1:5432/", "the database is missing"),
        ("sqlite:", "the path is missing"),
        ("sqlite://", "the path is missing"),
        ("sqlite:///", "the path is missing"),
        ("sqlite:jobs.db", "the path is missing"),
    ],
)
def test_incomplete_store_targets_are_refused_and_nothing_is_created(
    tmp_path: Path, target: str, says: str
) -> None:
    for args in (["status"], ["enqueue", "--command", "true"]):
        done = queuectl("--db", target, *args, cwd=tmp_path, db=None)
        assert done.returncode == 2, done.stderr
        line = one_error_line(done)
        assert says in line and "secret" not in line
    assert list(tmp_path.iterdir()) == []  # no `sqlite:` file, no default store


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["lis"], "Did you mean 'list'?"),
        (["log"], "Did you mean 'logs'?"),
        (["stauts"], "Did you mean 'status'?"),
        (["worker", "strat"], "Did you mean 'start'?"),
        (["list", "--db", "x.db"], "--db goes before the command"),
    ],
)
def test_typos_get_a_suggestion(tmp_path: Path, args: list[str], says: str) -> None:
    done = queuectl(*args, cwd=tmp_path, db=str(tmp_path / "queue.db"))
    assert done.returncode == 2
    assert says in one_error_line(done)


# --- no path to "internal error" -----------------------------------------------------------

_WORDS = [
    "enqueue", "enqueue-file", "status", "list", "show", "logs", "dlq", "retry", "config", "get", "set",
    "show", "worker", "list", "stop", "--json", "--state", "--queue", "--limit", "--command", "-c", "--id",
    "--priority", "--timeout", "--max-retries", "--run-at", "--delay", "--all", "--help", "-", "--",
    "lease", "poll_interval", "max-retries", "default_timeout", "none", "5m", "1h30m", "-1", "0", "1e309",
    "pending", "dead", '{"command": "true"}', '{"command": 1}', "[]", "NaN", "2030-01-01T00:00:00Z",
    "--cwd", "--env", "A=1", "1A=x", "rel/dir", "/tmp", '{"command": "true", "cwd": "x", "env": {"A": 1}}',
    "cancelled", "aaaaaa",
]  # fmt: skip
_ARGUMENT = st.one_of(
    st.sampled_from(_WORDS),
    st.text(max_size=12),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)


_COMMANDS = [
    ["enqueue"], ["enqueue-file"], ["status"], ["list"], ["show"], ["logs"], ["dlq", "list"],
    ["dlq", "retry"], ["config", "show"], ["config", "get"], ["config", "set"], ["worker", "list"],
    ["worker", "stop"], [],
]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(_COMMANDS), rest=st.lists(_ARGUMENT, max_size=5))
def test_no_arguments_reach_an_internal_error(tmp_path: Path, command: list[str], rest: list[str]) -> None:
    """Whatever the words, the answer is data, help, or one line with exit 1 or 2: never a traceback."""
    args = command + rest
    if "start" in args:
        return  # a worker runs until stopped; its options are covered by the worker tests
    result = invoke("--db", str(tmp_path / "fuzz.db"), *args, input=b"")
    assert result.code in (0, 1, 2), (args, result.code, result.stderr)
    assert b"internal error" not in result.err, (args, result.stderr)
    if result.code != 0 and not result.err.startswith(b"Usage:"):
        assert len(result.err.splitlines()) == 1, (args, result.stderr)


def test_a_lease_refused_on_a_new_store_creates_no_store(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    result = invoke("--db", str(db), "config", "set", "lease", "0.5")
    assert result.code == 2 and b"at least 2 x poll_interval" in result.err
    assert list(tmp_path.iterdir()) == []
