"""The command line and SQLite files: what only a file on disk can show.

SQLite-only by nature: the default store under ``$XDG_DATA_HOME``, ``sqlite:///`` targets,
and files that are not a queuectl store (another program's data, a wrecked database, a
path that cannot hold a file), which must be refused with exit 1 and left untouched.
The backend-neutral command-line suite is in the other ``test_cli_*.py`` files.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from helpers import Cli, Result, assert_error, invoke, ok

NOT_A_DATABASE = b"hello world" * 100


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Where the store goes: alone in its own directory, so "wrote nothing" can be checked."""
    directory = tmp_path / "store"
    directory.mkdir()
    return directory / "queue.db"


@pytest.fixture
def sqlite_cli(db: Path) -> Cli:
    def run(*args: str, input: bytes | str | None = None) -> Result:
        return invoke("--db", str(db), *args, input=input)

    return run


def test_sqlite_url_target(tmp_path: Path) -> None:
    target = tmp_path / "url.db"
    ok(invoke("--db", f"sqlite:///{target}", "enqueue", "-c", "true"))
    assert target.exists()


def test_default_store_is_created_under_xdg_data_home(tmp_path: Path) -> None:
    env = {"QUEUECTL_DB": None, "XDG_DATA_HOME": str(tmp_path / "data")}
    ok(invoke("enqueue", "--id", "d", "-c", "true", env=env))
    assert (tmp_path / "data" / "queuectl" / "queue.db").is_file()


READ_ONLY = [
    ["status"],
    ["list"],
    ["list", "--json"],
    ["dlq", "list"],
    ["config", "show"],
    ["config", "get", "lease"],
    ["worker", "list", "--json"],
]


@pytest.mark.parametrize("args", READ_ONLY)
def test_a_read_only_command_that_creates_the_store_says_so(
    sqlite_cli: Cli, db: Path, args: list[str]
) -> None:
    note = f"queuectl: created a new empty store at {db}"
    first = ok(sqlite_cli(*args))
    assert note in first.stderr.splitlines()
    assert db.exists()
    assert note not in ok(sqlite_cli(*args)).stderr  # only when it was new


@pytest.mark.parametrize(
    "args",
    [
        ["enqueue", "-c", "true"],
        ["config", "set", "lease", "5"],
        ["dlq", "retry", "--all"],
        ["worker", "stop"],
    ],
)
def test_a_command_that_writes_creates_the_store_silently(sqlite_cli: Cli, db: Path, args: list[str]) -> None:
    assert "created" not in ok(sqlite_cli(*args)).stderr
    assert db.exists()


def test_a_read_only_command_that_fails_on_a_new_store_says_only_the_error(sqlite_cli: Cli) -> None:
    assert_error(sqlite_cli("show", "ghost"), 1, "ghost")


def test_the_default_store_created_by_status_is_named(tmp_path: Path) -> None:
    env = {"QUEUECTL_DB": None, "XDG_DATA_HOME": str(tmp_path / "data")}
    path = tmp_path / "data" / "queuectl" / "queue.db"
    assert ok(invoke("status", env=env)).stderr == f"queuectl: created a new empty store at {path}\n"


@pytest.mark.parametrize(
    "args", [["status"], ["list"], ["enqueue", "-c", "true"], ["config", "set", "lease", "5"]]
)
def test_a_file_that_is_not_a_database_is_refused_and_left_alone(
    sqlite_cli: Cli, db: Path, args: list[str]
) -> None:
    db.write_bytes(NOT_A_DATABASE)
    assert_error(sqlite_cli(*args), 1, str(db))
    assert db.read_bytes() == NOT_A_DATABASE
    assert list(db.parent.iterdir()) == [db]


def test_a_corrupt_sqlite_store_exits_1(sqlite_cli: Cli, db: Path) -> None:
    ok(sqlite_cli("enqueue", "-c", "true"))
    with db.open("r+b") as handle:  # keep the header, wreck the pages behind it
        handle.seek(100)
        handle.write(b"\xa5" * 8000)
    for args in (["status"], ["list"], ["enqueue", "-c", "true"]):
        line = assert_error(sqlite_cli(*args), 1, str(db))
        assert "internal error" not in line


def test_a_sqlite_database_of_another_program_is_left_alone(sqlite_cli: Cli, db: Path) -> None:
    connection = sqlite3.connect(db)
    connection.execute("CREATE TABLE songs (title TEXT)")
    connection.commit()
    connection.close()
    before = db.read_bytes()
    assert_error(sqlite_cli("status"), 1, str(db))
    assert db.read_bytes() == before


@pytest.mark.parametrize("kind", ["file-as-directory", "missing-directory", "proc"])
def test_an_unusable_path_exits_1(tmp_path: Path, kind: str) -> None:
    if kind == "file-as-directory":
        parent = tmp_path / "file.txt"
        parent.write_text("not a directory")
        target = parent / "queue.db"
    elif kind == "missing-directory":
        target = tmp_path / "no" / "such" / "dir" / "queue.db"
    else:
        target = Path("/proc/queuectl-test/queue.db")
    for args in (["status"], ["enqueue", "-c", "true"]):
        line = assert_error(invoke("--db", str(target), *args), 1, str(target))
        assert "internal error" not in line
    assert not (tmp_path / "no").exists()
