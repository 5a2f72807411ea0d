"""Shared plumbing of the benchmark: result rows, processes with bounded waits, stores, the machine.

Not a test module (pytest collects only ``test_*.py``); run ``tests/benchmarks/bench.py``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from queuectl.models import JobState, NewJob

#: Columns of the results table; the last one (result) is free text.
COLUMNS = (("figure", 50), ("queuectl", 16), ("reference", 16), ("ratio", 7), ("target", 18))
DASH = "-"


class BenchError(Exception):
    """A figure could not be measured; its rows print ``n/a (message)``."""


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Row:
    """One line of the table."""

    figure: str
    value: str
    reference: str = DASH
    ratio: float | None = None
    target: str = DASH
    ok: bool | None = None  # None: no target (info) or not measured (n/a)
    na: str | None = None  # why the figure was not measured

    @property
    def result(self) -> str:
        if self.na is not None:
            return f"n/a ({self.na})"
        if self.ok is None:
            return "info"
        return "pass" if self.ok else "FAIL"

    def cells(self) -> list[str]:
        ratio = DASH if self.ratio is None else f"{self.ratio:.2f}"
        return [self.figure, self.value, self.reference, ratio, self.target, self.result]


def describe(error: BaseException) -> str:
    """An error as the one-line reason of an ``n/a`` row."""
    if isinstance(error, BenchError):
        return _one_line(str(error))
    return _one_line(f"{type(error).__name__}: {error}")


def na_rows(figures: Sequence[tuple[str, str]], reason: str) -> list[Row]:
    """Rows for figures that could not be measured: ``(figure, target)`` pairs."""
    return [Row(figure=name, value="n/a", target=target, na=reason) for name, target in figures]


def format_table(rows: Sequence[Row]) -> str:
    header = [name for name, _ in COLUMNS] + ["result"]
    lines = [_line(header), _line(["-" * width for _, width in COLUMNS] + ["-" * 6])]
    lines.extend(_line(row.cells()) for row in rows)
    return "\n".join(lines)


def _line(cells: Sequence[str]) -> str:
    parts = [cell.ljust(width) for cell, (_, width) in zip(cells, COLUMNS, strict=False)]
    return "  ".join([*parts, cells[-1]]).rstrip()


def per_second(count: float, seconds: float) -> str:
    return f"{count / seconds:,.0f} jobs/s" if seconds > 0 else "inf jobs/s"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def median(values: Sequence[float]) -> float:
    if not values:
        raise BenchError("no samples")
    return float(statistics.median(values))


# --- processes ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Finished:
    """How a child process ended."""

    returncode: int
    wall: float  # seconds from just before the spawn to the reap
    peak_rss_kib: int  # the last VmHWM read from /proc while it ran (0 if never read)


_LIVE: set[int] = set()  # process groups to kill if the benchmark stops early


class Child:
    """A process in a session of its own, reaped by a thread of ours: exact exit time, bounded waits.

    Every wait has a deadline; on timeout the whole process group is killed. Peak RSS comes from
    polling ``VmHWM`` (it only grows): ``wait4``'s ``ru_maxrss`` would be useless here, because
    Linux carries the spawning process's own peak across ``exec`` into the child's figure.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log: Path | None = None,
        stdout: int | IO[Any] = subprocess.DEVNULL,
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log = log
        log_file = log.open("ab") if log is not None else None
        try:
            self.started = time.perf_counter()
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=log_file if log_file is not None else subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        finally:
            if log_file is not None:
                log_file.close()
        self.pid = self.process.pid
        _LIVE.add(self.pid)
        self._status: int | None = None
        self._ended = 0.0
        self._hwm = 0
        self._reaper = threading.Thread(target=self._reap, name=f"reap-{self.pid}", daemon=True)
        self._reaper.start()

    def _reap(self) -> None:
        _, status = os.waitpid(self.pid, 0)
        self._ended = time.perf_counter()
        self._status = status

    @property
    def running(self) -> bool:
        return self._reaper.is_alive()

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process so far (its threads, not its children)."""
        fields = read_text(f"/proc/{self.pid}/stat").rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def sample_hwm(self) -> None:
        try:
            for line in read_text(f"/proc/{self.pid}/status").splitlines():
                if line.startswith("VmHWM:"):
                    self._hwm = max(self._hwm, int(line.split()[1]))
        except (OSError, ValueError, IndexError):
            pass

    def wait(self, timeout: float, *, poll_memory: bool = False) -> Finished:
        """Wait for the exit; kill the group and raise ``BenchError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.running:
            if poll_memory:
                self.sample_hwm()
            if time.monotonic() > deadline:
                self.kill()
                raise BenchError(f"{self.what()} still ran after {timeout:.0f}s{self.log_tail()}")
            self._reaper.join(0.02)
        return self._finished()

    def stop(self, timeout: float = 15.0) -> Finished:
        """SIGTERM, then wait (SIGKILL after ``timeout``)."""
        if self.running:
            os.kill(self.pid, signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        kill_group(self.pid)
        self._reaper.join(10.0)

    def _finished(self) -> Finished:
        assert self._status is not None
        self.process.returncode = os.waitstatus_to_exitcode(self._status)
        _LIVE.discard(self.pid)
        return Finished(
            returncode=self.process.returncode,
            wall=self._ended - self.started,
            peak_rss_kib=self._hwm,
        )

    def what(self) -> str:
        return " ".join(self.argv[1:6]) + (" ..." if len(self.argv) > 6 else "")

    def log_tail(self) -> str:
        if self.log is None or not self.log.exists():
            return ""
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return f"; stderr: {lines[-1][:200]}" if lines else ""

    def check(self, finished: Finished) -> Finished:
        if finished.returncode != 0:
            raise BenchError(f"{self.what()} exited {finished.returncode}{self.log_tail()}")
        return finished


def kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    _LIVE.discard(pgid)


def kill_everything() -> None:
    """Kill what the benchmark started and still runs (after an error or Ctrl-C)."""
    for pgid in list(_LIVE):
        kill_group(pgid)


def run_timed(argv: Sequence[str], *, timeout: float, log: Path | None = None) -> Finished:
    """Run a process to its end; its wall time from spawn to reap."""
    child = Child(argv, log=log)
    return child.check(child.wait(timeout))


def queuectl_argv(target: str) -> list[str]:
    """The installed ``queuectl`` script beside this interpreter (what users run), with ``--db``."""
    script = Path(sys.executable).parent / "queuectl"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "queuectl"]
    return [*base, "--db", target]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, *, step: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


