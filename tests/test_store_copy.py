"""``queuectl store copy SOURCE TARGET``: SQLite to PostgreSQL and back, all or nothing.

Real SQLite files and the real PostgreSQL server. A copy is checked by what users see: every
job's ``show --json``, each attempt's ``logs``, ``list``, ``queue list``, ``schedule list`` and
``config show``, read from the source and from the target, must be the same; then a worker on
the target runs what was pending, and dependencies still cancel down their chain.
"""

from __future__ import annotations

import hashlib
import os
import pty
import random
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    DEADLINE,
    Workers,
    assert_error,
    block_on,
    invoke,
    is_postgres,
    ok,
    queuectl_env,
    run_queuectl,
    start_worker,
    wait_until,
)

from queuectl import Queue
from queuectl.copying.tables import TABLES

pg = pytest.mark.postgres

#: Jobs of the all-or-nothing test: enough that a kill lands while the jobs are written.
KILLED_JOBS = 30_000


# --- a store with a bit of everything -------------------------------------------------------

ROLES = ("done", "hist", "cancelled", "later", "child", "grandchild", "due", "held")


async def populate(target: str) -> None:
    """Jobs in every state, with output and a history of several attempts, dependencies, a
    unique key, settings, paused and limited queues, schedules (one paused)."""
    async with await Queue.open(target) as queue:
        await queue.set_setting("default_timeout", "10m")
        await queue.set_setting("backoff_base", "3")
        await queue.enqueue(
            id="done", command="printf 'out-1\\n'; printf 'err-1\\n' >&2", queue="work", max_retries=0
        )
        await queue.enqueue(
            id="hist", command="date +%s%N; date +%N >&2; exit 3", queue="work", max_retries=0
        )
        for number in range(3):  # three attempts, each with output of its own
            await queue.pool(count=2, queues=["work"], mode="burst").run()
            if number < 2:
                await queue.retry("hist")
        await queue.enqueue(id="cancelled", command="true", queue="work")
        await queue.cancel("cancelled")
        await queue.enqueue(
            id="later",
            command="echo later",
            queue="io",
            priority=5,
            timeout=12.5,
            delay=86400,
            cwd="/tmp",
            env={"GREETING": "héllo", "N": "1"},
            unique_key="k-later",
            no_retry_exit_codes=[2, 3],
        )
        await queue.enqueue(id="child", command="echo child", queue="io", after=["later"])
        await queue.enqueue(id="grandchild", command="echo grandchild", queue="io", after=["child"])
        await queue.enqueue(id="due", command="echo ran-on-target", queue="fresh")
        # A job whose worker is gone: processing, its lease an hour long.
        await queue.enqueue(id="held", command="true", queue="gone")
        await queue.store.register_worker(worker_id="w-gone", host="elsewhere", pid=1)
        claimed = await queue.store.claim(worker_id="w-gone", queues=["gone"], limit=1, lease=3600)
        assert [claim.job.id for claim in claimed] == ["held"]
        # What it printed before its worker was lost, as followers read it, and its progress.
        chunks = [(1, 0, b"half-way\n"), (2, 0, b"warning\n")]
        assert await queue.store.append_output(claimed[0], chunks, progress="50%", keep=1 << 20, lease=3600)
        await queue.store.unregister_worker("w-gone")
        await queue.pause_queue("paused-q")
        await queue.limit_queue("work", concurrency=2, rate="5/m")
        await queue.add_schedule("nightly", cron="30 2 * * *", tz="Europe/Berlin", command="echo nightly")
        await queue.add_schedule("poll", every="5m", no_overlap=True, command="echo poll", queue="io")
        await queue.pause_schedule("poll")
        states = {job.id: job.state.value for job in await queue.list_jobs()}
    assert states == {
        "done": "completed",
        "hist": "dead",
        "cancelled": "cancelled",
        "later": "pending",
        "child": "pending",
        "grandchild": "pending",
        "due": "pending",
        "held": "processing",
    }


def cli_json(target: str, *args: str) -> Any:
    return ok(invoke("--db", target, *args, "--json")).json()


