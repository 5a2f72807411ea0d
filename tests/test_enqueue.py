"""The façade's rules for new jobs, on every backend, through both its paths.

``Queue.enqueue`` (async) and ``queuectl.enqueue`` (sync: the command line's and scripts') check
every job, ``NewJob`` or mapping, and fill in the defaults from the settings before a store sees
it. Stores only write what they are given (tests/test_store.py).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from helpers import DEADLINE, is_postgres

from queuectl import enqueue as sync
from queuectl.errors import DuplicateJob, InvalidInput
from queuectl.models import UNSET, JobState, NewJob
from queuectl.queue import Queue
from queuectl.storage import open_store

# --- the rules ----------------------------------------------------------------------------------


def test_a_new_job_is_checked_like_any_input() -> None:
    assert sync.check(NewJob(id="a", command="true")) == {"id": "a", "command": "true"}
    for bad, words in [
        (NewJob(id="has space", command="true"), "id must not contain whitespace"),
        (NewJob(id="a", command=" "), "command must not be empty"),
        (NewJob(id="a", command="true", timeout=0), "timeout must be a number of seconds > 0"),
        (NewJob(id="a", command="true", max_retries=-1), "max_retries must be an integer from 0"),
        (NewJob(id="a", command="true", queue=""), "queue must be 1 to 200 characters"),
        (NewJob(id="a", command="true", priority=True), "priority must be an integer"),
        (NewJob(id="a", command="true", run_at=datetime.now(UTC), delay=5.0), "run_at or delay, not both"),
    ]:
        with pytest.raises(InvalidInput, match=words):
            sync.check(bad)


def test_a_new_job_comes_out_as_json_input_would() -> None:
    moment = datetime(2030, 1, 1, 12, tzinfo=UTC)
    given = NewJob(id="a", command="true", timeout=5, run_at=moment, delay=None)
    assert sync.check(given) == {"id": "a", "command": "true", "timeout": 5.0, "run_at": moment}
    assert sync.check(given) == sync.check({"id": "a", "command": "true", "timeout": 5, "run_at": moment})


def test_resolve_fills_in_only_what_was_left_unset() -> None:
    from queuectl.config import Settings

    settings = Settings(max_retries=7, default_timeout=12.5)
    assert sync.unresolved({"id": "a", "command": "x"})
    assert not sync.unresolved({"id": "a", "command": "x", "timeout": None, "max_retries": 0})
    full = sync.resolve({"id": "a", "command": "x"}, settings)
    assert (full.timeout, full.max_retries) == (12.5, 7)
    kept = sync.resolve({"id": "a", "command": "x", "timeout": None, "max_retries": 0}, None)
    assert (kept.timeout, kept.max_retries) == (None, 0)
    assert UNSET not in (full.timeout, full.max_retries)


# --- Queue.enqueue ------------------------------------------------------------------------------


async def test_queue_fills_in_defaults_from_the_settings(store_target: str) -> None:
    async with await Queue.open(store_target) as queue:
        await queue.set_setting("max_retries", "7")
        await queue.set_setting("default_timeout", "12.5")
        job = await queue.enqueue(NewJob(id="a", command="true"))
        explicit = await queue.enqueue(id="b", command="true", timeout=None, max_retries=0)
        assert (job.timeout, job.max_retries) == (12.5, 7)
        assert (explicit.timeout, explicit.max_retries) == (None, 0)
        assert await queue.get("a") == job


async def test_queue_refuses_a_bad_new_job_and_stores_nothing(store_target: str) -> None:
    async with await Queue.open(store_target) as queue:
        with pytest.raises(InvalidInput, match="whitespace"):
            await queue.enqueue_many([NewJob(id="fine", command="true"), NewJob(id="not fine", command="x")])
        assert await queue.list_jobs() == []


async def test_settings_changed_elsewhere_reach_enqueues_within_a_poll_interval(store_target: str) -> None:
    async with await Queue.open(store_target) as queue, await Queue.open(store_target) as other:
        await queue.set_setting("poll_interval", "0.05")
        assert (await queue.enqueue(command="true")).max_retries == 3
        await other.set_setting("max_retries", "9")
        with anyio.fail_after(DEADLINE):
            while (await queue.enqueue(command="true")).max_retries != 9:
                await anyio.sleep(0.01)


# --- the synchronous path -----------------------------------------------------------------------


def test_sync_enqueue_follows_the_same_rules(store_target: str) -> None:
    asyncio.run(_set(store_target, max_retries=5))
    job = sync.enqueue(store_target, command="true", id="s1")
    assert (job.id, job.max_retries, job.timeout, job.state) == ("s1", 5, None, JobState.PENDING)
    (from_new_job,) = sync.enqueue_many(store_target, [NewJob(id="s2", command="true", timeout=3)])
    assert (from_new_job.timeout, from_new_job.max_retries) == (3.0, 5)
    with pytest.raises(InvalidInput, match="whitespace"):
        sync.enqueue(store_target, NewJob(id="s 3", command="true"))
    with pytest.raises(DuplicateJob, match="'s2'"):
        sync.enqueue_many(store_target, [{"id": "s4", "command": "true"}, {"id": "s2", "command": "true"}])
    assert sorted(asyncio.run(_ids(store_target))) == ["s1", "s2"]


def test_sync_enqueue_refuses_bad_input_before_creating_the_store(tmp_path: Path) -> None:
    target = tmp_path / "new" / "queue.db"
    with pytest.raises(InvalidInput):
        sync.enqueue_many(str(target), [{"command": "true"}, {"command": ""}], make_parent=True)
    assert not target.parent.exists()
    assert sync.enqueue_many(str(target), [], make_parent=True) == []
    assert not target.parent.exists()
    sync.enqueue_many(str(target), [{"command": "true"}], make_parent=True)
    assert target.is_file()


def test_sync_enqueue_on_sqlite_runs_no_event_loop(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import json, sys
        from queuectl.enqueue import enqueue, enqueue_document_ids
        enqueue({str(tmp_path / "q.db")!r}, command="true")
        enqueue_document_ids({str(tmp_path / "q.db")!r}, '{{"command": "a"}}\\n{{"command": "b"}}\\n')
        print(json.dumps([m for m in ("asyncio", "aiosqlite", "asyncpg") if m in sys.modules]))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


async def _set(target: str, **settings: object) -> None:
    async with await Queue.open(target) as queue:
        for key, value in settings.items():
            await queue.set_setting(key, str(value))


async def _ids(target: str) -> list[str]:
    async with await Queue.open(target) as queue:
        return [job.id for job in await queue.list_jobs()]


# --- an injected clock ----------------------------------------------------------------------------


async def test_open_store_passes_the_clock_to_sqlite(store_target: str) -> None:
    then = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    if is_postgres(store_target):
        with pytest.raises(ValueError, match="server's clock"):
            await open_store(store_target, clock=then.timestamp)
        return
    async with await Queue.open(store_target, clock=then.timestamp) as queue:
        job = await queue.enqueue(command="true", delay=60)
        assert job.created_at == then and job.run_at == then + timedelta(seconds=60)
        assert await queue.store.next_run_at() == 60.0
