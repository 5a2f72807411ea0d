"""The runner: one shell command, the head and tail of its output, and its process group killed as a whole."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC
from itertools import count
from pathlib import Path

import pytest

from queuectl.output import left_out_line
from queuectl.worker.runner import RunResult, kill_process_group, run_command, use_fast_child_watcher

DEADLINE = 10.0  # generous: the machine is shared, these bounds catch hangs, not slowness
_tokens = count()


async def eventually(condition: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` if it does not within ``deadline``."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"not within {deadline}s: {what}")
        await asyncio.sleep(0.01)


def is_dead(pid: int) -> bool:
    """Gone, or a zombie waiting for its parent (init) to reap it."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # PermissionError: the pid now belongs to someone else
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def live_processes_with(token: str) -> list[int]:
    """Pids of live processes whose command line contains ``token``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if token.encode() in cmdline and not is_dead(int(entry)):
            found.append(int(entry))
    return found


def unique_sleep() -> str:
    """A ``sleep`` argument no other process has, to find the job's processes by command line."""
    return f"1000.{os.getpid()}{next(_tokens):04d}s"  # the "s" ends it: no token is a prefix of another


def pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):  # not yet written, or half written
        return None


async def read_pid(path: Path) -> int:
    await eventually(lambda: pid_in(path) is not None, f"a pid in {path}")
    pid = pid_in(path)
    assert pid is not None
    return pid


async def test_exit_zero_succeeds() -> None:
    result = await run_command("true", timeout=None)
    assert result.exit_code == 0
    assert result.error is None
    assert result.succeeded
    assert isinstance(result.pid, int)
    assert result.started_at.tzinfo is UTC
    assert result.started_at <= result.finished_at


async def test_nonzero_exit_is_a_failure() -> None:
    result = await run_command("exit 3", timeout=None)
    assert (result.exit_code, result.error, result.succeeded) == (3, "exit code 3", False)


async def test_stdout_and_stderr_are_captured_separately() -> None:
    result = await run_command("echo out; echo err >&2", timeout=None)
    assert (result.stdout, result.stderr) == (b"out\n", b"err\n")


async def test_command_not_found_exits_127() -> None:
    result = await run_command("queuectl-no-such-command-xyz", timeout=None)
    assert (result.exit_code, result.error) == (127, "exit code 127")
    assert b"not found" in result.stderr


async def test_stdin_is_dev_null() -> None:
    result = await run_command("cat", timeout=DEADLINE)
    assert (result.exit_code, result.stdout) == (0, b"")


async def test_killed_by_a_signal_is_named() -> None:
    result = await run_command("kill -9 $$", timeout=None)
    assert (result.exit_code, result.error) == (None, "killed by signal 9 (SIGKILL)")


async def test_output_keeps_the_head_and_the_tail_and_memory_stays_flat() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = await run_command(
        "printf BEGIN; head -c 100000000 /dev/zero | tr '\\0' a; printf END;"
        "{ head -c 1000000 /dev/zero | tr '\\0' b; printf ERR; } >&2",
        timeout=60,
        output_limit=1000,
    )
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert result.exit_code == 0
    assert result.stdout == (
        b"BEGIN" + b"a" * 495 + b"\n[queuectl: 99999008 bytes left out]\n" + b"a" * 497 + b"END"
    )
    assert result.stderr == b"b" * 500 + b"\n[queuectl: 999003 bytes left out]\n" + b"b" * 497 + b"ERR"
    assert grown_kib < 50 * 1024


async def test_small_writes_keep_the_exact_head_and_tail() -> None:
    count_to_2000 = "i=0; while [ $i -lt 2000 ]; do i=$((i+1)); echo $i; done"
    result = await run_command(count_to_2000, timeout=None, output_limit=10)
    expected = "".join(f"{i}\n" for i in range(1, 2001)).encode()
    assert result.stdout == expected[:5] + left_out_line(len(expected) - 10) + expected[-5:]


async def test_output_within_the_limit_is_kept_whole() -> None:
    result = await run_command("head -c 1000 /dev/zero | tr '\\0' a", timeout=None, output_limit=1000)
    assert result.stdout == b"a" * 1000


