"""``cancel``, ``retry``, ``purge`` and ``completion``, on each backend.

Completed and dead jobs are made by running real commands with a burst pool (``helpers``); a
running job by a real worker process, its command blocked on a file the test never creates.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    DEADLINE,
    Cli,
    Workers,
    assert_error,
    block_on,
    job_ids,
    job_state,
    make_completed,
    make_dead,
    ok,
    pid_alive,
    queuectl_env,
    start_worker,
    wait_until,
)

#: The installed ``queuectl`` the completion scripts call back.
SCRIPT = Path(sys.executable).parent / "queuectl"


def state(target: str, job_id: str) -> str:
    return block_on(job_state(target, job_id))[0]


def pending(cli: Cli, job_id: str, *options: str) -> str:
    """A job that waits an hour (so no worker of another test takes it)."""
    return ok(cli("enqueue", "--id", job_id, "-c", "true", "--delay", "1h", *options)).stdout.strip()


# --- cancel -------------------------------------------------------------------------------


def test_cancel_pending_jobs_prints_their_ids(cli: Cli, cli_target: str) -> None:
    pending(cli, "one")
    pending(cli, "two")
    result = ok(cli("cancel", "one", "two"))
    assert result.stdout == "one\ntwo\n"
    assert (state(cli_target, "one"), state(cli_target, "two")) == ("cancelled", "cancelled")
    assert ok(cli("list", "--state", "cancelled", "--json")).json()[0]["last_error"] == "cancelled"


def test_cancel_of_a_final_job_exits_1_and_still_cancels_the_others(cli: Cli, cli_target: str) -> None:
    block_on(make_completed(cli_target, "done"))
    pending(cli, "waiting")
    result = cli("cancel", "done", "waiting")
    assert result.code == 1
    assert result.stdout == "waiting\n"
    (line,) = result.stderr.splitlines()
    assert line.startswith("queuectl: error: ") and "done" in line and "completed" in line
    assert state(cli_target, "waiting") == "cancelled"
    assert state(cli_target, "done") == "completed"


def test_cancel_of_an_unknown_id_cancels_nothing(cli: Cli, cli_target: str) -> None:
    pending(cli, "waiting")
    assert_error(cli("cancel", "waiting", "ghost-job"), 1, "no job with id 'ghost-job'")
    assert state(cli_target, "waiting") == "pending"


def test_cancel_takes_a_unique_prefix_and_prints_the_full_id(cli: Cli, cli_target: str) -> None:
    job_id = ok(cli("enqueue", "-c", "true", "--delay", "1h")).stdout.strip()
    assert ok(cli("cancel", job_id[:8])).stdout == f"{job_id}\n"
    pending(cli, "same-start-1")
    pending(cli, "same-start-2")
    line = assert_error(cli("cancel", "same-start"), 1, "ambiguous")
    assert "same-start-1" in line and "same-start-2" in line
    assert state(cli_target, "same-start-1") == "pending"


def test_cancel_json_prints_the_jobs(cli: Cli) -> None:
    pending(cli, "one")
    (job,) = ok(cli("cancel", "one", "--json")).json()
    assert job["id"] == "one" and job["state"] == "cancelled"


def test_cancel_of_a_running_job_kills_its_command(
    cli: Cli, cli_target: str, tmp_path: Path, workers: Workers
) -> None:
    ok(cli("config", "set", "poll_interval", "0.05"))
    pid_file = tmp_path / "pid"
    ok(cli("enqueue", "--id", "busy", "-c", f"echo $$ > {pid_file}; exec sleep 300"))
    workers.append(start_worker(cli_target, "--quiet"))
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", what="the command to start")
    pid = int(pid_file.read_text())
    assert ok(cli("cancel", "busy")).stdout == "busy\n"
    assert state(cli_target, "busy") == "cancelled"
    wait_until(lambda: not pid_alive(pid), what="the command to be killed")
    wait_until(
        lambda: (
            [entry["outcome"] for entry in ok(cli("show", "busy", "--json")).json()["history"]]
            == ["cancelled"]
        ),
        what="the cancelled attempt in the history",
    )
    assert state(cli_target, "busy") == "cancelled"
    assert cli("wait", "busy").code == 1
    assert workers[0].poll() is None  # the worker goes on


def test_bulk_cancel_by_queue_and_state_with_a_dry_run(cli: Cli, cli_target: str) -> None:
    pending(cli, "a1", "--queue", "a")
    pending(cli, "a2", "--queue", "a")
    pending(cli, "b1", "--queue", "b")
    block_on(make_completed(cli_target, "done"))
    dry = ok(cli("cancel", "--queue", "a", "--dry-run"))
    assert sorted(dry.stdout.split()) == ["a1", "a2"]
    assert "dry run: would cancel 2 jobs; nothing changed" in dry.stderr
    assert state(cli_target, "a1") == "pending"
    dry_json = ok(cli("cancel", "--queue", "a", "--dry-run", "--json")).json()
    assert sorted(job["id"] for job in dry_json) == ["a1", "a2"]
    assert {job["state"] for job in dry_json} == {"pending"}
    assert sorted(ok(cli("cancel", "--queue", "a")).stdout.split()) == ["a1", "a2"]
    assert [state(cli_target, job) for job in ("a1", "a2", "b1")] == ["cancelled", "cancelled", "pending"]
    assert ok(cli("cancel", "--state", "pending")).stdout.split() == ["b1"]
    assert state(cli_target, "done") == "completed"
    assert ok(cli("cancel", "--state", "pending")).out == b""  # nothing left: nothing printed


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "give the ids"),
        (["one", "--queue", "a"], "not both"),
        (["--state", "completed"], "--state"),
        (["--queue", " "], "queue name"),
    ],
)
def test_cancel_usage_errors_change_nothing(cli: Cli, cli_target: str, args: list[str], says: str) -> None:
    pending(cli, "one")
    assert_error(cli("cancel", *args), 2, says)
    assert state(cli_target, "one") == "pending"


# --- retry --------------------------------------------------------------------------------


def test_retry_puts_final_jobs_back_to_pending(cli: Cli, cli_target: str) -> None:
    block_on(make_completed(cli_target, "done"))
    block_on(make_dead(cli_target, "gone"))
    pending(cli, "dropped")
    ok(cli("cancel", "dropped"))
    assert ok(cli("retry", "done", "gone", "dropped")).stdout == "done\ngone\ndropped\n"
    for job_id in ("done", "gone", "dropped"):
        assert block_on(job_state(cli_target, job_id)) == ("pending", 0)
    assert len(ok(cli("show", "done", "--json")).json()["history"]) == 1  # kept


def test_retry_of_an_unfinished_job_exits_1_and_still_retries_the_others(cli: Cli, cli_target: str) -> None:
    block_on(make_dead(cli_target, "gone"))
    pending(cli, "waiting")
    result = cli("retry", "waiting", "gone")
    assert result.code == 1
    assert result.stdout == "gone\n"
    (line,) = result.stderr.splitlines()
    assert line.startswith("queuectl: error: ") and "waiting" in line and "pending" in line
    assert state(cli_target, "gone") == "pending"


def test_bulk_retry_of_dead_jobs_of_a_queue_with_a_dry_run(cli: Cli, cli_target: str) -> None:
    block_on(make_dead(cli_target, "d1", "d2"))  # queues q-d1 and q-d2
    block_on(make_completed(cli_target, "c1"))
    dry = ok(cli("retry", "--state", "dead", "--queue", "q-d1", "--dry-run"))
    assert dry.stdout == "d1\n"
    assert "would retry 1 job;" in dry.stderr
    assert state(cli_target, "d1") == "dead"
    assert ok(cli("retry", "--state", "dead", "--queue", "q-d1", "--json")).json()[0]["id"] == "d1"
    assert [state(cli_target, job) for job in ("d1", "d2", "c1")] == ["pending", "dead", "completed"]
    assert ok(cli("retry", "--state", "dead")).stdout == "d2\n"
    assert state(cli_target, "c1") == "completed"


def test_retry_refuses_an_unfinished_state_in_bulk(cli: Cli) -> None:
    assert_error(cli("retry", "--state", "pending"), 2, "--state")
    assert_error(cli("retry"), 2, "give the ids")


def test_retry_dry_run_by_id_changes_nothing(cli: Cli, cli_target: str) -> None:
    block_on(make_dead(cli_target, "gone"))
    pending(cli, "waiting")
    result = cli("retry", "gone", "waiting", "--dry-run")
    assert result.code == 1
    assert result.stdout == "gone\n"
    assert "waiting" in result.stderr
    assert state(cli_target, "gone") == "dead"


# --- purge --------------------------------------------------------------------------------


def test_purge_deletes_completed_and_cancelled_jobs_and_keeps_the_rest(cli: Cli, cli_target: str) -> None:
    block_on(make_completed(cli_target, "done"))
    block_on(make_dead(cli_target, "gone"))
    pending(cli, "dropped")
    ok(cli("cancel", "dropped"))
    pending(cli, "waiting")
    assert ok(cli("purge")).stdout == "deleted 2 jobs\n"
    assert sorted(block_on(job_ids(cli_target))) == ["gone", "waiting"]
    assert ok(cli("purge", "--state", "dead", "--json")).json() == {"deleted": 1}
    assert block_on(job_ids(cli_target)) == ["waiting"]
    assert ok(cli("purge", "--json")).json() == {"deleted": 0}


def test_purge_older_than_keeps_recent_jobs(cli: Cli, cli_target: str) -> None:
    block_on(make_completed(cli_target, "recent"))
    assert ok(cli("purge", "--older-than", "1h")).stdout == "deleted 0 jobs\n"
    assert ok(cli("purge", "--older-than", "0")).stdout == "deleted 1 job\n"


def test_purge_of_one_queue(cli: Cli, cli_target: str) -> None:
    block_on(make_completed(cli_target, "c1", "c2"))
    assert ok(cli("purge", "--queue", "q-c1", "--json")).json() == {"deleted": 1}
    assert block_on(job_ids(cli_target)) == ["c2"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--state", "pending"], "only final jobs"),
        (["--state", "processing"], "only final jobs"),
        (["--older-than", "soon"], "not a duration"),
        (["--state", "nonsense"], "--state"),
    ],
)
def test_purge_usage_errors(cli: Cli, cli_target: str, args: list[str], says: str) -> None:
    block_on(make_completed(cli_target, "done"))
    assert_error(cli("purge", *args), 2, says)
    assert state(cli_target, "done") == "completed"


# --- help -----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["cancel", "retry", "purge", "completion", "logs", "wait", "run"])
def test_every_new_command_has_help_with_examples(cli: Cli, command: str) -> None:
    text = ok(cli(command, "--help")).stdout
    assert "Examples:" in text
    assert f"queuectl {command}" in text.split("Examples:")[1]


# --- completion ---------------------------------------------------------------------------


def complete(script: str, target: str, *words: str) -> list[str]:
    """What bash completes for ``words`` (the last is the one being typed), with ``script`` loaded."""
    program = (
        f"{script}\n"
        'COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); _queuectl\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", program, "bash", "queuectl", *words],
        env=_shell_env(target),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


@pytest.mark.skipif(shutil.which("bash") is None or not SCRIPT.exists(), reason="needs bash")
def test_bash_completion_of_commands_options_and_job_ids(cli: Cli, cli_target: str) -> None:
    script = ok(cli("completion", "bash")).stdout
    assert "wait" in complete(script, cli_target, "")
    assert complete(script, cli_target, "ca") == ["cancel"]
    assert complete(script, cli_target, "dlq", "") == ["list", "retry"]
    assert complete(script, cli_target, "cancel", "--st") == ["--state"]
    assert complete(script, cli_target, "cancel", "--state", "") == ["pending", "processing", "failed"]
    assert complete(script, cli_target, "completion", "") == ["bash", "zsh", "fish"]
    pending(cli, "build-1")
    pending(cli, "build-2")
    pending(cli, "test-1")
    assert complete(script, cli_target, "show", "bu") == ["build-1", "build-2"]
    assert sorted(complete(script, cli_target, "logs", "-f", "")) == ["build-1", "build-2", "test-1"]
    assert complete(script, cli_target, "--db", cli_target, "cancel", "te") == ["test-1"]


def test_completion_lists_job_ids_by_prefix(cli: Cli) -> None:
    pending(cli, "build-1")
    pending(cli, "build-2")
    pending(cli, "test-1")
    assert ok(cli("completion", "--job-ids", "build")).stdout == "build-1\nbuild-2\n"
    assert sorted(ok(cli("completion", "--job-ids", "")).stdout.split()) == ["build-1", "build-2", "test-1"]
    assert ok(cli("completion", "--job-ids", "zzz")).out == b""


def test_completion_of_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    from helpers import invoke

    target = tmp_path / "none" / "queue.db"
    result = invoke("--db", str(target), "completion", "--job-ids", "")
    assert (result.code, result.out) == (0, b"")
    assert not target.exists()


def _shell_env(target: str) -> dict[str, str]:
    """The test's store, and the ``queuectl`` of this environment first on ``PATH``."""
    env = queuectl_env(target)
    env["PATH"] = f"{SCRIPT.parent}:{env['PATH']}"
    return env