def seen(target: str) -> dict[str, Any]:
    """Everything a user can see of the store, through the command line."""
    shown = {job_id: cli_json(target, "show", job_id) for job_id in ROLES}
    logs = {}
    for number in range(1, len(shown["hist"]["history"]) + 1):
        result = ok(invoke("--db", target, "logs", "hist", "--attempt", str(number)))
        logs[number] = (result.out, result.err)
    return {
        "list": cli_json(target, "list"),
        "show": shown,
        "logs": logs,
        "latest logs": ok(invoke("--db", target, "logs", "done")).out,
        "queues": cli_json(target, "queue", "list"),
        "schedules": cli_json(target, "schedule", "list"),
        "config": cli_json(target, "config", "show"),
        "status": cli_json(target, "status"),
        **block_on(seen_through_the_api(target)),
    }


async def seen_through_the_api(target: str) -> dict[str, Any]:
    """What followers and the dashboard read: live output, and attempts ended per minute."""
    async with await Queue.open(target) as queue:
        live = await queue.store.live_output("held", after=0)
        minutes = await queue.finished_per_minute(60)
    return {
        "live output": (
            live.entries,
            [(chunk.seq, chunk.stream, chunk.offset, chunk.data) for chunk in live.chunks],
        ),
        "finished per minute": [minute.to_dict() for minute in minutes if minute.completed or minute.dead],
    }


def copy(source: str, target: str, *args: str) -> dict[str, int]:
    counts: dict[str, int] = ok(invoke("store", "copy", source, target, "--json", *args)).json()
    return counts