def read_text(path: str | Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


# --- stores ------------------------------------------------------------------------------------


def new_jobs(command: str, count: int) -> list[NewJob]:
    return [NewJob(id=str(uuid.uuid4()), command=command) for _ in range(count)]


def fill(target: str, jobs: Sequence[NewJob]) -> None:
    """Enqueue ``jobs`` before a measurement (not timed)."""
    if target.startswith("postgresql://"):
        asyncio.run(_fill_async(target, jobs))
    else:
        from queuectl.enqueue import enqueue_many

        for start in range(0, len(jobs), 50_000):
            enqueue_many(target, jobs[start : start + 50_000])


async def _fill_async(target: str, jobs: Sequence[NewJob]) -> None:
    from queuectl.queue import Queue

    async with await Queue.open(target) as queue:
        for start in range(0, len(jobs), 10_000):
            await queue.enqueue_many(list(jobs[start : start + 10_000]))


def counts(target: str) -> dict[JobState, int]:
    return asyncio.run(_counts_async(target))


async def _counts_async(target: str) -> dict[JobState, int]:
    from queuectl.queue import Queue

    async with await Queue.open(target) as queue:
        return await queue.store.count_jobs()


def expect_completed(target: str, count: int) -> None:
    found = counts(target)
    if found[JobState.COMPLETED] != count:
        summary = ", ".join(f"{state.value} {number}" for state, number in found.items() if number)
        raise BenchError(f"expected {count} completed jobs, found {summary}")


class Postgres:
    """The optional PostgreSQL server: a fresh schema per store, dropped afterwards."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.version = ""
        self.unavailable: str | None = None
        if url is None:
            self.unavailable = "no server: pass --postgres-url or set QUEUECTL_TEST_POSTGRES_URL"
            return
        try:
            self.version = asyncio.run(self._admin("SHOW server_version"))
            with self.schema() as target:
                counts(target)  # queuectl's store opens and migrates there
        except Exception as error:
            self.unavailable = _one_line(f"{type(error).__name__}: {error}")

    @contextmanager
    def schema(self) -> Iterator[str]:
        assert self.url is not None
        name = f"qbench_{uuid.uuid4().hex[:12]}"
        asyncio.run(self._admin(f'CREATE SCHEMA "{name}"'))
        try:
            separator = "&" if "?" in self.url else "?"
            yield f"{self.url}{separator}search_path={name}"
        finally:
            asyncio.run(self._admin(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))

    async def _admin(self, statement: str) -> str:
        import asyncpg

        assert self.url is not None
        connection = await asyncio.wait_for(asyncpg.connect(self.url), 10)
        try:
            if statement.startswith("SHOW"):
                return str(await connection.fetchval(statement))
            await connection.execute(statement)
            return ""
        finally:
            await connection.close()


def _one_line(text: str) -> str:
    return " ".join(text.split())[:160]


@dataclass
class Context:
    """What every figure gets."""

    tmp: Path
    quick: bool
    rounds: int
    postgres: Postgres
    seed: int
    notes: list[str] = field(default_factory=list)
    _counter: int = 0

    def path(self, name: str) -> Path:
        self._counter += 1
        return self.tmp / f"{self._counter:03d}-{name}"

    def sqlite_file(self, name: str) -> Path:
        """A path for a new SQLite store, alone in its folder (workers watch the folder)."""
        folder = self.path(name)
        folder.mkdir()
        return folder / "queue.db"

    def sqlite_target(self, name: str) -> str:
        """A new SQLite store with queuectl's schema."""
        from queuectl.storage.sqlite import schema as sqlite_schema

        path = self.sqlite_file(name)
        sqlite_schema.prepare(path)
        return str(path)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


# --- the machine -------------------------------------------------------------------------------


def machine_lines(ctx: Context, argv: Sequence[str]) -> list[str]:
    import queuectl

    try:
        version = importlib.metadata.version("queuectl")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    cpu = "unknown"
    try:
        for line in read_text("/proc/cpuinfo").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    postgres = ctx.postgres.version or f"n/a ({ctx.postgres.unavailable})"
    return [
        f"command:  {' '.join([sys.executable, *argv])}",
        f"machine:  {usable} usable CPUs (nproc), {cpu}",
        f"system:   Linux {platform.release()}, load average at start {load}",
        f"python:   {platform.python_version()} ({sys.executable})",
        f"sqlite:   {sqlite3.sqlite_version}; postgres: {postgres}",
        f"queuectl: {version} from {Path(queuectl.__file__).parent}",
        f"temp dir: {ctx.tmp} ({filesystem(ctx.tmp)})",
        f"sizes:    {'quick (development sizes: not comparable with full runs)' if ctx.quick else 'full'}"
        f", drain rounds {ctx.rounds} (best of), seed {ctx.seed}",
    ]


def filesystem(path: Path) -> str:
    """The file system type holding ``path`` (fsync costs differ a lot between them)."""
    best, kind = "", "unknown"
    try:
        for line in read_text("/proc/mounts").splitlines():
            parts = line.split()
            mount = parts[1]
            if str(path).startswith(mount) and len(mount) > len(best):
                best, kind = mount, parts[2]
    except (OSError, IndexError):
        pass
    return kind