async def test_output_limit_zero_keeps_nothing() -> None:
    result = await run_command("echo hello; echo oops >&2", timeout=None, output_limit=0)
    assert (result.exit_code, result.stdout, result.stderr) == (0, b"", b"")


async def test_timeout_kills_grandchildren(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    result = await run_command(f"sh -c 'sleep 1000 & echo $! > {pidfile}; wait'", timeout=0.5)
    assert (result.exit_code, result.error) == (None, "timed out after 0.5s")
    grandchild = await read_pid(pidfile)
    await eventually(lambda: is_dead(grandchild), f"grandchild {grandchild} dead")


async def test_sigterm_ignored_means_sigkill_after_grace(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    command = f"trap '' TERM; sleep 1000 & echo $! > {pidfile}; wait"
    result = await run_command(command, timeout=1, kill_grace=0.3)
    assert time.monotonic() - started >= 1.3  # it was not the SIGTERM that ended it
    assert (result.exit_code, result.error) == (None, "timed out after 1s")
    grandchild = await read_pid(pidfile)
    await eventually(lambda: is_dead(grandchild), f"grandchild {grandchild} dead")


async def test_background_grandchild_holding_stdout_does_not_hold_the_job(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    result = await run_command(f"sleep 1000 & echo $! > {pidfile}; echo hi", timeout=None, drain_grace=0.1)
    assert time.monotonic() - started < DEADLINE
    assert (result.exit_code, result.error, result.stdout) == (0, None, b"hi\n")
    grandchild = await read_pid(pidfile)
    await eventually(lambda: is_dead(grandchild), f"grandchild {grandchild} dead")


@pytest.mark.parametrize("cancels", [1, 3])
async def test_cancellation_kills_the_group_and_reraises(tmp_path: Path, cancels: int) -> None:
    pidfile = tmp_path / "pid"
    groups: list[tuple[int, int]] = []
    task = asyncio.create_task(
        run_command(
            f"trap '' TERM; sleep 1000 & echo $! > {pidfile}; wait",
            timeout=None,
            kill_grace=0.2,
            on_start=lambda pid: groups.append((pid, os.getpgid(pid))),
        )
    )
    grandchild = await read_pid(pidfile)
    await eventually(lambda: bool(groups), "on_start called")  # the shell may write before that
    cancelled_at = time.monotonic()
    for _ in range(cancels):  # a second cancel must not cut the cleanup short
        task.cancel()
        await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - cancelled_at >= 0.2  # SIGTERM was ignored: SIGKILL came after the grace
    [(shell, pgid)] = groups
    assert pgid == shell  # the shell leads its own group
    assert is_dead(shell)  # reaped before the cancellation propagated
    await eventually(lambda: is_dead(grandchild), f"grandchild {grandchild} dead")


@pytest.mark.parametrize("steps", range(8))
async def test_cancellation_at_any_point_of_the_spawn_leaves_nothing(steps: int) -> None:
    duration = unique_sleep()
    task = asyncio.create_task(run_command(f"sleep {duration} & wait", timeout=None, kill_grace=1))
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: not live_processes_with(duration), "no process of the job left")


async def test_env_adds_to_the_inherited_environment() -> None:
    result = await run_command(
        'echo "$QUEUECTL_TEST_VAR:$PATH"', timeout=None, env={"QUEUECTL_TEST_VAR": "x"}
    )
    assert result.stdout == f"x:{os.environ['PATH']}\n".encode()


async def test_exports_reach_the_command_as_given_over_env() -> None:
    tricky = 'it\'s a "quoted" $HOME `x` \\ line\nnext caf\u00e9 '
    result = await run_command(
        'printf "%s|%s|%s" "$QUEUECTL_T1" "$QUEUECTL_T2" "$QUEUECTL_T3"',
        timeout=None,
        env={"QUEUECTL_T2": "from env", "QUEUECTL_T3": "env only"},
        exports={"QUEUECTL_T1": tricky, "QUEUECTL_T2": ""},
    )
    assert result.stdout == f"{tricky}||env only".encode()


async def test_exports_leave_the_shells_messages_as_they_were() -> None:
    # The exports go on the command's first line: errors still name the command's own lines.
    command = "true\nno_such_command_queuectl_test"
    plain = await run_command(command, timeout=None)
    exported = await run_command(command, timeout=None, exports={"QUEUECTL_T": "x"})
    assert plain.stderr and exported.stderr == plain.stderr
    assert exported.exit_code == plain.exit_code == 127


async def test_a_command_too_long_to_carry_its_exports_gets_them_through_the_environment() -> None:
    # 128 KiB is the most Linux passes as one argument: this command just fits, its exports not.
    tail = '; printf %s "$QUEUECTL_T"'
    command = ": " + "x" * (128 * 1024 - 1 - 2 - len(tail)) + tail
    result = await run_command(command, timeout=None, exports={"QUEUECTL_T": "long"})
    assert (result.error, result.stdout) == (None, b"long")


async def test_on_start_gets_the_pid() -> None:
    pids: list[int] = []
    result = await run_command("true", timeout=None, on_start=pids.append)
    assert pids == [result.pid]


async def test_a_failing_on_start_still_kills_the_group() -> None:
    duration = unique_sleep()

    def explode(pid: int) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await run_command(f"sleep {duration} & wait", timeout=None, on_start=explode)
    await eventually(lambda: not live_processes_with(duration), "no process of the job left")


@pytest.mark.parametrize(
    ("command", "reason"),
    [("echo a\0b", "embedded null byte"), ("echo " + "x" * 3_000_000, "Argument list too long")],
    ids=["nul", "e2big"],
)
async def test_could_not_start_is_returned_not_raised(command: str, reason: str) -> None:
    result = await run_command(command, timeout=None)
    assert result == RunResult(
        exit_code=None,
        error=f"could not start: {reason}",
        stdout=b"",
        stderr=b"",
        started_at=result.started_at,
        finished_at=result.finished_at,
        pid=None,
    )
    assert not result.succeeded


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def zombie_children() -> list[int]:
    me = str(os.getpid())
    zombies = []
    for entry in os.listdir("/proc"):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == me and fields[0] == "Z":
            zombies.append(int(entry))
    return zombies


async def test_fds_threads_and_zombies_return_to_baseline() -> None:
    await run_command("true", timeout=None)  # let the loop and child watcher set up once
    fds, threads = fd_count(), threading.active_count()
    jobs = iter(range(200))

    async def worker() -> None:
        for i in jobs:
            result = await run_command(f"echo {i}; echo {i} >&2", timeout=DEADLINE)
            assert result.stdout == f"{i}\n".encode()

    await asyncio.gather(*(worker() for _ in range(4)))
    await eventually(lambda: fd_count() <= fds, "fd count back to baseline")
    await eventually(lambda: threading.active_count() <= threads, "threads back to baseline")
    await eventually(lambda: not zombie_children(), "no zombie children")


def test_kill_process_group_refuses_what_is_not_a_job() -> None:
    assert not kill_process_group(0)
    assert not kill_process_group(1)
    assert not kill_process_group(os.getpgrp())
    assert not kill_process_group(2**22 + 12345)  # above pid_max: no such group


async def test_kill_process_group_signals_a_live_group() -> None:
    groups: list[int] = []
    task = asyncio.create_task(run_command("sleep 1000", timeout=None, on_start=groups.append))
    await eventually(lambda: bool(groups), "started")
    assert kill_process_group(groups[0], signal.SIGKILL)
    result = await asyncio.wait_for(task, DEADLINE)
    assert result.error == "killed by signal 9 (SIGKILL)"


@pytest.fixture
def restore_child_watcher() -> Iterator[None]:
    """The child watcher is process-wide: put the previous one back for the other tests."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        previous = asyncio.get_child_watcher()
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_child_watcher(previous)


@pytest.mark.usefixtures("restore_child_watcher")
async def test_fast_child_watcher_installs_quietly_and_works() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        use_fast_child_watcher()
        use_fast_child_watcher()  # idempotent
        if sys.version_info < (3, 12) and hasattr(os, "pidfd_open"):
            assert isinstance(asyncio.get_child_watcher(), asyncio.PidfdChildWatcher)
    result = await run_command("echo fast", timeout=DEADLINE)
    assert result.stdout == b"fast\n"
