"""The command line in-process: ``main([...])`` with its exit code, stdout and its one stderr line.

Every command's happy path and ``--json`` shape, every error class with its exit
code, and the promise that a refused command writes nothing. Jobs in states the
CLI cannot reach without a worker (dead, completed) are made through the store API.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from queuectl.cli import main
from queuectl.config import SETTINGS, Settings
from queuectl.models import JobState, NewJob, Outcome
from queuectl.storage import open_store

JOB_KEYS = {
    "id",
    "command",
    "queue",
    "priority",
    "timeout",
    "max_retries",
    "run_at",
    "state",
    "attempts",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "exit_code",
    "last_error",
}
WORKER_KEYS = {"id", "host", "pid", "started_at", "heartbeat_at", "running"}
STATES = ("pending", "processing", "completed", "failed", "dead")


# --- running the CLI ----------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    code: int
    out: bytes
    err: bytes

    @property
    def stdout(self) -> str:
        return self.out.decode()

    @property
    def stderr(self) -> str:
        return self.err.decode()

    def json(self) -> Any:
        return json.loads(self.out)


def invoke(
    *args: str, input: bytes | str | None = None, env: Mapping[str, str | None] | None = None
) -> Result:
    """Run ``main(args)`` as the ``queuectl`` process would, with stdin, stdout and stderr captured."""
    runner = CliRunner()
    code: int | str | None = None
    with runner.isolation(input=input, env=env) as (out, err, _):
        try:
            main(list(args))
        except SystemExit as exit_:
            code = exit_.code
        else:  # pragma: no cover - main always exits
            raise AssertionError("main() returned instead of exiting")
    assert isinstance(code, int), code
    result = Result(code, out.getvalue(), err.getvalue())
    if "-vv" not in args:
        assert b"Traceback" not in result.err
    assert b"Traceback" not in result.out
    return result


Cli = Callable[..., Result]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Where the store goes: alone in its own directory, so "wrote nothing" can be checked."""
    directory = tmp_path / "store"
    directory.mkdir()
    return directory / "queue.db"


@pytest.fixture
def cli(db: Path) -> Cli:
    def run(*args: str, input: bytes | str | None = None) -> Result:
        return invoke("--db", str(db), *args, input=input)

    return run


def assert_error(result: Result, code: int, *words: str) -> str:
    """Exit ``code``, nothing on stdout, one ``queuectl: error:`` line on stderr containing ``words``."""
    assert result.code == code, (result.code, result.stderr)
    assert result.out == b""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("queuectl: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def ok(result: Result) -> Result:
    assert result.code == 0, (result.code, result.stderr)
    return result


# --- reaching the store directly ----------------------------------------------------------


def store_call(db: Path, action: Callable[[Any], Any]) -> Any:
    async def go() -> Any:
        store = await open_store(str(db))
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(go())


def finished_job(
    db: Path,
    job_id: str,
    state: JobState,
    *,
    stdout: bytes = b"",
    stderr: bytes = b"",
    command: str = "false",
) -> None:
    """Add a job and record one attempt ending in ``state`` (what a worker would do)."""
    queue = f"q-{job_id}"

    async def action(store: Any) -> None:
        await store.add_jobs([NewJob(id=job_id, command=command, queue=queue, max_retries=0)])
        await store.register_worker(worker_id=f"w-{job_id}", host="test", pid=1)
        (claim,) = await store.claim(worker_id=f"w-{job_id}", queues=[queue], limit=1, lease=30)
        now = datetime.now(UTC)
        exit_code = 0 if state is JobState.COMPLETED else 1
        outcome = Outcome(
            state=state,
            exit_code=exit_code,
            error=None if exit_code == 0 else "exit code 1",
            started_at=now,
            finished_at=now,
            stdout=stdout,
            stderr=stderr,
        )
        assert await store.finish(claim, outcome)
        await store.unregister_worker(f"w-{job_id}")

    store_call(db, action)


def state_of(db: Path, job_id: str) -> tuple[str, int]:
    async def action(store: Any) -> tuple[str, int]:
        job = await store.get_job(job_id)
        return job.state.value, job.attempts

    result: tuple[str, int] = store_call(db, action)
    return result


def job_ids(db: Path) -> list[str]:
    async def action(store: Any) -> list[str]:
        return [job.id for job in await store.list_jobs()]

    result: list[str] = store_call(db, action)
    return result


def assert_job_object(data: Any) -> None:
    assert isinstance(data, dict)
    assert set(data) == JOB_KEYS
    assert isinstance(data["id"], str)
    assert isinstance(data["priority"], int)
    assert isinstance(data["max_retries"], int)
    assert isinstance(data["attempts"], int)
    assert data["state"] in STATES
    for key in ("run_at", "created_at", "updated_at"):
        assert data[key].endswith("Z"), data[key]
        datetime.fromisoformat(data[key])


# --- the error boundary and help ----------------------------------------------------------


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


def test_unknown_option_is_a_usage_error_with_a_hint(cli: Cli, db: Path) -> None:
    line = assert_error(cli("list", "--bogus"), 2, "--bogus", "queuectl list --help")
    assert line.count("\n") == 0
    assert not db.exists()


def test_worker_group_has_start_list_and_stop() -> None:
    result = ok(invoke("worker", "--help"))
    for command in ("start", "list", "stop"):
        assert command in result.stdout


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


# --- enqueue ------------------------------------------------------------------------------


def test_enqueue_json_prints_only_the_id(cli: Cli, db: Path) -> None:
    result = ok(cli("enqueue", '{"id": "build-1", "command": "make"}'))
    assert result.stdout == "build-1\n"
    assert result.err == b""
    assert job_ids(db) == ["build-1"]


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
    cli: Cli, db: Path, args: list[str], words: list[str]
) -> None:
    assert_error(cli("enqueue", *args), 2, *words)
    assert list(db.parent.iterdir()) == []