def file_hash(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- round trips ------------------------------------------------------------------------------


@pg
def test_round_trip_sqlite_postgres_sqlite(tmp_path: Path, postgres_target: str) -> None:
    source = str(tmp_path / "source.db")
    back = str(tmp_path / "back.db")
    block_on(populate(source))
    before = seen(source)
    source_hash = file_hash(source)
    assert len(before["show"]["hist"]["history"]) == 3
    assert len({out for out, _ in before["logs"].values()}) == 3  # each attempt its own output

    counts = copy(source, postgres_target)
    assert counts["jobs"] == len(ROLES)
    assert counts["outputs"] == 2  # hist's first two attempts (the latest is on the job row)
    assert counts["dependencies"] == 2
    assert counts["schedules"] == 2
    assert counts["queues"] == 2
    assert counts["settings"] == 2
    assert counts["live_output"] == 2
    assert counts["finished_counts"] >= 2  # completed and dead, in one minute or two
    assert file_hash(source) == source_hash
    assert seen(postgres_target) == before

    assert copy(postgres_target, back) == counts
    assert seen(back) == before
    assert file_hash(source) == source_hash

    for target in (postgres_target, back):
        works_on(target)


def works_on(target: str) -> None:
    """The copied store goes on: a worker runs the due job, new jobs come after the old ones,
    and a cancel still goes down a chain of dependencies."""
    worker = run_queuectl(target, "worker", "start", "--burst", "--queue", "fresh", "--quiet")
    assert worker.returncode == 0, worker.stderr
    assert cli_json(target, "show", "due")["state"] == "completed"
    assert ok(invoke("--db", target, "logs", "due")).out == b"ran-on-target\n"
    ok(invoke("--db", target, "enqueue", "--id", "new", "-c", "true"))
    listed = [job["id"] for job in cli_json(target, "list")]
    assert listed[0] == "new"
    ok(invoke("--db", target, "cancel", "later"))
    states = {job_id: cli_json(target, "show", job_id)["state"] for job_id in ("child", "grandchild")}
    assert states == {"child": "cancelled", "grandchild": "cancelled"}


@pg
def test_round_trip_postgres_sqlite_postgres(tmp_path: Path, postgres_target: str) -> None:
    source = postgres_target
    middle = str(tmp_path / "middle.db")
    block_on(populate(source))
    before = seen(source)
    rows = block_on(dump(source))

    counts = copy(source, middle)
    assert counts["jobs"] == len(ROLES)
    assert seen(middle) == before
    assert block_on(dump(source)) == rows  # the source is only read

    back = block_on(fresh_schema(source, "back"))
    try:
        assert copy(middle, back) == counts
        assert seen(back) == before
        works_on(back)
    finally:
        block_on(drop_schema(back))


def test_sqlite_to_sqlite_human_output(tmp_path: Path) -> None:
    source = str(tmp_path / "source.db")
    target = str(tmp_path / "target.db")
    block_on(populate(source))
    # A target without jobs: its settings, queue settings and schedules are replaced.
    ok(invoke("--db", target, "config", "set", "max_retries", "9"))
    ok(invoke("--db", target, "queue", "pause", "other"))
    ok(invoke("--db", target, "schedule", "add", "other", "--every", "1h", "-c", "true"))
    result = ok(invoke("store", "copy", source, target))
    lines = result.stdout.splitlines()
    assert re.fullmatch(r" *8  jobs", lines[0]), lines
    assert lines[-1].startswith("copied in ")
    assert result.err == b""  # no progress bar off a terminal
    assert seen(target) == seen(source)


# --- refusals -------------------------------------------------------------------------------


@pg
@pytest.mark.parametrize("direction", ["sqlite->postgres", "postgres->sqlite"])
def test_refused_while_the_source_has_a_live_worker(
    direction: str, tmp_path: Path, postgres_target: str, workers: Workers
) -> None:
    sqlite_file = str(tmp_path / "store" / "queue.db")
    (tmp_path / "store").mkdir()
    source, target = (sqlite_file, postgres_target)
    if direction == "postgres->sqlite":
        source, target = target, source
    ok(invoke("--db", source, "enqueue", "--id", "one", "-c", "true", "--delay", "1h"))
    workers.append(start_worker(source))
    wait_until(lambda: cli_json(source, "worker", "list") != [], what="the worker to register")
    jobs_before = cli_json(source, "show", "one")

    assert_error(invoke("store", "copy", source, target), 1, "live worker")
    assert cli_json(source, "show", "one") == jobs_before
    if is_postgres(target):
        assert block_on(table_count(target)) == 0  # not even migrated
    else:
        assert list(Path(target).parent.iterdir()) == []


@pg
def test_refused_when_the_target_holds_a_job(tmp_path: Path, postgres_target: str) -> None:
    source = str(tmp_path / "source.db")
    ok(invoke("--db", source, "enqueue", "--id", "one", "-c", "true"))
    ok(invoke("--db", postgres_target, "enqueue", "--id", "two", "-c", "true"))
    ok(invoke("--db", postgres_target, "config", "set", "max_retries", "7"))
    source_hash, rows = file_hash(source), block_on(dump(postgres_target))

    assert_error(invoke("store", "copy", source, postgres_target), 1, "target holds jobs")
    assert block_on(dump(postgres_target)) == rows
    assert file_hash(source) == source_hash

    # And the other way: a SQLite target with a job is left as it was.
    assert_error(invoke("store", "copy", postgres_target, source), 1, "target holds jobs")
    assert file_hash(source) == source_hash
    assert block_on(dump(postgres_target)) == rows


@pg
def test_refused_for_one_store_given_twice(tmp_path: Path, postgres_target: str) -> None:
    source = str(tmp_path / "source.db")
    ok(invoke("--db", source, "config", "set", "max_retries", "7"))  # a store without jobs
    source_hash = file_hash(source)
    link = tmp_path / "link.db"
    link.symlink_to(source)
    for target in (source, str(link), f"sqlite://{source}"):
        assert_error(invoke("store", "copy", source, target), 2, "the same store")
    assert file_hash(source) == source_hash

    ok(invoke("--db", postgres_target, "config", "set", "max_retries", "7"))
    rows = block_on(dump(postgres_target))
    assert_error(invoke("store", "copy", postgres_target, postgres_target), 2, "the same store")
    assert block_on(dump(postgres_target)) == rows


def test_refused_for_a_malformed_target(tmp_path: Path) -> None:
    source = str(tmp_path / "source.db")
    ok(invoke("--db", source, "enqueue", "--id", "one", "-c", "true"))
    source_hash = file_hash(source)
    before = set(tmp_path.iterdir())
    for target in (
        "postgresql://host:99999/db",
        "postgresql://postgres:secret@127.0.0.1:5432",
        "mysql://host/db",
        "sqlite:relative.db",
        "",
    ):
        assert "secret" not in assert_error(invoke("store", "copy", source, target), 2)
    assert_error(invoke("store", "copy", "postgresql://:5432", str(tmp_path / "new.db")), 2)
    assert set(tmp_path.iterdir()) == before
    assert file_hash(source) == source_hash


def test_refused_for_a_missing_or_older_source(tmp_path: Path) -> None:
    target = tmp_path / "target.db"
    assert_error(invoke("store", "copy", str(tmp_path / "missing.db"), str(target)), 1, "no store")
    old = tmp_path / "old.db"
    with closing(sqlite3.connect(old)) as connection:
        connection.execute("CREATE TABLE queuectl_schema (version INTEGER NOT NULL)")
        connection.execute("INSERT INTO queuectl_schema VALUES (5)")
        connection.commit()
    old_hash = file_hash(str(old))
    assert_error(invoke("store", "copy", str(old), str(target)), 1, "schema version 5", "status")
    assert file_hash(str(old)) == old_hash
    assert not target.exists()


def test_odd_arguments_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("not a database\n")
    store = str(tmp_path / "store.db")
    ok(invoke("--db", store, "enqueue", "--id", "one", "-c", "true"))
    before = {path: path.stat().st_mtime_ns for path in tmp_path.iterdir()}
    assert invoke("store", "copy").code == 2
    assert invoke("store", "copy", store).code == 2
    assert_error(invoke("store", "copy", str(tmp_path / "folder"), str(tmp_path / "a.db")), 1, "directory")
    assert_error(
        invoke("store", "copy", str(tmp_path / "notes.txt"), str(tmp_path / "a.db")), 1, "not a SQLite"
    )
    assert_error(invoke("store", "copy", store, str(tmp_path / "notes.txt")), 1, "not a SQLite")
    assert_error(invoke("store", "copy", store, str(tmp_path / "missing" / "a.db")), 1, "does not exist")
    # SQLite's side files (-wal, -shm) may appear, as for any reader: the files themselves stay.
    after = {
        path: path.stat().st_mtime_ns for path in tmp_path.iterdir() if not path.name.endswith(SIDE_FILES)
    }
    assert after == {path: mtime for path, mtime in before.items() if not path.name.endswith(SIDE_FILES)}


SIDE_FILES = ("-wal", "-shm")


def test_help_has_examples_within_80_columns() -> None:
    text = ok(invoke("store", "copy", "--help", env={"COLUMNS": "80"})).stdout
    examples = text.split("Examples:\n", 1)[1].splitlines()
    assert examples and all(line.startswith("    queuectl store copy ") for line in examples)
    assert all(len(line) <= 80 for line in text.splitlines())
    for group in ([], ["store"]):
        commands = ok(invoke(*group, "--help", env={"COLUMNS": "80"})).stdout.split("Commands:\n", 1)[1]
        assert "store " in commands or "copy " in commands
        assert "..." not in commands, commands


# --- all or nothing ---------------------------------------------------------------------------


@pg
@pytest.mark.slow
@pytest.mark.parametrize("direction", ["sqlite->postgres", "postgres->sqlite"])
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["kill -9", "ctrl-c"])
def test_stopped_copy_leaves_the_target_empty_or_complete(
    direction: str, stop: signal.Signals, tmp_path: Path, postgres_target: str
) -> None:
    sqlite_file = str(tmp_path / "queue.db")
    source, target = (sqlite_file, postgres_target)
    if direction == "postgres->sqlite":
        source, target = target, source
    block_on(many_jobs(source, KILLED_JOBS))
    threshold = random.randrange(1, KILLED_JOBS)

    with copying(source, target) as run:
        wait_until(
            lambda: run.process.poll() is not None or run.copied() >= threshold,
            what=f"{threshold} jobs copied",
        )
        run.process.send_signal(stop)
        code = run.process.wait(DEADLINE)
        said = run.output()

    found = block_on(count_jobs(target))
    assert found in (0, KILLED_JOBS), (found, said)
    if stop == signal.SIGINT:
        # 130: interrupted, before the commit or while it tidied up after it. Done before the
        # signal came: 0, or killed by it as Python exits (-2).
        assert code in (0, 130, -signal.SIGINT), (code, said)
        assert code == 130 or found == KILLED_JOBS
    if found == 0:
        assert copy(source, target)["jobs"] == KILLED_JOBS
        assert block_on(count_jobs(target)) == KILLED_JOBS
    else:
        assert_error(invoke("store", "copy", source, target), 1, "target holds jobs")