#: zsh's completion builtins, stubbed: each prints what it would offer (zsh filters by prefix).
ZSH_STUBS = """
compdef() { }
compadd() { [[ "$1" == -- ]] && shift; print -r -- "$*"; }
_files() { print -r -- "<files>"; }
_command_names() { print -r -- "<commands>"; }
"""


@pytest.mark.skipif(shutil.which("zsh") is None or not SCRIPT.exists(), reason="needs zsh")
def test_zsh_completion(cli: Cli, cli_target: str) -> None:
    script = ok(cli("completion", "zsh")).stdout
    pending(cli, "build-1")
    pending(cli, "test-1")

    def complete_zsh(*words: str) -> str:
        program = f"{ZSH_STUBS}\n{script}\n" + 'words=(queuectl "$@"); CURRENT=$#words; _queuectl\n'
        done = subprocess.run(
            ["zsh", "-f", "-c", program, "zsh", *words],
            env=_shell_env(cli_target),
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert complete_zsh("dlq", "") == "list retry"
    assert complete_zsh("cancel", "--state", "") == "pending processing failed"
    assert complete_zsh("show", "bu") == "build-1"
    assert complete_zsh("--db", cli_target, "logs", "-f", "te") == "test-1"
    assert complete_zsh("enqueue-file", "") == "<files>"
    assert complete_zsh("run", "") == "<commands>"


@pytest.mark.skipif(shutil.which("fish") is None or not SCRIPT.exists(), reason="needs fish")
def test_fish_completion(cli: Cli, cli_target: str, tmp_path: Path) -> None:
    script = tmp_path / "queuectl.fish"
    script.write_text(ok(cli("completion", "fish")).stdout)
    pending(cli, "build-1")
    pending(cli, "build-2")
    pending(cli, "test-1")

    def complete_fish(line: str) -> list[str]:
        program = f"source {script}; complete -C'{line}'"
        done = subprocess.run(
            ["fish", "--no-config", "-c", program],
            env=_shell_env(cli_target),
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )
        assert done.returncode == 0, done.stderr
        return sorted(row.split("\t")[0] for row in done.stdout.splitlines())

    assert complete_fish("queuectl dl") == ["dlq"]
    assert complete_fish("queuectl dlq ") == ["list", "retry"]
    assert complete_fish("queuectl cancel --state ") == ["failed", "pending", "processing"]
    assert complete_fish("queuectl show bu") == ["build-1", "build-2"]
    assert complete_fish(f"queuectl --db {cli_target} wait te") == ["test-1"]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_parse(cli: Cli, shell: str, tmp_path: Path) -> None:
    script = ok(cli("completion", shell)).stdout
    assert "completion --job-ids" in script
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    path = tmp_path / f"queuectl.{shell}"
    path.write_text(script)
    checked = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True, timeout=DEADLINE)
    assert checked.returncode == 0, checked.stderr


def test_completion_needs_a_shell(cli: Cli) -> None:
    assert_error(cli("completion"), 2, "bash")
    assert cli("completion", "tcsh").code == 2
