"""The command line as real processes: ``python -m queuectl`` and the installed ``queuectl``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROCESS_TIMEOUT = 60


def entry_point() -> str:
    """The installed ``queuectl`` script next to this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / "queuectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("queuectl")
    if found is None:
        pytest.skip("the queuectl entry point is not installed (pip install -e .)")
    return found


def run(
    *args: str, db: Path | None = None, module: bool = True, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ)
    env.pop("QUEUECTL_DB", None)
    if db is not None:
        env["QUEUECTL_DB"] = str(db)
    program = [sys.executable, "-m", "queuectl"] if module else [entry_point()]
    result = subprocess.run(
        [*program, *args], input=input, capture_output=True, env=env, timeout=PROCESS_TIMEOUT, check=False
    )
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    assert b"Traceback" not in result.stdout
    return result


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


def test_python_dash_m_help_mentions_the_environment_variable() -> None:
    result = run("--help")
    assert result.returncode == 0
    text = result.stdout.decode()
    assert text.startswith("Usage: queuectl")
    assert "QUEUECTL_DB" in text


def test_installed_entry_point() -> None:
    result = run("--version", module=False)
    assert result.returncode == 0
    assert result.stdout.decode().startswith("queuectl ")
    assert "QUEUECTL_DB" in run("--help", module=False).stdout.decode()


def test_jobs_persist_across_processes(db: Path) -> None:
    enqueued = run("enqueue", '{"id": "p1", "command": "echo hi"}', db=db, module=False)
    assert (enqueued.returncode, enqueued.stdout, enqueued.stderr) == (0, b"p1\n", b"")
    listed = run("list", "--json", db=db)
    assert listed.returncode == 0
    assert [job["id"] for job in json.loads(listed.stdout)] == ["p1"]


def test_config_persists_across_processes(db: Path) -> None:
    assert run("config", "set", "max_retries", "6", db=db).returncode == 0
    got = run("config", "get", "max_retries", db=db, module=False)
    assert (got.returncode, got.stdout) == (0, b"6\n")
    assert json.loads(run("config", "show", "--json", db=db).stdout)["max_retries"] == 6


def test_enqueue_file_from_stdin(db: Path) -> None:
    result = run("enqueue-file", "-", db=db, input=b'{"id": "x1", "command": "true"}\n')
    assert (result.returncode, result.stdout) == (0, b"x1\n")


def test_bad_input_exits_2_with_one_line_and_writes_nothing(db: Path) -> None:
    result = run("enqueue", "{bad", db=db)
    assert result.returncode == 2
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("queuectl: error: ")
    assert not db.exists()


def test_usage_error_exits_2(db: Path) -> None:
    result = run("list", "--state", "finished", db=db, module=False)
    assert result.returncode == 2
    assert len(result.stderr.decode().splitlines()) == 1


def test_unknown_job_exits_1(db: Path) -> None:
    result = run("show", "nope", db=db)
    assert result.returncode == 1
    assert result.stderr.decode() == "queuectl: error: no job with id 'nope'\n"


def test_a_file_that_is_not_a_database_exits_1_untouched(db: Path) -> None:
    content = b"hello world" * 100
    db.write_bytes(content)
    result = run("enqueue", "-c", "true", db=db)
    assert result.returncode == 1
    assert str(db) in result.stderr.decode()
    assert len(result.stderr.decode().splitlines()) == 1
    assert db.read_bytes() == content


def test_a_closed_stdout_is_quiet(db: Path) -> None:
    assert run("enqueue", "-c", "true", db=db).returncode == 0
    env = {**os.environ, "QUEUECTL_DB": str(db)}
    process = subprocess.Popen(
        [sys.executable, "-m", "queuectl", "list", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader goes away before anything is written
    stderr = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=PROCESS_TIMEOUT) in (0, 1)
    assert stderr == b""


def test_import_of_the_cli_loads_no_database_driver() -> None:
    heavy = ("asyncio", "aiosqlite", "asyncpg", "sqlite3", "anyio")
    code = f"import sys, queuectl.cli; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=PROCESS_TIMEOUT, check=True
    )
    assert result.stdout.strip() == b"[]"


def test_ctrl_c_while_the_command_line_loads_ends_quietly(tmp_path: Path) -> None:
    # A Ctrl-C in a command's first ~50 ms lands in an import (click's, mostly): here that import
    # is interrupted every time, by a "click" that raises KeyboardInterrupt as it loads.
    fake = tmp_path / "fake" / "click"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise KeyboardInterrupt\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "queuectl", "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stderr) == (130, "")
