"""Run one shell command as the leader of its own process group, and kill the group as a whole.

The runner knows processes, not rows: of queuectl it imports only ``capture`` and, through it,
``output``, the form kept output takes. It is the hot path of a worker, so it adds little to
asyncio's own subprocess machinery: one protocol object (``capture.Capture``) keeps the head and
the tail of each stream as data arrives (no reader tasks, no StreamReader), and the timeout, a
stop asked for by the caller and the SIGTERM-then-SIGKILL escalation are plain loop timers and
callbacks. What the caller does not ask for costs nothing: without ``on_output`` new data is not
handed on, without ``stop`` no callback is registered.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shlex
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from queuectl.worker.capture import Capture, resolve

__all__ = ("RunResult", "kill_process_group", "run_command", "use_fast_child_watcher")


@dataclass(frozen=True, kw_only=True, slots=True)
class RunResult:
    """How one attempt ended."""

    exit_code: int | None
    """The shell's exit code; None if it never exited by itself (timeout, not started, signal)."""
    error: str | None
    """None on success, else why it failed, as the job's ``last_error``: ``exit code 3``, ``timed out``..."""
    stdout: bytes
    """What is kept of stdout within ``output_limit``: its head and its tail, and between them a line
    saying how many bytes were left out if any were (``queuectl.output.join``)."""
    stderr: bytes
    started_at: datetime
    finished_at: datetime
    pid: int | None
    """The shell's pid, which is also its process group id; None if it could not start."""

    @property
    def succeeded(self) -> bool:
        return self.error is None


async def run_command(
    command: str,
    *,
    timeout: float | None,
    output_limit: int = 65536,
    kill_grace: float = 2.0,
    drain_grace: float = 0.25,
    on_start: Callable[[int], None] | None = None,
    on_output: Callable[[int, int, bytes], None] | None = None,
    stop: asyncio.Future[str] | None = None,
    env: Mapping[str, str] | None = None,
    base_env: Mapping[bytes, bytes] | None = None,
    exports: Mapping[str, str] | None = None,
    cwd: str | None = None,
    clock: Callable[[], float] | None = None,
) -> RunResult:
    """Run ``command`` with ``/bin/sh -c`` in a new session; never leave any of its processes behind.

    On timeout the group gets SIGTERM, then SIGKILL after ``kill_grace``. Once the shell has exited,
    the pipes get ``drain_grace`` to reach EOF (a background grandchild may hold them), then what is
    left of the group is killed. If the caller is cancelled, the group is stopped the same way
    (shielded) before the cancellation propagates. Spawn failures (a missing ``cwd`` too) are
    returned, not raised, as ``could not start: ...``.

    Of each stream the result keeps the first and the last bytes within ``output_limit``
    (``queuectl.output``). ``on_start(pid)`` is called once the shell runs; ``pid`` is also its
    process group id. ``on_output(stream, offset, data)`` is handed every piece of output as it
    arrives: ``stream`` 1 or 2, ``offset`` where ``data`` starts in that stream. When ``stop`` gets
    a result (a reason, such as ``"cancelled"``) while the shell runs, the group is stopped as on
    timeout and the result's ``error`` is that reason.

    ``env`` adds variables to the inherited environment (unlike ``subprocess``, it does not replace
    it): to ``base_env`` when given (an encoded snapshot, e.g. ``dict(os.environb)``: encoding the
    whole environment again for every job costs more than the rest of the runner). ``exports``
    are variables the shell itself exports before it runs the command, over ``env``: for a few
    short values, far cheaper than ``env``, which has the whole environment copied and encoded
    for every command (a command of nearly 128 KiB takes them through ``env``). ``cwd`` is the
    directory the command runs in (default: ours). ``clock`` gives the wall-clock time (epoch
    seconds) of ``started_at`` and ``finished_at``; by default the system's, read directly.
    """
    if output_limit < 0:
        raise ValueError(f"output_limit must be >= 0, not {output_limit}")
    loop = asyncio.get_running_loop()
    started_at = _now(clock)
    try:
        script = command
        if exports:
            script = _exporting(command, exports)
            if not _fits(script):
                script, env = command, {**(env or {}), **exports}
        environ = None if env is None else _environment(env, base_env)
        spawn = loop.create_task(
            loop.subprocess_shell(
                lambda: Capture(loop, output_limit, on_output),
                script,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env=environ,
                cwd=cwd,
            )
        )
        # Shielded: a cancel here must not leave a shell whose pid we never learnt.
        transport, capture = await asyncio.shield(spawn)
    except asyncio.CancelledError:
        await _finish_shielded(_abandon(spawn, kill_grace))
        raise
    except (OSError, ValueError) as exc:  # E2BIG, EMFILE, ENOMEM, no cwd; ValueError: a NUL
        return RunResult(
            exit_code=None,
            error=f"could not start: {_spawn_failure(exc, cwd)}",
            stdout=b"",
            stderr=b"",
            started_at=started_at,
            finished_at=_now(clock),
            pid=None,
        )
    pid: int = transport.get_pid()
    group = _Group(loop, pid, kill_grace)
    timer = None if timeout is None else loop.call_later(timeout, _on_timeout, capture, group)
    stopper = None
    if stop is not None:
        stopper = functools.partial(_on_stop, capture, group)
        stop.add_done_callback(stopper)
    try:
        if on_start is not None:
            on_start(pid)
        await _wait(capture, group, drain_grace)
    except BaseException:
        await _finish_shielded(_stop(capture, group))
        raise
    finally:
        if timer is not None:
            timer.cancel()
        if stop is not None and stopper is not None:
            stop.remove_done_callback(stopper)  # a late stop must never signal a reused pid
        group.kill()  # what the shell left behind: nothing outlives the attempt
        transport.close()  # closes pipes still held open by now-dead grandchildren
    return _result(transport.get_returncode(), capture, group, timeout, started_at, _now(clock), pid)


