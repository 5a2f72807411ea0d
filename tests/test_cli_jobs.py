"""``status``, ``list``, ``show`` and ``logs`` in-process, on each backend.

Completed and dead jobs are made by running real commands with a burst worker pool
(``helpers.make_completed``, ``helpers.make_dead``): the command line alone has no way there.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    JOB_KEYS,
    STATES,
    Cli,
    assert_error,
    assert_job_object,
    assert_wrote_nothing,
    block_on,
    fake_worker,
    invoke,
    make_completed,
    make_dead,
    make_processing,
    ok,
)

#: Bytes no text decoding survives, on stdout; terminal escapes on stderr.
RAW_STDOUT = b"text\n\x00\xff\xfe binary\r\n"
RAW_STDERR = b"warning: \x1b[31mred\x1b[0m\n"
WRITE_RAW = r"printf 'text\n\000\377\376 binary\r\n'; printf 'warning: \033[31mred\033[0m\n' >&2"

# --- status -------------------------------------------------------------------------------


def test_status_of_an_empty_store(cli: Cli) -> None:
    assert ok(cli("status", "--json")).json() == {
        "jobs": dict.fromkeys(STATES, 0),
        "workers": 0,
        "next_run_at": None,
    }
    lines = ok(cli("status")).stdout.splitlines()
    for state in STATES:
        assert f"{state} " in "\n".join(lines)
    assert any(line.split() == ["workers", "0"] for line in lines)


def test_status_counts_states_and_next_run(cli: Cli, cli_target: str) -> None:
    ok(cli("enqueue", "-c", "true", "--delay", "1h"))
    ok(cli("enqueue", "-c", "true", "--delay", "2h"))
    block_on(make_dead(cli_target, "gone"))
    block_on(make_completed(cli_target, "done"))
    data = ok(cli("status", "--json")).json()
    assert data["jobs"] == {
        "pending": 2,
        "processing": 0,
        "completed": 1,
        "failed": 0,
        "dead": 1,
        "cancelled": 0,
    }
    assert data["workers"] == 0
    next_run = datetime.fromisoformat(data["next_run_at"])
    assert timedelta(minutes=59) < next_run - datetime.now(UTC) <= timedelta(hours=1)
    human = ok(cli("status")).stdout
    assert data["next_run_at"][:19] in human


def test_status_counts_live_workers(cli: Cli, cli_target: str) -> None:
    block_on(fake_worker(cli_target, worker_id="w1", host="h", pid=10))
    assert ok(cli("status", "--json")).json()["workers"] == 1


# --- list ---------------------------------------------------------------------------------


def enqueue_many(cli: Cli, tmp_path: Path, count: int, **fields: Any) -> list[str]:
    path = tmp_path / f"many-{uuid.uuid4().hex}.jsonl"
    path.write_text("".join(json.dumps({"command": "true", **fields}) + "\n" for _ in range(count)))
    return ok(cli("enqueue-file", str(path))).stdout.split()


def test_list_is_newest_first_as_json(cli: Cli) -> None:
    for job_id in ("one", "two", "three"):
        ok(cli("enqueue", "--id", job_id, "-c", "true"))
    data = ok(cli("list", "--json")).json()
    assert [job["id"] for job in data] == ["three", "two", "one"]
    for job in data:
        assert_job_object(job)


def test_list_table(cli: Cli) -> None:
    ok(cli("enqueue", "--id", "t1", "-c", "echo 'a table row'", "--priority", "4", "--queue", "q1"))
    lines = ok(cli("list")).stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "ATTEMPTS", "PRIORITY", "QUEUE", "RUN", "AT", "COMMAND"]
    assert lines[1].split()[:5] == ["t1", "pending", "0", "4", "q1"]
    assert lines[1].endswith("echo 'a table row'")


def test_list_escapes_control_characters_in_the_table(cli: Cli) -> None:
    ok(cli("enqueue", "--id", "nl", "-c", "echo a\necho b"))
    lines = ok(cli("list")).stdout.splitlines()
    assert len(lines) == 2
    assert lines[1].endswith("echo a\\necho b")


def test_list_empty(cli: Cli) -> None:
    result = ok(cli("list"))
    assert result.out == b""
    assert "no jobs" in result.stderr
    assert ok(cli("list", "--json")).json() == []


def test_list_filters_by_state_and_queue(cli: Cli, cli_target: str) -> None:
    ok(cli("enqueue", "--id", "p1", "-c", "true", "--queue", "a"))
    ok(cli("enqueue", "--id", "p2", "-c", "true", "--queue", "b"))
    block_on(make_dead(cli_target, "d1"))
    assert [job["id"] for job in ok(cli("list", "--state", "dead", "--json")).json()] == ["d1"]
    assert [job["id"] for job in ok(cli("list", "--queue", "b", "--json")).json()] == ["p2"]
    assert ok(cli("list", "--state", "dead", "--queue", "a", "--json")).json() == []


def test_list_limit(cli: Cli, tmp_path: Path) -> None:
    enqueue_many(cli, tmp_path, 103)
    assert len(ok(cli("list", "--json")).json()) == 100
    assert len(ok(cli("list", "--json", "--limit", "0")).json()) == 103
    assert len(ok(cli("list", "--json", "--limit", "5")).json()) == 5
    assert len(ok(cli("list", "--limit", "2")).stdout.splitlines()) == 3  # header + 2


def test_list_takes_several_states_and_several_queues(cli: Cli, cli_target: str) -> None:
    ok(cli("enqueue", "--id", "a1", "-c", "true", "--queue", "a"))
    ok(cli("enqueue", "--id", "b1", "-c", "true", "--queue", "b"))
    ok(cli("enqueue", "--id", "c1", "-c", "true", "--queue", "c"))
    block_on(make_dead(cli_target, "d1"))
    block_on(make_completed(cli_target, "done"))

    def listed(*args: str) -> set[str]:
        return {job["id"] for job in ok(cli("list", "--json", *args)).json()}

    assert listed("--state", "dead", "--state", "pending") == {"a1", "b1", "c1", "d1"}
    assert listed("--queue", "a", "--queue", "c") == {"a1", "c1"}
    assert listed("--state", "pending", "--state", "completed", "--queue", "b", "--queue", "q-done") == {
        "b1",
        "done",
    }
    assert listed("--state", "dead", "--state", "dead") == {"d1"}


def test_list_that_stops_at_its_limit_says_how_many_there_are(cli: Cli, tmp_path: Path) -> None:
    enqueue_many(cli, tmp_path, 5)
    enqueue_many(cli, tmp_path, 3, queue="other")
    table = ok(cli("list", "--limit", "2"))
    assert len(table.stdout.splitlines()) == 3
    assert table.stderr == "showing 2 of 8 jobs; use --limit 0 for all\n"
    as_json = ok(cli("list", "--limit", "2", "--json"))
    assert len(as_json.json()) == 2  # stdout stays one JSON document
    assert as_json.stderr == "showing 2 of 8 jobs; use --limit 0 for all\n"
    filtered = ok(cli("list", "--queue", "other", "--limit", "1", "--json"))
    assert filtered.stderr == "showing 1 of 3 jobs; use --limit 0 for all\n"
    for args in (["--limit", "8"], ["--limit", "0"], ["--limit", "3", "--queue", "other"], []):
        assert ok(cli("list", *args)).err == b"", args


def test_list_counts_only_when_the_page_is_full(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from queuectl.queue import Queue

    async def no_count(self: Queue, **filters: Any) -> int:
        raise AssertionError("counted a page that was not full")

    ok(cli("enqueue", "-c", "true"))
    monkeypatch.setattr(Queue, "count_matching", no_count)
    assert len(ok(cli("list", "--limit", "2", "--json")).json()) == 1
    assert len(ok(cli("dlq", "list", "--json")).json()) == 0


def test_the_note_of_a_cut_list_groups_thousands(capsys: pytest.CaptureFixture[str]) -> None:
    from queuectl.cli import render

    render.jobs([], as_json=True, total=2345)
    assert capsys.readouterr().err == "showing 0 of 2,345 jobs; use --limit 0 for all\n"


def test_list_help_documents_the_limit() -> None:
    text = " ".join(ok(invoke("list", "--help")).stdout.split())
    assert "0 shows all" in text
    assert "default: 100" in text


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--state", "done"], ["--state", "done", "pending", "dead"]),
        (["--limit", "-1"], ["--limit"]),
        (["--limit", "many"], ["--limit"]),
    ],
)
def test_list_bad_options_exit_2(cli: Cli, cli_target: str, args: list[str], words: list[str]) -> None:
    assert_error(cli("list", *args), 2, *words)
    assert_wrote_nothing(cli_target)


# --- show ---------------------------------------------------------------------------------


def test_show_json_has_every_field_and_the_output(cli: Cli, cli_target: str) -> None:
    block_on(make_dead(cli_target, "shown", command="echo hello; echo oops >&2; exit 1"))
    data = ok(cli("show", "shown", "--json")).json()
    assert set(data) == JOB_KEYS | {"stdout", "stderr", "history"}
    assert data["state"] == "dead"
    assert data["attempts"] == 1
    assert data["exit_code"] == 1
    assert data["last_error"] == "exit code 1"
    assert data["stdout"] == "hello\n"
    assert data["stderr"] == "oops\n"
    assert data["finished_at"].endswith("Z")


def test_show_lists_every_field(cli: Cli, cli_target: str) -> None:
    block_on(make_completed(cli_target, "shown", command="printf 'line one\\nline two\\n'"))
    result = ok(cli("show", "shown"))
    keys = {line.split()[0] for line in result.stdout.splitlines() if line and not line.startswith(" ")}
    assert JOB_KEYS | {"stdout", "stderr", "history"} <= keys
    assert "line one\nline two\n" in result.stdout
    assert "completed" in result.stdout


def test_show_unknown_id_exits_1(cli: Cli) -> None:
    assert_error(cli("show", "ghost"), 1, "no job with id 'ghost'")
    assert_error(cli("show", "ghost", "--json"), 1, "ghost")


# --- logs ---------------------------------------------------------------------------------


def test_logs_writes_the_bytes_as_they_were(cli: Cli, cli_target: str) -> None:
    block_on(make_completed(cli_target, "logged", command=WRITE_RAW))
    result = ok(cli("logs", "logged"))
    assert result.out == RAW_STDOUT
    assert result.err == RAW_STDERR


def test_logs_json(cli: Cli, cli_target: str) -> None:
    block_on(make_completed(cli_target, "logged", command="echo out; echo err >&2"))
    assert ok(cli("logs", "logged", "--json")).json() == {
        "id": "logged",
        "stdout": "out\n",
        "stderr": "err\n",
    }


def test_logs_of_a_job_that_never_ran_is_empty(cli: Cli) -> None:
    ok(cli("enqueue", "--id", "new", "-c", "true"))
    result = ok(cli("logs", "new"))
    # Nothing of the job's; a note that it has not run (issue 11: it used to say nothing at all).
    assert result.out == b"" and result.err == b"queuectl: job new has not run yet (pending)\n"
    json_result = ok(cli("logs", "new", "--json"))
    assert json_result.json() == {"id": "new", "stdout": "", "stderr": ""}
    assert json_result.stderr == "queuectl: job new has not run yet (pending)\n"


def test_logs_of_a_running_job_says_its_output_comes_when_the_attempt_ends(cli: Cli, cli_target: str) -> None:
    block_on(make_processing(cli_target, "busy"))
    result = ok(cli("logs", "busy"))
    assert result.out == b""
    assert result.stderr == "queuectl: job busy is running; its output appears when the attempt ends\n"


def test_logs_of_a_finished_job_adds_no_note(cli: Cli, cli_target: str) -> None:
    block_on(make_completed(cli_target, "quiet"))
    assert ok(cli("logs", "quiet")).err == b""


def test_logs_unknown_id_exits_1(cli: Cli) -> None:
    assert_error(cli("logs", "ghost"), 1, "no job with id 'ghost'")