def test_enqueue_json_and_command_together_is_refused(cli: Cli, db: Path) -> None:
    assert_error(cli("enqueue", '{"command": "ls"}', "--command", "ls"), 2, "not both")
    assert_error(cli("enqueue", '{"command": "ls"}', "--priority", "3"), 2, "--priority")
    assert_error(cli("enqueue"), 2, "--command")
    assert not db.exists()


def test_enqueue_duplicate_id_exits_1_and_keeps_the_first(cli: Cli, db: Path) -> None:
    ok(cli("enqueue", '{"id": "same", "command": "echo first"}'))
    assert_error(cli("enqueue", '{"id": "same", "command": "echo second"}'), 1, "same", "already exists")
    assert ok(cli("show", "same", "--json")).json()["command"] == "echo first"


# --- enqueue-file -------------------------------------------------------------------------


def test_enqueue_file_array_prints_ids_in_order(cli: Cli, db: Path, tmp_path: Path) -> None:
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps([{"id": "a", "command": "true"}, {"id": "b", "command": "false"}]))
    assert ok(cli("enqueue-file", str(path))).stdout == "a\nb\n"
    assert sorted(job_ids(db)) == ["a", "b"]


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


def test_enqueue_file_from_stdin(cli: Cli, db: Path) -> None:
    data = b'{"id": "s1", "command": "true"}\n{"id": "s2", "command": "true"}\n'
    assert ok(cli("enqueue-file", "-", input=data)).stdout == "s1\ns2\n"
    assert sorted(job_ids(db)) == ["s1", "s2"]


def test_enqueue_file_empty_array_enqueues_nothing(cli: Cli, db: Path, tmp_path: Path) -> None:
    path = tmp_path / "none.json"
    path.write_text("[]")
    assert ok(cli("enqueue-file", str(path))).out == b""
    assert ok(cli("enqueue-file", "--json", str(path))).json() == []
    assert not db.exists()  # nothing to do, so the store was not even opened


def test_enqueue_file_is_all_or_nothing(cli: Cli, db: Path, tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"id": "good", "command": "true"}\n{"id": "bad", "comand": "true"}\n')
    assert_error(cli("enqueue-file", str(path)), 2, "line 2", "comand")
    assert not db.exists()
    ok(cli("enqueue", '{"command": "true", "id": "before"}'))
    assert_error(cli("enqueue-file", str(path)), 2, "line 2")
    assert job_ids(db) == ["before"]


def test_enqueue_file_names_every_bad_array_item(cli: Cli, db: Path, tmp_path: Path) -> None:
    path = tmp_path / "jobs.json"
    path.write_text('[{"command": "true"}, {"command": ""}, {"command": "x", "priority": "1"}]')
    assert_error(cli("enqueue-file", str(path)), 2, "item 1", "item 2")
    assert not db.exists()


