"""The runner's Version 2 hooks: live output, a stop asked for by the caller, ``cwd`` and ``env``."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from test_runner import DEADLINE, eventually, is_dead, read_pid

from queuectl.output import parse
from queuectl.worker.runner import run_command


async def test_on_output_hands_on_every_byte_with_its_offset() -> None:
    pieces: list[tuple[int, int, bytes]] = []
    command = "i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo out$i; echo err$i >&2; done"
    result = await run_command(
        command, timeout=DEADLINE, output_limit=100, on_output=lambda *piece: pieces.append(piece)
    )
    for stream, kept in ((1, result.stdout), (2, result.stderr)):
        mine = [(offset, data) for number, offset, data in pieces if number == stream]
        whole = b"".join(data for _, data in mine)
        assert [offset for offset, _ in mine] == [sum(len(d) for _, d in mine[:n]) for n in range(len(mine))]
        name = b"out" if stream == 1 else b"err"
        assert whole == b"".join(name + b"%d\n" % i for i in range(1, 301))
        # What is kept is that stream's head and tail, and how much lies between them.
        back = parse(kept)
        assert (back.head, back.tail, back.total) == (whole[:50], whole[-50:], len(whole))


async def test_a_stop_kills_the_group_and_names_the_reason(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    stop: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_command(
            f"trap '' TERM; sleep 1000 & echo $! > {pidfile}; wait", timeout=None, kill_grace=0.2, stop=stop
        )
    )
    grandchild = await read_pid(pidfile)
    asked = time.monotonic()
    stop.set_result("cancelled")
    result = await asyncio.wait_for(task, DEADLINE)
    assert time.monotonic() - asked >= 0.2  # TERM was ignored: KILL came after the grace
    assert (result.exit_code, result.error) == (None, "cancelled")
    assert result.pid is not None and is_dead(result.pid)
    await eventually(lambda: is_dead(grandchild), f"grandchild {grandchild} dead")


async def test_a_stop_after_the_end_changes_nothing() -> None:
    stop: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    result = await run_command("echo done", timeout=None, stop=stop)
    stop.set_result("cancelled")  # no callback is left to signal a pid that may be reused
    await asyncio.sleep(0)
    assert (result.exit_code, result.error, result.stdout) == (0, None, b"done\n")


async def test_a_timeout_before_a_stop_stays_a_timeout() -> None:
    stop: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    started = asyncio.Event()
    task = asyncio.create_task(
        run_command(
            "trap '' TERM; sleep 1000", timeout=0.2, kill_grace=1, stop=stop, on_start=lambda _: started.set()
        )
    )
    await asyncio.wait_for(started.wait(), DEADLINE)
    # The loop runs due timers in order: by the end of this sleep the timeout's has run.
    await asyncio.sleep(0.3)
    stop.set_result("cancelled")
    result = await asyncio.wait_for(task, DEADLINE)
    assert result.error == "timed out after 0.2s"


async def test_cwd_is_where_the_command_runs(tmp_path: Path) -> None:
    result = await run_command("pwd", timeout=DEADLINE, cwd=str(tmp_path))
    assert result.stdout == f"{tmp_path}\n".encode()


@pytest.mark.parametrize("kind", ["missing", "a file"])
async def test_a_cwd_that_is_no_directory_could_not_start(tmp_path: Path, kind: str) -> None:
    cwd = tmp_path / "nope"
    if kind == "a file":
        cwd.write_text("")
    result = await run_command("true", timeout=DEADLINE, cwd=str(cwd))
    reason = "No such file or directory" if kind == "missing" else "Not a directory"
    assert (result.exit_code, result.pid) == (None, None)
    assert result.error == f"could not start: cwd {cwd}: {reason}"


async def test_env_goes_over_the_base_environment() -> None:
    base = {**dict(os.environb), b"QUEUECTL_A": b"base", b"QUEUECTL_B": b"base"}
    result = await run_command(
        'echo "$QUEUECTL_A $QUEUECTL_B $QUEUECTL_C"',
        timeout=DEADLINE,
        env={"QUEUECTL_B": "job", "QUEUECTL_C": "caf\u00e9 = ok"},
        base_env=base,
    )
    assert result.stdout == "base job caf\u00e9 = ok\n".encode()


async def test_a_value_the_system_cannot_encode_could_not_start() -> None:
    result = await run_command("true", timeout=DEADLINE, env={"QUEUECTL_X": "\ud800"})
    assert result.error is not None and result.error.startswith("could not start: ")