class Copying:
    """A ``store copy`` process with stderr on a terminal (``copying``), read as it goes."""

    def __init__(self, process: subprocess.Popen[bytes], terminal: int) -> None:
        self.process = process
        self._terminal = terminal
        self._read = bytearray()

    def output(self) -> str:
        """What it wrote to its terminal so far (its progress bar, any error)."""
        try:
            while chunk := os.read(self._terminal, 65536):
                self._read.extend(chunk)
        except OSError:  # nothing more for now, or the process is gone
            pass
        return self._read.decode(errors="replace")

    def copied(self) -> int:
        """How many jobs its progress bar says it has copied so far."""
        numbers = re.findall(r"\] ([\d,]+)/", self.output())
        return int(numbers[-1].replace(",", "")) if numbers else 0


@contextmanager
def copying(source: str, target: str) -> Iterator[Copying]:
    parent, child = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "queuectl", "store", "copy", source, target],
        stdout=subprocess.DEVNULL,
        stderr=child,
        env=queuectl_env(source),
    )
    os.close(child)
    os.set_blocking(parent, False)
    try:
        yield Copying(process, parent)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(parent)


# --- the tables cover the schemas -------------------------------------------------------------


@pg
def test_every_kept_column_is_copied(tmp_path: Path, postgres_target: str) -> None:
    """A migration that adds a column must say how it is copied (or why it is not)."""
    from queuectl.storage.postgres.copying import table_name as postgres_name
    from queuectl.storage.sqlite.copying import table_name as sqlite_name

    sqlite_file = str(tmp_path / "queue.db")
    ok(invoke("--db", sqlite_file, "status"))
    ok(invoke("--db", postgres_target, "status"))
    with closing(sqlite3.connect(sqlite_file)) as connection:
        sqlite_tables = {
            name: {row[1] for row in connection.execute(f"PRAGMA table_info({name})")}
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    postgres_tables = block_on(columns_of(postgres_target))
    not_copied = {"workers", "queue_starts", "queuectl_schema", "sqlite_sequence"}
    for tables, name_of, extra in (
        (sqlite_tables, sqlite_name, {"jobs": {"links"}}),
        (postgres_tables, postgres_name, {"jobs": {"watched"}}),
    ):
        copied = {
            name_of(table): set(table.column_names) | extra.get(name_of(table), set()) for table in TABLES
        }
        assert {name: columns for name, columns in tables.items() if name not in not_copied} == copied


# --- PostgreSQL helpers -----------------------------------------------------------------------


async def _connect(target: str) -> Any:
    import asyncpg

    return await asyncpg.connect(target)


async def dump(target: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every queuectl table of a PostgreSQL store, sorted."""
    connection = await _connect(target)
    try:
        names = [
            row["table_name"]
            for row in await connection.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            )
        ]
        return {
            name: sorted((tuple(row) for row in await connection.fetch(f'SELECT * FROM "{name}"')), key=repr)
            for name in names
        }
    finally:
        await connection.close()


async def table_count(target: str) -> int:
    connection = await _connect(target)
    try:
        return int(
            await connection.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
            )
        )
    finally:
        await connection.close()


async def columns_of(target: str) -> dict[str, set[str]]:
    connection = await _connect(target)
    try:
        found: dict[str, set[str]] = {}
        for row in await connection.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema()"
        ):
            found.setdefault(row["table_name"], set()).add(row["column_name"])
        return found
    finally:
        await connection.close()


async def fresh_schema(target: str, name: str) -> str:
    """Another schema beside ``target``'s, as a target of its own."""
    from conftest import with_search_path

    connection = await _connect(target)
    try:
        schema = f"{await connection.fetchval('SELECT current_schema()')}_{name}"
        await connection.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await connection.close()
    base = target.split("?")[0]
    return with_search_path(base, schema)


async def drop_schema(target: str) -> None:
    connection = await _connect(target)
    try:
        schema = await connection.fetchval("SELECT current_schema()")
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


async def many_jobs(target: str, count: int) -> None:
    async with await Queue.open(target) as queue:
        for start in range(0, count, 10_000):
            await queue.enqueue_many(
                [{"id": f"job-{number:06d}", "command": "true"} for number in range(start, start + 10_000)]
            )


async def count_jobs(target: str) -> int:
    async with await Queue.open(target) as queue:
        return sum((await queue.store.count_jobs()).values())