def test_enqueue_file_duplicate_within_the_file_exits_2(cli: Cli, db: Path, tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"id": "twice", "command": "true"}\n{"id": "twice", "command": "true"}\n')
    assert_error(cli("enqueue-file", str(path)), 2, "twice")
    assert not db.exists()


def test_enqueue_file_duplicate_in_the_store_exits_1_and_adds_nothing(
    cli: Cli, db: Path, tmp_path: Path
) -> None:
    ok(cli("enqueue", '{"id": "old", "command": "true"}'))
    path = tmp_path / "jobs.json"
    path.write_text('[{"id": "new", "command": "true"}, {"id": "old", "command": "true"}]')
    assert_error(cli("enqueue-file", str(path)), 1, "old", "already exists")
    assert job_ids(db) == ["old"]


def test_enqueue_file_missing_file_exits_2(cli: Cli, db: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    assert_error(cli("enqueue-file", str(missing)), 2, str(missing))
    assert_error(cli("enqueue-file", str(tmp_path)), 2, str(tmp_path))  # a directory
    assert not db.exists()


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"\xff\xfe{}"])
def test_enqueue_file_empty_or_undecodable_exits_2(
    cli: Cli, db: Path, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "jobs.json"
    path.write_bytes(content)
    assert_error(cli("enqueue-file", str(path)), 2)
    assert_error(cli("enqueue-file", "-", input=content), 2)
    assert not db.exists()


def test_enqueue_file_empty_file_message(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "jobs.json"
    path.write_bytes(b"")
    assert_error(cli("enqueue-file", str(path)), 2, "empty")


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


def test_status_counts_states_and_next_run(cli: Cli, db: Path) -> None:
    ok(cli("enqueue", "-c", "true", "--delay", "1h"))
    ok(cli("enqueue", "-c", "true", "--delay", "2h"))
    finished_job(db, "gone", JobState.DEAD)
    finished_job(db, "done", JobState.COMPLETED)
    data = ok(cli("status", "--json")).json()
    assert data["jobs"] == {"pending": 2, "processing": 0, "completed": 1, "failed": 0, "dead": 1}
    assert data["workers"] == 0
    next_run = datetime.fromisoformat(data["next_run_at"])
    assert timedelta(minutes=59) < next_run - datetime.now(UTC) <= timedelta(hours=1)
    human = ok(cli("status")).stdout
    assert data["next_run_at"][:19] in human


def test_status_counts_live_workers(cli: Cli, db: Path) -> None:
    store_call(db, lambda store: store.register_worker(worker_id="w1", host="h", pid=10))
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


def test_list_filters_by_state_and_queue(cli: Cli, db: Path) -> None:
    ok(cli("enqueue", "--id", "p1", "-c", "true", "--queue", "a"))
    ok(cli("enqueue", "--id", "p2", "-c", "true", "--queue", "b"))
    finished_job(db, "d1", JobState.DEAD)
    assert [job["id"] for job in ok(cli("list", "--state", "dead", "--json")).json()] == ["d1"]
    assert [job["id"] for job in ok(cli("list", "--queue", "b", "--json")).json()] == ["p2"]
    assert ok(cli("list", "--state", "dead", "--queue", "a", "--json")).json() == []


def test_list_limit(cli: Cli, tmp_path: Path) -> None:
    enqueue_many(cli, tmp_path, 103)
    assert len(ok(cli("list", "--json")).json()) == 100
    assert len(ok(cli("list", "--json", "--limit", "0")).json()) == 103
    assert len(ok(cli("list", "--json", "--limit", "5")).json()) == 5
    assert len(ok(cli("list", "--limit", "2")).stdout.splitlines()) == 3  # header + 2


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
def test_list_bad_options_exit_2(cli: Cli, db: Path, args: list[str], words: list[str]) -> None:
    assert_error(cli("list", *args), 2, *words)
    assert not db.exists()


# --- show ---------------------------------------------------------------------------------


def test_show_json_has_every_field_and_the_output(cli: Cli, db: Path) -> None:
    finished_job(db, "shown", JobState.DEAD, stdout=b"hello\n", stderr=b"oops\n")
    data = ok(cli("show", "shown", "--json")).json()
    assert set(data) == JOB_KEYS | {"stdout", "stderr"}
    assert data["state"] == "dead"
    assert data["attempts"] == 1
    assert data["exit_code"] == 1
    assert data["last_error"] == "exit code 1"
    assert data["stdout"] == "hello\n"
    assert data["stderr"] == "oops\n"
    assert data["finished_at"].endswith("Z")


def test_show_lists_every_field(cli: Cli, db: Path) -> None:
    finished_job(db, "shown", JobState.COMPLETED, stdout=b"line one\nline two\n")
    result = ok(cli("show", "shown"))
    keys = {line.split()[0] for line in result.stdout.splitlines() if line and not line.startswith(" ")}
    assert JOB_KEYS | {"stdout", "stderr"} <= keys
    assert "line one\nline two\n" in result.stdout
    assert "completed" in result.stdout


def test_show_unknown_id_exits_1(cli: Cli) -> None:
    assert_error(cli("show", "ghost"), 1, "no job with id 'ghost'")
    assert_error(cli("show", "ghost", "--json"), 1, "ghost")


# --- logs ---------------------------------------------------------------------------------


def test_logs_writes_the_bytes_as_they_were(cli: Cli, db: Path) -> None:
    out = b"text\n\x00\xff\xfe binary\r\n"
    err = b"warning: \x1b[31mred\x1b[0m\n"
    finished_job(db, "logged", JobState.COMPLETED, stdout=out, stderr=err)
    result = ok(cli("logs", "logged"))
    assert result.out == out
    assert result.err == err


def test_logs_json(cli: Cli, db: Path) -> None:
    finished_job(db, "logged", JobState.COMPLETED, stdout=b"out\n", stderr=b"err\n")
    assert ok(cli("logs", "logged", "--json")).json() == {
        "id": "logged",
        "stdout": "out\n",
        "stderr": "err\n",
    }


def test_logs_of_a_job_that_never_ran_is_empty(cli: Cli) -> None:
    ok(cli("enqueue", "--id", "new", "-c", "true"))
    result = ok(cli("logs", "new"))
    assert result.out == b"" and result.err == b""


def test_logs_unknown_id_exits_1(cli: Cli) -> None:
    assert_error(cli("logs", "ghost"), 1, "no job with id 'ghost'")


# --- the dead-letter queue ----------------------------------------------------------------


def test_dlq_list(cli: Cli, db: Path) -> None:
    ok(cli("enqueue", "--id", "alive", "-c", "true"))
    finished_job(db, "dead1", JobState.DEAD)
    data = ok(cli("dlq", "list", "--json")).json()
    assert [job["id"] for job in data] == ["dead1"]
    assert_job_object(data[0])
    assert data[0]["state"] == "dead"
    lines = ok(cli("dlq", "list")).stdout.splitlines()
    assert len(lines) == 2 and lines[1].startswith("dead1 ")


def test_dlq_list_empty(cli: Cli) -> None:
    result = ok(cli("dlq", "list"))
    assert result.out == b"" and "empty" in result.stderr
    assert ok(cli("dlq", "list", "--json")).json() == []


def test_dlq_retry_ids(cli: Cli, db: Path) -> None:
    finished_job(db, "d1", JobState.DEAD)
    finished_job(db, "d2", JobState.DEAD)
    assert ok(cli("dlq", "retry", "d1", "d2")).stdout == "d1\nd2\n"
    assert state_of(db, "d1") == ("pending", 0)
    assert state_of(db, "d2") == ("pending", 0)


def test_dlq_retry_json(cli: Cli, db: Path) -> None:
    finished_job(db, "d1", JobState.DEAD)
    data = ok(cli("dlq", "retry", "--json", "d1")).json()
    assert isinstance(data, list) and len(data) == 1
    assert_job_object(data[0])
    assert data[0]["state"] == "pending" and data[0]["attempts"] == 0


def test_dlq_retry_all(cli: Cli, db: Path) -> None:
    finished_job(db, "d1", JobState.DEAD)
    finished_job(db, "d2", JobState.DEAD)
    ok(cli("enqueue", "--id", "alive", "-c", "true"))
    assert sorted(ok(cli("dlq", "retry", "--all")).stdout.split()) == ["d1", "d2"]
    assert ok(cli("dlq", "list", "--json")).json() == []
    result = ok(cli("dlq", "retry", "--all"))
    assert result.out == b"" and "empty" in result.stderr


def test_dlq_retry_of_a_job_that_is_not_dead_changes_nothing(cli: Cli, db: Path) -> None:
    finished_job(db, "d1", JobState.DEAD)
    finished_job(db, "done", JobState.COMPLETED)
    ok(cli("enqueue", "--id", "waiting", "-c", "true"))
    assert_error(cli("dlq", "retry", "d1", "waiting"), 1, "waiting", "not dead")
    assert_error(cli("dlq", "retry", "done"), 1, "done")
    assert state_of(db, "d1") == ("dead", 1)
    assert state_of(db, "done") == ("completed", 1)
    assert state_of(db, "waiting") == ("pending", 0)


def test_dlq_retry_unknown_id_exits_1_and_changes_nothing(cli: Cli, db: Path) -> None:
    finished_job(db, "d1", JobState.DEAD)
    assert_error(cli("dlq", "retry", "d1", "ghost"), 1, "ghost")
    assert state_of(db, "d1") == ("dead", 1)


def test_dlq_retry_needs_ids_or_all(cli: Cli, db: Path) -> None:
    assert_error(cli("dlq", "retry"), 2, "--all")
    assert_error(cli("dlq", "retry", "x", "--all"), 2, "not both")
    assert not db.exists()


# --- config -------------------------------------------------------------------------------


def test_config_show_json_is_typed(cli: Cli) -> None:
    data = ok(cli("config", "show", "--json")).json()
    assert data == Settings().to_dict()
    assert set(data) >= {
        "max_retries",
        "backoff_base",
        "backoff_max",
        "default_timeout",
        "poll_interval",
        "lease",
    }
    assert isinstance(data["max_retries"], int) and not isinstance(data["max_retries"], bool)
    assert isinstance(data["backoff_base"], float)
    assert data["default_timeout"] is None


def test_config_show_table(cli: Cli) -> None:
    lines = ok(cli("config", "show")).stdout.splitlines()
    assert lines[0].split()[:2] == ["KEY", "VALUE"]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert rows["max_retries"] == "3"
    assert rows["default_timeout"] == "none"
    assert set(rows) == set(SETTINGS)


def test_config_set_and_get(cli: Cli) -> None:
    assert ok(cli("config", "get", "max_retries")).stdout == "3\n"
    assert ok(cli("config", "set", "max_retries", "5")).out == b""
    assert ok(cli("config", "get", "max_retries")).stdout == "5\n"
    assert ok(cli("config", "get", "max_retries", "--json")).json() == 5
    ok(cli("config", "set", "backoff_base", "1.5"))
    assert ok(cli("config", "get", "backoff_base", "--json")).json() == 1.5
    ok(cli("config", "set", "default_timeout", "30"))
    assert ok(cli("config", "get", "default_timeout")).stdout == "30\n"
    ok(cli("config", "set", "default_timeout", "none"))
    assert ok(cli("config", "get", "default_timeout")).stdout == "none\n"
    assert ok(cli("config", "get", "default_timeout", "--json")).json() is None
    assert ok(cli("config", "show", "--json")).json()["backoff_base"] == 1.5


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["set", "max_retry", "3"], ["max_retry", "max_retries", "lease"]),
        (["get", "max_retry"], ["max_retry", "max_retries", "lease"]),
        (["set", "max_retries", "three"], ["three", "max_retries"]),
        (["set", "max_retries", "-1"], ["-1", "max_retries"]),
        (["set", "lease", "0"], ["lease"]),
        (["set", "backoff_base", "0.5"], ["backoff_base"]),
        (["set", "poll_interval", "nan"], ["poll_interval"]),
        (["set", "lease"], ["VALUE"]),
    ],
)
def test_config_bad_key_or_value_exits_2_and_writes_nothing(
    cli: Cli, db: Path, args: list[str], words: list[str]
) -> None:
    assert_error(cli("config", *args), 2, *words)
    assert not db.exists()