_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()

#: The longest single argument Linux passes to a program (``MAX_ARG_STRLEN``, 128 KiB with its NUL).
_MAX_ARGUMENT = 128 * 1024 - 1


def _exporting(command: str, exports: Mapping[str, str]) -> str:
    """``command`` after the shell has exported ``exports``, on the same line: the shell's
    messages still give the command's own line numbers."""
    assignments = " ".join(f"{name}={shlex.quote(value)}" for name, value in exports.items())
    return f"export {assignments}; {command}"


def _fits(script: str) -> bool:
    """Whether ``script`` is short enough to be one argument (measured in bytes only if needed)."""
    return len(script) * 4 <= _MAX_ARGUMENT or len(script.encode(_FS_ENCODING, _FS_ERRORS)) <= _MAX_ARGUMENT


def _environment(env: Mapping[str, str], base_env: Mapping[bytes, bytes] | None) -> dict[bytes, bytes]:
    """``env`` over the inherited environment, encoded as the system encodes it (``ValueError``
    for what cannot be encoded)."""
    # str.encode as os.fsencode does it, without its Python-level call per key and value.
    extra = {
        key.encode(_FS_ENCODING, _FS_ERRORS): value.encode(_FS_ENCODING, _FS_ERRORS)
        for key, value in env.items()
    }
    return {**(os.environb if base_env is None else base_env), **extra}


def _spawn_failure(exc: OSError | ValueError, cwd: str | None) -> str:
    """Why the shell could not start, in words: ``cwd /x: No such file or directory``."""
    if not isinstance(exc, OSError) or not exc.strerror:
        return str(exc)
    if cwd is not None and exc.filename == cwd:
        return f"cwd {cwd}: {exc.strerror}"
    return exc.strerror


def kill_process_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Send ``sig`` to process group ``pgid``; True if any process was signalled.

    Refuses (returns False) for pgid <= 1 and for our own group: a stale pid from an old row must
    never turn into ``kill(0)`` or a signal to the worker itself.
    """
    if pgid <= 1 or pgid == os.getpgrp():
        return False
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def use_fast_child_watcher() -> None:
    """Reap children through pidfds instead of a thread per child (Python 3.11 on Linux).

    Python 3.12+ already does this by default. The watcher is process-wide state and follows the
    main thread's event loop, so it is installed only from the main thread.
    """
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        current = asyncio.get_child_watcher()
        if isinstance(current, asyncio.PidfdChildWatcher) and current.is_active():
            return
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(loop)
        asyncio.set_child_watcher(watcher)


class _Group:
    """The job's process group: SIGTERM first, SIGKILL ``kill_grace`` later."""

    __slots__ = ("_kill_timer", "_loop", "kill_grace", "pid", "terminated")

    def __init__(self, loop: asyncio.AbstractEventLoop, pid: int, kill_grace: float) -> None:
        self._loop = loop
        self.pid = pid
        self.kill_grace = kill_grace
        self.terminated = False
        self._kill_timer: asyncio.TimerHandle | None = None

    def terminate(self) -> None:
        if self.terminated:
            return
        self.terminated = True
        kill_process_group(self.pid, signal.SIGTERM)
        self._kill_timer = self._loop.call_later(self.kill_grace, kill_process_group, self.pid)

    def kill(self) -> None:
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        kill_process_group(self.pid, signal.SIGKILL)


