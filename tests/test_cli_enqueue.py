"""``enqueue`` and ``enqueue-file`` in-process, on each backend: what they print, the fields they
set, and bad input refused with exit 2 (a duplicate id with exit 1) without writing anything."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import Cli, assert_error, assert_job_object, assert_wrote_nothing, block_on, invoke, job_ids, ok

# --- enqueue ------------------------------------------------------------------------------


def test_enqueue_json_prints_only_the_id(cli: Cli, cli_target: str) -> None:
    result = ok(cli("enqueue", '{"id": "build-1", "command": "make"}'))
    assert result.stdout == "build-1\n"
    assert result.err == b""
    assert block_on(job_ids(cli_target)) == ["build-1"]


def test_enqueue_gives_a_uuid_by_default(cli: Cli) -> None:
    job_id = ok(cli("enqueue", '{"command": "true"}')).stdout.strip()
    assert uuid.UUID(job_id).version == 4


def test_enqueue_json_prints_the_job_object(cli: Cli) -> None:
    data = ok(cli("enqueue", "--json", '{"command": "echo hi", "priority": 5, "queue": "mail"}')).json()
    assert_job_object(data)
    assert data["command"] == "echo hi"
    assert data["priority"] == 5
    assert data["queue"] == "mail"
    assert data["state"] == "pending"
    assert data["attempts"] == 0
    assert data["max_retries"] == 3  # the config default
    assert data["timeout"] is None
    assert data["started_at"] is None and data["exit_code"] is None and data["last_error"] is None


def test_enqueue_from_options(cli: Cli) -> None:
    result = ok(
        cli(
            "enqueue",
            "--json",
            "--command",
            "sleep 1",
            "--id",
            "opt-1",
            "--queue",
            "slow",
            "--priority",
            "-7",
            "--timeout",
            "2.5",
            "--max-retries",
            "0",
            "--run-at",
            "2030-01-02T03:04:05+02:00",
        )
    )
    data = result.json()
    assert_job_object(data)
    assert data["id"] == "opt-1"
    assert data["command"] == "sleep 1"
    assert data["queue"] == "slow"
    assert data["priority"] == -7
    assert data["timeout"] == 2.5
    assert data["max_retries"] == 0
    assert data["run_at"] == "2030-01-02T01:04:05.000000Z"


def test_enqueue_with_delay(cli: Cli) -> None:
    before = datetime.now(UTC)
    data = ok(cli("enqueue", "--json", "-c", "true", "--delay", "5m")).json()
    run_at = datetime.fromisoformat(data["run_at"])
    assert before + timedelta(minutes=5) <= run_at <= datetime.now(UTC) + timedelta(minutes=5)


def test_enqueue_uses_configured_defaults(cli: Cli) -> None:
    ok(cli("config", "set", "max_retries", "7"))
    ok(cli("config", "set", "default_timeout", "9"))
    data = ok(cli("enqueue", "--json", "-c", "true")).json()
    assert data["max_retries"] == 7
    assert data["timeout"] == 9


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["{bad"], ["invalid JSON"]),
        (['{"comand": "ls"}'], ["comand", "command"]),
        (['{"command": "ls", "priority": NaN}'], ["NaN"]),
        (['{"command": "ls", "priority": true}'], ["priority"]),
        (['{"command": "ls", "command": "rm"}'], ["command"]),
        (['{"command": "   "}'], ["command"]),
        (['["not", "an", "object"]'], []),
        (["--command", "ls", "--priority", "high"], ["priority", "high"]),
        (["--command", "ls", "--delay", "soon"], ["delay", "soon"]),
        (["--command", "ls", "--run-at", "yesterday"], ["run_at", "yesterday"]),
        (["--command", "ls", "--max-retries", "-1"], ["max_retries"]),
        (["--command", "ls", "--id", "has space"], ["id"]),
        (["--command", "ls", "--run-at", "2030-01-01T00:00:00Z", "--delay", "5"], ["delay"]),
    ],
)
def test_enqueue_bad_input_exits_2_and_writes_nothing(
    cli: Cli, cli_target: str, args: list[str], words: list[str]
) -> None:
    assert_error(cli("enqueue", *args), 2, *words)
    assert_wrote_nothing(cli_target)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "echo hello",
            [
                "invalid JSON at line 1, column 1",
                "; to enqueue a shell command, use: queuectl enqueue -c 'echo hello'",
            ],
        ),
        ("  make test && make install", ["use: queuectl enqueue -c 'make test && make install'"]),
        ("42", ["a job must be a JSON object, got a number", "use: queuectl enqueue -c 42"]),
        ("it's", ["use: queuectl enqueue -c 'it'\"'\"'s'"]),
        ("echo one\necho two", ["use: queuectl enqueue -c 'echo one\\necho two'"]),
        ("sleep 1; " * 40, ["use: queuectl enqueue -c 'sleep 1; sleep 1; ", "...'"]),
    ],
)
def test_enqueue_of_a_shell_command_as_json_suggests_dash_c(
    cli: Cli, cli_target: str, text: str, words: list[str]
) -> None:
    line = assert_error(cli("enqueue", text), 2, *words)
    assert len(line) < 250  # a long argument is clipped
    assert_wrote_nothing(cli_target)


@pytest.mark.parametrize("text", ['{"command": ', '  [{"command": "ls"}, ', '{"comand": "ls"}', '["ls"]'])
def test_enqueue_of_broken_json_gets_no_dash_c_hint(cli: Cli, text: str) -> None:
    line = assert_error(cli("enqueue", text), 2)
    assert "enqueue -c" not in line


def test_enqueue_help_says_timeout_takes_a_duration_or_none() -> None:
    text = " ".join(ok(invoke("enqueue", "--help")).stdout.split())
    assert "--timeout DURATION" in text
    assert "5m" in text and "none" in text
    assert "SECONDS" not in text


def test_enqueue_json_and_command_together_is_refused(cli: Cli, cli_target: str) -> None:
    assert_error(cli("enqueue", '{"command": "ls"}', "--command", "ls"), 2, "not both")
    assert_error(cli("enqueue", '{"command": "ls"}', "--priority", "3"), 2, "--priority")
    assert_error(cli("enqueue"), 2, "--command")
    assert_wrote_nothing(cli_target)


def test_enqueue_duplicate_id_exits_1_and_keeps_the_first(cli: Cli) -> None:
    ok(cli("enqueue", '{"id": "same", "command": "echo first"}'))
    assert_error(cli("enqueue", '{"id": "same", "command": "echo second"}'), 1, "same", "already exists")
    assert ok(cli("show", "same", "--json")).json()["command"] == "echo first"


# --- enqueue-file -------------------------------------------------------------------------


def test_enqueue_file_array_prints_ids_in_order(cli: Cli, cli_target: str, tmp_path: Path) -> None:
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps([{"id": "a", "command": "true"}, {"id": "b", "command": "false"}]))
    assert ok(cli("enqueue-file", str(path))).stdout == "a\nb\n"
    assert sorted(block_on(job_ids(cli_target))) == ["a", "b"]


def test_enqueue_file_json_lines_with_json_output(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"id": "l1", "command": "true"}\n\n{"id": "l2", "command": "true", "priority": 2}\n')
    data = ok(cli("enqueue-file", "--json", str(path))).json()
    assert isinstance(data, list)
    assert [job["id"] for job in data] == ["l1", "l2"]
    for job in data:
        assert_job_object(job)
    assert data[1]["priority"] == 2


def test_enqueue_file_single_object(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text('{"id": "solo", "command": "true"}')
    assert ok(cli("enqueue-file", str(path))).stdout == "solo\n"


def test_enqueue_file_from_stdin(cli: Cli, cli_target: str) -> None:
    data = b'{"id": "s1", "command": "true"}\n{"id": "s2", "command": "true"}\n'
    assert ok(cli("enqueue-file", "-", input=data)).stdout == "s1\ns2\n"
    assert sorted(block_on(job_ids(cli_target))) == ["s1", "s2"]


def test_enqueue_file_empty_array_enqueues_nothing(cli: Cli, cli_target: str, tmp_path: Path) -> None:
    path = tmp_path / "none.json"
    path.write_text("[]")
    assert ok(cli("enqueue-file", str(path))).out == b""
    assert ok(cli("enqueue-file", "--json", str(path))).json() == []
    assert_wrote_nothing(cli_target)  # nothing to do, so a SQLite store was not even created


def test_enqueue_file_is_all_or_nothing(cli: Cli, cli_target: str, tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"id": "good", "command": "true"}\n{"id": "bad", "comand": "true"}\n')
    assert_error(cli("enqueue-file", str(path)), 2, "line 2", "comand")
    assert_wrote_nothing(cli_target)
    ok(cli("enqueue", '{"command": "true", "id": "before"}'))
    assert_error(cli("enqueue-file", str(path)), 2, "line 2")
    assert block_on(job_ids(cli_target)) == ["before"]


def test_enqueue_file_names_every_bad_array_item(cli: Cli, cli_target: str, tmp_path: Path) -> None:
    path = tmp_path / "jobs.json"
    path.write_text('[{"command": "true"}, {"command": ""}, {"command": "x", "priority": "1"}]')
    assert_error(cli("enqueue-file", str(path)), 2, "item 1", "item 2")
    assert_wrote_nothing(cli_target)


def test_enqueue_file_duplicate_within_the_file_exits_2(cli: Cli, cli_target: str, tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"id": "twice", "command": "true"}\n{"id": "twice", "command": "true"}\n')
    assert_error(cli("enqueue-file", str(path)), 2, "twice")
    assert_wrote_nothing(cli_target)


def test_enqueue_file_duplicate_in_the_store_exits_1_and_adds_nothing(
    cli: Cli, cli_target: str, tmp_path: Path
) -> None:
    ok(cli("enqueue", '{"id": "old", "command": "true"}'))
    path = tmp_path / "jobs.json"
    path.write_text('[{"id": "new", "command": "true"}, {"id": "old", "command": "true"}]')
    assert_error(cli("enqueue-file", str(path)), 1, "old", "already exists")
    assert block_on(job_ids(cli_target)) == ["old"]


def test_enqueue_file_missing_file_exits_2(cli: Cli, cli_target: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    assert_error(cli("enqueue-file", str(missing)), 2, str(missing))
    assert_error(cli("enqueue-file", str(tmp_path)), 2, str(tmp_path))  # a directory
    assert_wrote_nothing(cli_target)


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"\xff\xfe{}"])
def test_enqueue_file_empty_or_undecodable_exits_2(
    cli: Cli, cli_target: str, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "jobs.json"
    path.write_bytes(content)
    assert_error(cli("enqueue-file", str(path)), 2)
    assert_error(cli("enqueue-file", "-", input=content), 2)
    assert_wrote_nothing(cli_target)


def test_enqueue_file_empty_file_message(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "jobs.json"
    path.write_bytes(b"")
    assert_error(cli("enqueue-file", str(path)), 2, "empty")
