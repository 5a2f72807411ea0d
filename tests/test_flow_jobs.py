"""Flow control, the jobs' part: ``unique_key``, ``after`` and ``no_retry_exit_codes``, on each backend.

Races are real processes started together; jobs run in real worker processes; the order of a
chain is read from the times the store recorded and from files the jobs write.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from helpers import (
    DEADLINE,
    Cli,
    Workers,
    assert_error,
    assert_wrote_nothing,
    block_on,
    invoke,
    is_postgres,
    job_ids,
    make_completed,
    make_dead,
    ok,
    queuectl_env,
    run_queuectl,
    start_worker,
    wait_for,
)

from queuectl import InvalidInput, Job, JobState, Queue


def show(cli: Cli, job_id: str) -> dict[str, object]:
    data: dict[str, object] = ok(cli("show", job_id, "--json")).json()
    return data


async def get(target: str, job_id: str) -> Job:
    async with await Queue.open(target) as queue:
        return await queue.get(job_id)


def drain(target: str, workers: Workers, *options: str) -> None:
    """Run a real ``worker start --drain`` until it exits by itself (0)."""
    worker = start_worker(target, "--drain", "--quiet", *options)
    workers.append(worker)
    assert worker.wait(DEADLINE) == 0


# --- unique keys ----------------------------------------------------------------------------------


async def test_ten_processes_enqueueing_one_unique_key_add_one_job(store_target: str) -> None:
    """Ten ``enqueue`` processes held at the store's door by a lock, then let in at once."""
    ok_status = run_queuectl(store_target, "status")  # the store exists, so that it can be locked
    assert ok_status.returncode == 0, ok_status.stderr
    argv = [sys.executable, "-m", "queuectl", "enqueue", "-c", "true", "--delay", "1h"]
    async with held_store(store_target) as all_waiting:
        processes = [
            subprocess.Popen(
                [*argv, "--unique-key", "nightly-export"],
                env=queuectl_env(store_target),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(10)
        ]
        await wait_for(lambda: all_waiting(processes), what="ten enqueues waiting for the lock")
    results = [(process.communicate(timeout=DEADLINE), process.returncode) for process in processes]
    assert [code for _, code in results] == [0] * 10, [err for (_, err), _ in results]
    printed = {out for (out, _), _ in results}
    assert len(printed) == 1
    (job_id,) = await job_ids(store_target)
    assert printed == {f"{job_id}\n"}
    notes = [err for (_, err), _ in results if err]
    assert len(notes) == 9
    for note in notes:
        assert note.count("\n") == 1
        assert "'nightly-export' is already enqueued" in note and job_id in note


Waiting = Callable[[list[subprocess.Popen[str]]], Awaitable[bool]]


@asynccontextmanager
async def held_store(target: str) -> AsyncIterator[Waiting]:
    """The store's write lock (SQLite) or a lock on its jobs table (PostgreSQL), held until the
    block ends; the block is given a test of whether processes wait for it."""
    if is_postgres(target):
        import asyncpg

        connection = await asyncpg.connect(target)
        try:
            async with connection.transaction():
                await connection.execute("LOCK TABLE jobs IN EXCLUSIVE MODE")

                async def waiting_on_postgres(processes: list[subprocess.Popen[str]]) -> bool:
                    count = await connection.fetchval(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'jobs'::regclass"
                    )
                    return bool(count == len(processes))

                yield waiting_on_postgres
        finally:
            await connection.close()
        return
    path = Path(target)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")

        async def waiting_on_sqlite(processes: list[subprocess.Popen[str]]) -> bool:
            # A process with the file open is at its write (busy, retrying) or about to be.
            return all(has_open(process.pid, path) for process in processes)

        yield waiting_on_sqlite
        holder.execute("ROLLBACK")
    finally:
        holder.close()


def has_open(pid: int, path: Path) -> bool:
    folder = Path(f"/proc/{pid}/fd")
    try:
        return any(os.path.realpath(fd) == str(path.resolve()) for fd in folder.iterdir())
    except OSError:  # it exited (it should not have) or closed a descriptor meanwhile
        return False


def test_a_unique_key_is_free_again_once_its_job_is_final(cli: Cli, cli_target: str) -> None:
    first = ok(cli("enqueue", "-c", "true", "--delay", "1h", "--unique-key", "k")).stdout.strip()
    again = ok(cli("enqueue", "-c", "true", "--unique-key", "k"))
    assert again.stdout.strip() == first
    assert "already enqueued" in again.stderr
    ok(cli("cancel", first))
    second = ok(cli("enqueue", "-c", "true", "--delay", "1h", "--unique-key", "k"))
    assert second.stdout.strip() != first
    assert second.stderr == ""
    assert show(cli, second.stdout.strip())["unique_key"] == "k"


def test_a_retry_of_a_job_whose_key_another_job_took_exits_1(cli: Cli, cli_target: str) -> None:
    ok(cli("enqueue", "--id", "one", "-c", "true", "--delay", "1h", "--unique-key", "k"))
    ok(cli("cancel", "one"))
    ok(cli("enqueue", "--id", "two", "-c", "true", "--delay", "1h", "--unique-key", "k"))
    assert_error(cli("retry", "one"), 1, "unique key")
    assert show(cli, "one")["state"] == "cancelled"
    ok(cli("cancel", "two"))
    assert ok(cli("retry", "one")).stdout == "one\n"


async def test_the_api_returns_the_job_that_holds_the_key(store_target: str) -> None:
    async with await Queue.open(store_target) as queue:
        held = await queue.enqueue(command="true", unique_key="k", queue="q-held")
        same = await queue.enqueue(command="other", unique_key="k")
        assert same == held
        await queue.pool(queues=["q-held"], mode="burst").run()
        assert (await queue.get(held.id)).state.value == "completed"
        fresh = await queue.enqueue(command="true", unique_key="k", delay=3600)
        assert fresh.id != held.id and fresh.state.value == "pending"


def test_enqueue_file_with_a_repeated_unique_key_exits_2_and_writes_nothing(
    cli: Cli, cli_target: str
) -> None:
    lines = '{"command": "a", "unique_key": "k"}\n{"command": "b", "unique_key": "k"}\n'
    assert_error(cli("enqueue-file", "-", input=lines), 2, "line 2", "unique_key", "line 1")
    assert_wrote_nothing(cli_target)


# --- exit codes not retried -----------------------------------------------------------------------


def test_an_exit_code_not_retried_makes_the_job_dead_at_once(
    cli: Cli, cli_target: str, workers: Workers
) -> None:
    ok(cli("config", "set", "backoff_max", "0.05"))
    buried = ok(cli("enqueue", "-c", "exit 3", "--max-retries", "3", "--no-retry-exit-code", "3")).stdout
    retried = ok(cli("enqueue", "-c", "exit 4", "--max-retries", "1", "--no-retry-exit-code", "3")).stdout
    drain(cli_target, workers)
    buried_job = show(cli, buried.strip())
    assert (buried_job["state"], buried_job["attempts"], buried_job["last_error"]) == (
        "dead",
        1,
        "exit code 3",
    )
    assert buried_job["no_retry_exit_codes"] == [3]
    retried_job = show(cli, retried.strip())
    assert (retried_job["state"], retried_job["attempts"]) == ("dead", 2)


# --- dependencies ---------------------------------------------------------------------------------


def test_a_chain_runs_in_order(cli: Cli, cli_target: str, workers: Workers, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    # Each link fails (and, with no retries, ends the chain) if the one before has not finished.
    records: list[dict[str, object]] = [
        {"id": "link-a", "command": f"sleep 0.3; echo a >> {marks}"},
        {"id": "link-b", "command": f"grep -qx a {marks} && echo b >> {marks}", "after": ["link-a"]},
        {"id": "link-c", "command": f"grep -qx b {marks} && echo c >> {marks}", "after": ["link-b"]},
    ]
    for record in records:
        record["max_retries"] = 0
    # Earlier records of the same file are known to later ones' after.
    text = "".join(json.dumps(record) + "\n" for record in records)
    assert ok(cli("enqueue-file", "-", input=text)).stdout == "link-a\nlink-b\nlink-c\n"
    assert [show(cli, job_id)["state"] for job_id in ("link-b", "link-c")] == ["pending", "pending"]
    drain(cli_target, workers, "--count", "4")
    assert marks.read_text() == "a\nb\nc\n"
    a, b, c = (block_on(get(cli_target, job_id)) for job_id in ("link-a", "link-b", "link-c"))
    assert [job.state.value for job in (a, b, c)] == ["completed"] * 3
    assert a.finished_at is not None and b.started_at is not None and b.started_at >= a.finished_at
    assert b.finished_at is not None and c.started_at is not None and c.started_at >= b.finished_at


def test_a_dead_first_link_cancels_the_chain(cli: Cli, cli_target: str, workers: Workers) -> None:
    ok(cli("enqueue", "--id", "first", "-c", "exit 1", "--max-retries", "0"))
    ok(cli("enqueue", "--id", "second", "-c", "true", "--after", "first"))
    ok(cli("enqueue", "--id", "third", "-c", "true", "--after", "second"))
    ok(cli("enqueue", "--id", "other", "-c", "true"))
    drain(cli_target, workers)  # and it does not wait for jobs that can no longer run
    assert show(cli, "first")["state"] == "dead"
    second, third = show(cli, "second"), show(cli, "third")
    assert (second["state"], second["last_error"]) == ("cancelled", "dependency first ended dead")
    assert (third["state"], third["last_error"]) == ("cancelled", "dependency second ended cancelled")
    assert second["attempts"] == third["attempts"] == 0
    assert show(cli, "other")["state"] == "completed"


def test_cancel_of_a_dependency_cancels_its_dependents(cli: Cli, cli_target: str) -> None:
    ok(cli("enqueue", "--id", "dep", "-c", "true", "--delay", "1h"))
    ok(cli("enqueue", "--id", "needs-dep", "-c", "true", "--after", "dep"))
    ok(cli("enqueue", "--id", "free", "-c", "true", "--delay", "1h"))
    assert ok(cli("cancel", "dep")).stdout == "dep\n"
    dependent = show(cli, "needs-dep")
    assert (dependent["state"], dependent["last_error"]) == ("cancelled", "dependency dep ended cancelled")
    assert show(cli, "free")["state"] == "pending"


def test_an_unknown_after_id_exits_1_and_enqueues_nothing(cli: Cli, cli_target: str) -> None:
    assert_error(cli("enqueue", "-c", "true", "--after", "no-such-job"), 1, "'no-such-job'")
    lines = '{"id": "fine", "command": "true"}\n{"command": "true", "after": ["fine", "nope"]}\n'
    assert_error(cli("enqueue-file", "-", input=lines), 1, "'nope'")
    assert ok(cli("list", "--json")).json() == []


def test_dependencies_already_ended(cli: Cli, cli_target: str) -> None:
    block_on(make_completed(cli_target, "done-already"))
    block_on(make_dead(cli_target, "dead-already"))
    ready = show(cli, ok(cli("enqueue", "-c", "true", "--after", "done-already")).stdout.strip())
    assert ready["state"] == "pending"
    assert ok(cli("status", "--json")).json()["next_run_at"] is not None  # due: nothing to wait on
    enqueued = ok(cli("enqueue", "-c", "true", "--after", "dead-already"))
    doomed = show(cli, enqueued.stdout.strip())
    assert (doomed["state"], doomed["last_error"]) == ("cancelled", "dependency dead-already ended dead")
    assert (
        enqueued.stderr
        == f"queuectl: job {doomed['id']} is cancelled at once: dependency dead-already ended dead\n"
    )


def test_after_takes_a_unique_prefix_and_stores_the_full_id(cli: Cli, cli_target: str) -> None:
    ok(cli("enqueue", "--id", "5d1e7c3a-prefix", "-c", "true", "--delay", "1h"))
    job = ok(cli("enqueue", "-c", "true", "--after", "5d1e7c", "--json")).json()
    assert job["after"] == ["5d1e7c3a-prefix"]


@pytest.mark.parametrize("example", ["--unique-key", "--after", "--no-retry-exit-code"])
def test_enqueue_help_shows_the_flow_options_with_examples(example: str) -> None:
    text = ok(invoke("enqueue", "--help", env={"COLUMNS": "80"})).stdout
    options, examples = text.split("Examples:\n", 1)
    assert example in options
    assert any(line.startswith("    queuectl enqueue") and example in line for line in examples.splitlines())


async def test_a_long_chain_is_cancelled_whole(store_target: str) -> None:
    """900 links: within SQLite's nesting of triggers, and past PostgreSQL's stack for nested ones."""
    async with await Queue.open(store_target) as queue:
        await queue.enqueue(id="head", command="true", delay=3600)
        links = [
            {"id": f"link-{n}", "command": "true", "after": [f"link-{n - 1}" if n else "head"]}
            for n in range(900)
        ]
        await queue.enqueue_many(links)
        longer = queue.enqueue(id="link-900", command="true", after=["link-899"])
        if is_postgres(store_target):
            await longer
        else:  # SQLite nests at most 1,000 triggers: a chain that could not be cancelled is refused
            with pytest.raises(InvalidInput, match="chain of 901 jobs"):
                await longer
        await queue.cancel("head")
        last = await queue.get("link-899")
        assert (last.state.value, last.last_error) == ("cancelled", "dependency link-898 ended cancelled")
        assert await queue.count_matching(state=JobState.CANCELLED) == await queue.count_matching()
