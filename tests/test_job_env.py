"""A job's ``cwd`` and ``env``: given as options, JSON, files and through the API, on each backend.

The checks of single values are in ``test_validation.py``; here they reach the command line
(exit 2, one line, nothing written), the stores keep what was given, and a worker runs the
command where and with what the job says.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import DEADLINE, Cli, assert_error, assert_wrote_nothing, ok

from queuectl import Queue
from queuectl.errors import InvalidInput
from queuectl.models import JobState, NewJob

ENV = {"STAGE": "prod", "_UNDER": "", "EQUALS": "a=b", "SPACES": "hello world", "UTF8": "grüße ✓"}


def shown(cli: Cli, job_id: str) -> dict[str, object]:
    data: dict[str, object] = ok(cli("show", job_id, "--json")).json()
    return data


# --- from options -------------------------------------------------------------------------------


def test_enqueue_options_set_cwd_and_env(cli: Cli) -> None:
    job_id = ok(
        cli("enqueue", "-c", "make", "--cwd", "/srv/app", "--env", "STAGE=prod", "--env", "B=x=y")
    ).stdout
    data = shown(cli, job_id.strip())
    assert data["cwd"] == "/srv/app"
    assert data["env"] == {"STAGE": "prod", "B": "x=y"}


def test_a_relative_cwd_option_is_taken_from_the_current_directory(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = ok(cli("enqueue", "-c", "make", "--cwd", "build/out", "--json")).json()
    assert data["cwd"] == str(tmp_path / "build" / "out")
    assert ok(cli("enqueue", "-c", "make", "--cwd", ".", "--json")).json()["cwd"] == str(tmp_path)


def test_without_cwd_and_env_they_are_null(cli: Cli) -> None:
    data = ok(cli("enqueue", "-c", "make", "--json")).json()
    assert (data["cwd"], data["env"]) == (None, None)


def test_enqueue_help_says_a_relative_cwd_is_from_the_current_directory(cli: Cli) -> None:
    text = " ".join(ok(cli("enqueue", "--help")).stdout.split())
    assert "--cwd DIR" in text and "relative DIR is taken from the current directory" in text
    assert "--env NAME=VALUE" in text and "repeatable" in text


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--env", "STAGE"], ['--env takes NAME=VALUE, got "STAGE"']),
        (["--env", "=x"], ['env name "" is not valid']),
        (["--env", "1ST=x"], ['env name "1ST" is not valid', "letters, digits and _"]),
        (["--env", "A-B=x"], ['env name "A-B" is not valid']),
        (["--env", "A=1", "--env", "A=2"], ["--env A is given twice"]),
        (["--cwd", ""], ["cwd must be an absolute path"]),
        ([arg for n in range(101) for arg in ("--env", f"V{n}=x")], ["env has 101 entries, at most 100"]),
    ],
)
def test_bad_options_exit_2_and_write_nothing(
    cli: Cli, cli_target: str, args: list[str], words: list[str]
) -> None:
    assert_error(cli("enqueue", "-c", "true", *args), 2, *words)
    assert_wrote_nothing(cli_target)


def test_options_and_json_together_are_refused(cli: Cli, cli_target: str) -> None:
    assert_error(cli("enqueue", '{"command": "true"}', "--cwd", "/tmp"), 2, "not both", "--cwd")
    assert_error(cli("enqueue", '{"command": "true"}', "--env", "A=1"), 2, "not both", "--env")
    assert_wrote_nothing(cli_target)


# --- from JSON and files ------------------------------------------------------------------------


def test_enqueue_json_sets_cwd_and_env(cli: Cli) -> None:
    text = json.dumps({"command": "make", "cwd": "/srv/app", "env": ENV})
    data = ok(cli("enqueue", text, "--json")).json()
    assert (data["cwd"], data["env"]) == ("/srv/app", ENV)
    assert list(data["env"]) == list(ENV)  # the order given
    stored = shown(cli, str(data["id"]))
    assert (stored["cwd"], stored["env"]) == ("/srv/app", ENV)
    assert stored["history"] == []


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"cwd": "relative"}, ['cwd must be an absolute path (starting with /), got "relative"']),
        ({"cwd": 5}, ["cwd must be a string, got 5"]),
        ({"cwd": "/a\u0000b"}, ["cwd must not contain a NUL character"]),
        ({"env": ["A=1"]}, ["env must be an object of strings"]),
        ({"env": {"A": 1}}, ["env A must be a string, got 1"]),
        ({"env": {"A": None}}, ["env A must be a string, got null"]),
        ({"env": {"A": "x\u0000"}}, ["env A must not contain a NUL character"]),
        ({"env": {"9LIVES": "x"}}, ['env name "9LIVES" is not valid']),
        ({"env": {f"V{n}": "x" for n in range(101)}}, ["env has 101 entries"]),
    ],
)
def test_bad_json_fields_exit_2_and_write_nothing(
    cli: Cli, cli_target: str, fields: dict[str, object], words: list[str]
) -> None:
    assert_error(cli("enqueue", json.dumps({"command": "true", **fields})), 2, *words)
    assert_wrote_nothing(cli_target)


def test_enqueue_file_takes_cwd_and_env(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(
        json.dumps({"command": "a", "cwd": "/srv/a", "env": {"N": "1"}})
        + "\n"
        + json.dumps({"command": "b", "env": {}})
        + "\n"
        + json.dumps({"command": "c"})
        + "\n"
    )
    first, second, third = ok(cli("enqueue-file", str(path))).stdout.split()
    assert (shown(cli, first)["cwd"], shown(cli, first)["env"]) == ("/srv/a", {"N": "1"})
    assert (shown(cli, second)["cwd"], shown(cli, second)["env"]) == (None, {})
    assert (shown(cli, third)["cwd"], shown(cli, third)["env"]) == (None, None)
    as_json = ok(cli("enqueue-file", str(path), "--json")).json()
    assert [(job["cwd"], job["env"]) for job in as_json] == [("/srv/a", {"N": "1"}), (None, {}), (None, None)]


def test_enqueue_file_with_a_bad_env_is_all_or_nothing(cli: Cli, cli_target: str, tmp_path: Path) -> None:
    path = tmp_path / "jobs.json"
    path.write_text(
        json.dumps(
            [
                {"command": "a", "env": {"OK": "1"}},
                {"command": "b", "env": {"NOT OK": "1"}},
                {"command": "c", "cwd": "x"},
            ]
        )
    )
    line = assert_error(cli("enqueue-file", str(path)), 2, "2 bad records")
    assert 'item 1: env name "NOT OK" is not valid' in line
    assert "item 2: cwd must be an absolute path" in line
    assert_wrote_nothing(cli_target)


# --- through the API ----------------------------------------------------------------------------


async def test_queue_enqueue_takes_cwd_and_env(store_target: str) -> None:
    async with await Queue.open(store_target) as queue:
        job = await queue.enqueue(command="make", cwd="/srv/app", env=ENV)
        assert (job.cwd, job.env) == ("/srv/app", ENV)
        stored = await queue.get(job.id)
        assert (stored.cwd, stored.env) == ("/srv/app", ENV)
        (new,) = await queue.enqueue_many([NewJob(id="n1", command="make", env={"A": "1"})])
        assert (new.cwd, new.env) == (None, {"A": "1"})
        listed = {job.id: job for job in await queue.list_jobs()}
        assert (listed["n1"].env, listed[job.id].cwd) == ({"A": "1"}, "/srv/app")
        with pytest.raises(InvalidInput, match="cwd must be an absolute path"):
            await queue.enqueue(command="make", cwd="relative")
        with pytest.raises(InvalidInput, match="env B must be a string"):
            await queue.enqueue(command="make", env={"B": 2})
        assert len(await queue.list_jobs()) == 2


def test_sync_enqueue_takes_cwd_and_env(store_target: str) -> None:
    from queuectl.enqueue import enqueue

    job = enqueue(store_target, command="make", cwd="/srv", env={"A": "1"})
    assert (job.cwd, job.env) == ("/srv", {"A": "1"})


def test_enqueue_without_env_does_not_import_json(tmp_path: Path) -> None:
    """``queuectl enqueue -c CMD`` stays a fast process: no JSON parser unless a field needs one."""
    code = textwrap.dedent(
        f"""
        import sys
        from queuectl.cli import main
        try:
            main(["--db", {str(tmp_path / "q.db")!r}, "enqueue", "-c", "true", "--cwd", "/tmp"])
        except SystemExit as exit_:
            assert exit_.code == 0, exit_.code
        print("json" in sys.modules, file=sys.stderr)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "False"