def test_config_bad_value_leaves_the_setting(cli: Cli) -> None:
    ok(cli("config", "set", "lease", "12"))
    assert_error(cli("config", "set", "lease", "-5"), 2, "lease")
    assert ok(cli("config", "get", "lease")).stdout == "12\n"


# --- workers ------------------------------------------------------------------------------


def test_worker_list_empty(cli: Cli) -> None:
    result = ok(cli("worker", "list"))
    assert result.out == b"" and "no live workers" in result.stderr
    assert ok(cli("worker", "list", "--json")).json() == []


def test_worker_list_and_stop(cli: Cli, db: Path) -> None:
    store_call(db, lambda store: store.register_worker(worker_id="w-1", host="box", pid=4242))
    store_call(db, lambda store: store.heartbeat(worker_id="w-1", running=2))
    data = ok(cli("worker", "list", "--json")).json()
    assert len(data) == 1
    assert set(data[0]) == WORKER_KEYS
    assert data[0]["id"] == "w-1" and data[0]["host"] == "box"
    assert data[0]["pid"] == 4242 and data[0]["running"] == 2
    assert data[0]["started_at"].endswith("Z") and data[0]["heartbeat_at"].endswith("Z")
    lines = ok(cli("worker", "list")).stdout.splitlines()
    assert lines[0].split() == ["ID", "HOST", "PID", "STARTED", "HEARTBEAT", "RUNNING"]
    assert lines[1].split()[:3] == ["w-1", "box", "4242"]

    assert ok(cli("worker", "stop")).stdout == "asked 1 worker to stop\n"
    assert store_call(db, lambda store: store.heartbeat(worker_id="w-1", running=0)) is True
    assert ok(cli("worker", "stop", "--json")).json() == {"asked": 1}