def _on_timeout(capture: Capture, group: _Group) -> None:
    if not capture.has_exited:  # an exit already seen is not a timeout, however late we learn of it
        group.terminate()


def _on_stop(capture: Capture, group: _Group, asked: asyncio.Future[str]) -> None:
    """The caller asked for the group to stop: as on timeout, unless it ended or timed out first."""
    if asked.cancelled() or capture.has_exited or group.terminated:
        return
    capture.stopped_for = asked.result()
    group.terminate()


async def _wait(capture: Capture, group: _Group, drain_grace: float) -> None:
    """Wait for the shell, then briefly for EOF on its pipes."""
    await capture.exited
    if group.terminated:
        group.kill()  # timed out: the survivors need no grace to flush output
    if not capture.eof.done():
        await _wait_at_most(capture.eof, drain_grace)


async def _stop(capture: Capture, group: _Group) -> None:
    """Stop a job whose caller gave up on it: terminate, then reap the shell."""
    if not capture.has_exited:
        group.terminate()
        await capture.exit_waiter()


_Spawn = asyncio.Task[tuple[asyncio.SubprocessTransport, Capture]]


async def _abandon(spawn: _Spawn, kill_grace: float) -> None:
    """Let a spawn whose caller was cancelled finish, then stop what it started."""
    try:
        transport, capture = await spawn
    except Exception:
        return  # it never started: nothing to stop
    group = _Group(asyncio.get_running_loop(), transport.get_pid(), kill_grace)
    try:
        await _stop(capture, group)
    finally:
        group.kill()
        transport.close()


async def _wait_at_most(future: asyncio.Future[None], seconds: float) -> None:
    """Like ``wait_for`` but without a task: the future is resolved early by a timer if need be."""
    timer = asyncio.get_running_loop().call_later(seconds, resolve, future)
    try:
        await future
    finally:
        timer.cancel()


async def _finish_shielded(cleanup: Awaitable[None]) -> None:
    """Run ``cleanup`` to its end even if we are cancelled again meanwhile (the caller re-raises)."""
    task = asyncio.ensure_future(cleanup)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise


def _result(
    returncode: int | None,
    capture: Capture,
    group: _Group,
    timeout: float | None,
    started_at: datetime,
    finished_at: datetime,
    pid: int,
) -> RunResult:
    exit_code: int | None = None
    if capture.stopped_for is not None:
        error: str | None = capture.stopped_for
    elif group.terminated:
        error = f"timed out after {_seconds(timeout)}s"
    elif returncode is None or returncode < 0:
        error = f"killed by signal {_signal_name(-(returncode or 0))}"
    else:
        exit_code = returncode
        error = None if returncode == 0 else f"exit code {returncode}"
    return RunResult(
        exit_code=exit_code,
        error=error,
        stdout=capture.kept(1),
        stderr=capture.kept(2),
        started_at=started_at,
        finished_at=finished_at,
        pid=pid,
    )


def _now(clock: Callable[[], float] | None) -> datetime:
    return datetime.now(UTC) if clock is None else datetime.fromtimestamp(clock(), UTC)


def _seconds(value: float | None) -> str:
    """5 -> '5', 0.5 -> '0.5': no useless '.0' in messages."""
    number = float(value or 0)
    return str(int(number)) if number.is_integer() else repr(number)


def _signal_name(number: int) -> str:
    try:
        return f"{number} ({signal.Signals(number).name})"
    except ValueError:
        return str(number)