# --- a worker runs the job where and with what it says ------------------------------------------


async def test_a_worker_runs_the_command_in_its_cwd_with_its_env(store_target: str, tmp_path: Path) -> None:
    here = tmp_path / "work dir"
    here.mkdir()
    command = 'pwd; printf "%s|%s|%s\\n" "$STAGE" "$SPACES" "$UTF8"; test -n "$PATH"'
    async with await Queue.open(store_target) as queue:
        job = await queue.enqueue(command=command, cwd=str(here), env=ENV, queue="env-q", max_retries=0)
        await queue.pool(count=1, queues=["env-q"], mode="burst").run()
        done = await queue.get(job.id)
    assert done.state is JobState.COMPLETED, (done.last_error, done.stderr)
    assert done.stdout.decode().splitlines() == [str(here), "prod|hello world|grüße ✓"]


async def test_a_jobs_env_never_hides_the_workers_variables(store_target: str) -> None:
    command = 'printf "%s|%s|%s" "$QUEUECTL_JOB_ID" "$QUEUECTL_CLAIM_TOKEN" "$OWN"'
    env = {"QUEUECTL_JOB_ID": "fake", "QUEUECTL_CLAIM_TOKEN": "fake", "OWN": "kept"}
    async with await Queue.open(store_target) as queue:
        job = await queue.enqueue(command=command, env=env, queue="hide-q", max_retries=0)
        await queue.pool(count=1, queues=["hide-q"], mode="burst").run()
        done = await queue.get(job.id)
    job_id, token, own = done.stdout.decode().split("|")
    assert (job_id, own) == (job.id, "kept")
    assert token not in ("", "fake")


async def test_a_cwd_missing_when_the_job_runs_is_a_failure(store_target: str, tmp_path: Path) -> None:
    async with await Queue.open(store_target) as queue:
        job = await queue.enqueue(command="true", cwd=str(tmp_path / "gone"), queue="gone-q", max_retries=0)
        await queue.pool(count=1, queues=["gone-q"], mode="burst").run()
        done = await queue.get(job.id)
    assert done.state is JobState.DEAD
    assert done.last_error is not None and done.last_error.startswith("could not start")
    assert [entry.outcome.value for entry in done.history] == ["could not start"]