def test_worker_stop_with_no_workers(cli: Cli) -> None:
    assert ok(cli("worker", "stop")).stdout == "asked 0 workers to stop\n"


# --- choosing and guarding the store ------------------------------------------------------


def test_db_from_the_environment(tmp_path: Path) -> None:
    target = tmp_path / "env.db"
    ok(invoke("enqueue", "--id", "e1", "-c", "true", env={"QUEUECTL_DB": str(target)}))
    assert target.exists()
    assert ok(invoke("show", "e1", "--json", env={"QUEUECTL_DB": str(target)})).json()["id"] == "e1"
    # --db wins over the environment
    other = tmp_path / "other.db"
    assert_error(invoke("--db", str(other), "show", "e1", env={"QUEUECTL_DB": str(target)}), 1, "e1")


def test_sqlite_url_target(tmp_path: Path) -> None:
    target = tmp_path / "url.db"
    ok(invoke("--db", f"sqlite:///{target}", "enqueue", "-c", "true"))
    assert target.exists()


def test_default_store_is_created_under_xdg_data_home(tmp_path: Path) -> None:
    env = {"QUEUECTL_DB": None, "XDG_DATA_HOME": str(tmp_path / "data")}
    ok(invoke("enqueue", "--id", "d", "-c", "true", env=env))
    assert (tmp_path / "data" / "queuectl" / "queue.db").is_file()


