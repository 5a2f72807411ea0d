"""The command line in-process: help, the error boundary, choosing the store, refusals.

Every test that touches a store runs on each backend (the ``cli`` fixture); the
command-line suite is split by command family into the ``test_cli_*.py`` files, with
what only a SQLite file can show in ``test_cli_sqlite.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Cli, assert_error, assert_wrote_nothing, invoke, is_postgres, ok

# --- no store involved --------------------------------------------------------------------


def test_help_mentions_the_db_environment_variable() -> None:
    result = ok(invoke("--help"))
    assert "QUEUECTL_DB" in result.stdout
    assert "--db TARGET" in result.stdout
    for command in ("enqueue", "enqueue-file", "status", "list", "show", "logs", "dlq", "config", "worker"):
        assert command in result.stdout


def test_version() -> None:
    assert ok(invoke("--version")).stdout.startswith("queuectl ")


def test_no_command_shows_help_and_exits_2() -> None:
    result = invoke()
    assert result.code == 2
    assert "Usage: queuectl" in result.stderr
    assert result.out == b""


def test_unknown_command_is_a_usage_error() -> None:
    assert_error(invoke("enqueu"), 2, "enqueu")


def test_worker_group_has_start_list_and_stop() -> None:
    result = ok(invoke("worker", "--help"))
    for command in ("start", "list", "stop"):
        assert command in result.stdout


#: Every command but ``worker start``, whose help is the worker's.
LEAF_COMMANDS = [
    ["enqueue"],
    ["enqueue-file"],
    ["status"],
    ["list"],
    ["show"],
    ["logs"],
    ["dlq", "list"],
    ["dlq", "retry"],
    ["config", "show"],
    ["config", "get"],
    ["config", "set"],
    *(["queue", name] for name in ("list", "pause", "resume", "limit")),
    ["store", "copy"],
    *(["schedule", name] for name in ("add", "list", "remove", "pause", "resume")),
]


@pytest.mark.parametrize("command", LEAF_COMMANDS, ids=" ".join)
def test_every_command_help_has_examples(command: list[str]) -> None:
    text = ok(invoke(*command, "--help", env={"COLUMNS": "80"})).stdout
    examples = text.split("Examples:\n", 1)[1].splitlines()
    assert examples and all(line.startswith("    ") and "queuectl " in line for line in examples)
    assert any(" ".join(command) in line for line in examples)
    assert all(len(line) <= 80 for line in text.splitlines())


@pytest.mark.parametrize("group", [[], ["dlq"], ["config"], ["queue"], ["schedule"], ["store"]], ids=" ".join)
def test_command_lists_are_not_cut_at_80_columns(group: list[str]) -> None:
    text = ok(invoke(*group, "--help", env={"COLUMNS": "80"})).stdout
    commands = text.split("Commands:\n", 1)[1]
    assert "..." not in commands and "\u2026" not in commands, commands


def test_no_stored_note_for_a_server_store(cli: Cli, cli_target: str) -> None:
    """Only a SQLite file is made by opening it: the note is SQLite's (see test_cli_sqlite)."""
    result = ok(cli("status"))
    assert ("created a new empty store" in result.stderr) is (not is_postgres(cli_target))


def test_unknown_target_scheme_exits_2() -> None:
    assert_error(invoke("--db", "mysql://localhost/q", "status"), 2, "mysql://localhost/q")


# --- the error boundary -------------------------------------------------------------------


def test_unknown_option_is_a_usage_error_with_a_hint(cli: Cli, cli_target: str) -> None:
    line = assert_error(cli("list", "--bogus"), 2, "--bogus", "queuectl list --help")
    assert line.count("\n") == 0
    assert_wrote_nothing(cli_target)


def test_internal_error_is_one_line_without_traceback(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from queuectl.queue import Queue

    async def broken(self: Queue) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Queue, "status", broken)
    result = cli("status")
    assert result.code == 1
    assert result.stderr.splitlines() == [
        "queuectl: internal error: RuntimeError: boom (run with -vv for the traceback)"
    ]
    verbose = cli("-vv", "status")
    assert verbose.code == 1
    assert "Traceback" in verbose.stderr
    assert verbose.stderr.splitlines()[-1] == "queuectl: internal error: RuntimeError: boom"


def test_keyboard_interrupt_exits_130(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from queuectl.queue import Queue

    async def interrupted(self: Queue) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Queue, "status", interrupted)
    result = cli("status")
    assert result.code == 130
    assert result.out == b""


# --- choosing the store -------------------------------------------------------------------


def test_db_from_the_environment(cli_target: str, tmp_path: Path) -> None:
    env = {"QUEUECTL_DB": cli_target}
    ok(invoke("enqueue", "--id", "e1", "-c", "true", env=env))
    if not is_postgres(cli_target):
        assert Path(cli_target).exists()
    assert ok(invoke("show", "e1", "--json", env=env)).json()["id"] == "e1"
    # --db wins over the environment
    other = tmp_path / "other.db"
    assert_error(invoke("--db", str(other), "show", "e1", env=env), 1, "e1")


# --- a refused command writes nothing -----------------------------------------------------


def test_refused_commands_write_nothing(cli: Cli, cli_target: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"command": "true"}\n{"command": 1}\n')
    refused = [
        ["enqueue", "{bad"],
        ["enqueue", '{"command": "true", "extra": 1}'],
        ["enqueue", "-c", "true", "--priority", "1.5"],
        ["enqueue-file", str(bad)],
        ["enqueue-file", str(tmp_path / "missing.json")],
        ["list", "--state", "nope"],
        ["config", "set", "nope", "1"],
        ["config", "set", "lease", "forever"],
        ["dlq", "retry"],
    ]
    for args in refused:
        assert cli(*args).code == 2, args
    assert_wrote_nothing(cli_target)