def test_unknown_target_scheme_exits_2(tmp_path: Path) -> None:
    assert_error(invoke("--db", "mysql://localhost/q", "status"), 2, "mysql://localhost/q")


def test_refused_commands_create_no_store(cli: Cli, db: Path, tmp_path: Path) -> None:
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
    assert list(db.parent.iterdir()) == []


NOT_A_DATABASE = b"hello world" * 100


@pytest.mark.parametrize(
    "args", [["status"], ["list"], ["enqueue", "-c", "true"], ["config", "set", "lease", "5"]]
)
def test_a_file_that_is_not_a_database_is_refused_and_left_alone(cli: Cli, db: Path, args: list[str]) -> None:
    db.write_bytes(NOT_A_DATABASE)
    assert_error(cli(*args), 1, str(db))
    assert db.read_bytes() == NOT_A_DATABASE
    assert list(db.parent.iterdir()) == [db]


def test_a_corrupt_sqlite_store_exits_1(cli: Cli, db: Path) -> None:
    ok(cli("enqueue", "-c", "true"))
    with db.open("r+b") as handle:  # keep the header, wreck the pages behind it
        handle.seek(100)
        handle.write(b"\xa5" * 8000)
    for args in (["status"], ["list"], ["enqueue", "-c", "true"]):
        line = assert_error(cli(*args), 1, str(db))
        assert "internal error" not in line


def test_a_sqlite_database_of_another_program_is_left_alone(cli: Cli, db: Path) -> None:
    connection = sqlite3.connect(db)
    connection.execute("CREATE TABLE songs (title TEXT)")
    connection.commit()
    connection.close()
    before = db.read_bytes()
    assert_error(cli("status"), 1, str(db))
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
