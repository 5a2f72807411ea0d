"""What the dashboard reads at the store seam: pages of jobs, attempts ended per minute, each
queue's oldest due job. Every backend, through the ``store`` fixture."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from helpers import is_postgres

from queuectl.config import Settings
from queuectl.enqueue import check, resolve
from queuectl.errors import InvalidInput
from queuectl.models import JobState, NewJob
from queuectl.queue import Queue
from queuectl.storage import Store
from queuectl.storage.base import FINISHED_KEPT_SECONDS
from queuectl.storage.postgres import dashboard as postgres_dashboard
from queuectl.storage.sqlite import dashboard as sqlite_dashboard


def new(job_id: str, **fields: object) -> NewJob:
    """A job as the façade hands it to a store: checked, its defaults filled in."""
    return resolve(check({"id": job_id, "command": "true", **fields}), Settings())


async def all_pages(store: Store, **search: Any) -> tuple[list[str], int]:
    """The ids of every page of ``search_jobs``, in order, and how many pages it took."""
    ids: list[str] = []
    cursor: str | None = None
    for pages in range(1, 1000):
        page = await store.search_jobs(cursor=cursor, **search)
        ids += [job.id for job in page.jobs]
        if page.next_cursor is None:
            return ids, pages
        cursor = page.next_cursor
    raise AssertionError("search_jobs never ended")


async def add_in_batches(store: Store, batches: Sequence[Sequence[NewJob]]) -> list[str]:
    """Add the batches one after another; return the ids newest first (as pages show them)."""
    for batch in batches:
        await store.add_jobs(batch)
    return [job.id for batch in reversed(batches) for job in reversed(batch)]


# --- pages of jobs -------------------------------------------------------------------------------


async def test_pages_show_every_job_once_newest_first(store: Store) -> None:
    # Jobs of one batch share created_at: their order is the insertion's, newest first.
    batches = [[new(f"job-{b}-{n}") for n in range(b + 1)] for b in range(6)]
    newest_first = await add_in_batches(store, batches)

    ids, pages = await all_pages(store, limit=4)

    assert ids == newest_first
    assert pages == -(-len(newest_first) // 4)
    first = await store.search_jobs(limit=4)
    assert [job.id for job in first.jobs] == newest_first[:4]
    assert first.jobs[0].to_dict()["id"] == newest_first[0]


async def test_filters_by_state_and_queue(store: Store) -> None:
    await store.add_jobs([new("a-pending", queue="a"), new("b-pending", queue="b")])
    await store.add_jobs([new("a-running", queue="a", priority=9), new("b-cancelled", queue="b")])
    (claim,) = await store.claim(worker_id="w1", queues=["a"], limit=1, lease=300)
    assert claim.job.id == "a-running"
    await store.cancel_job("b-cancelled")

    async def ids(**search: Any) -> list[str]:
        return (await all_pages(store, limit=2, **search))[0]

    assert await ids(state=[JobState.PENDING]) == ["b-pending", "a-pending"]
    assert await ids(state=[JobState.PROCESSING, JobState.CANCELLED]) == ["b-cancelled", "a-running"]
    assert await ids(queue=["a"]) == ["a-running", "a-pending"]
    assert await ids(queue=["a", "b"], state=[JobState.PENDING]) == ["b-pending", "a-pending"]
    assert await ids(state=[JobState.DEAD]) == []
    assert await ids(queue=["nowhere"]) == []


async def test_text_matches_an_id_prefix_or_a_command_substring(store: Store) -> None:
    await store.add_jobs(
        [
            new("deploy-1", command="make release"),
            new("build-7", command="./deploy.sh --prod"),
            # Neither: "deploy" is inside its id, not at the start, and its command has "Deploy".
            new("x-deploy", command="echo Deploy"),
            new("other", command="true"),
        ]
    )

    page = await store.search_jobs(text="deploy")

    assert [job.id for job in page.jobs] == ["build-7", "deploy-1"]
    assert page.next_cursor is None
    assert [job.id for job in (await store.search_jobs(text="build-")).jobs] == ["build-7"]
    assert [job.id for job in (await store.search_jobs(text="Deploy")).jobs] == ["x-deploy"]
    assert [job.id for job in (await store.search_jobs(text="", queue=["default"])).jobs] == [
        "other",
        "x-deploy",
        "build-7",
        "deploy-1",
    ]


async def test_a_rare_match_is_found_by_bounded_steps_each_job_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each call looks at 3 rows of its walk at most: a match among the oldest takes several calls.
    monkeypatch.setattr(sqlite_dashboard, "SEARCH_SCAN_ROWS", 3)
    monkeypatch.setattr(postgres_dashboard, "SEARCH_SCAN_ROWS", 3)
    batches = [[new("needle", command="find the needle")], *[[new(f"hay-{n}")] for n in range(10)]]
    newest_first = await add_in_batches(store, batches)

    first = await store.search_jobs(text="needle")
    assert first.jobs == []
    assert first.next_cursor is not None
    ids, pages = await all_pages(store, text="needle")
    assert ids == ["needle"]
    assert pages == 4  # 11 rows, 3 a call
    everything, _ = await all_pages(store, queue=["default"], limit=2)
    assert everything == newest_first


@pytest.mark.parametrize("cursor", ["garbage", "", "12_", "_5", "1.5_x", "nan_3", "1_-2", "1_2_3"])
async def test_a_cursor_the_store_did_not_make_is_refused(store: Store, cursor: str) -> None:
    await store.add_jobs([new("one")])
    with pytest.raises(InvalidInput, match="cursor"):
        await store.search_jobs(cursor=cursor)


async def test_a_limit_out_of_range_is_refused(store: Store) -> None:
    for limit in (0, -1, 1001):
        with pytest.raises(InvalidInput, match="limit"):
            await store.search_jobs(limit=limit)


async def test_the_queue_facade_pages_the_same_way(store: Store) -> None:
    newest_first = await add_in_batches(store, [[new(f"j{n}") for n in range(5)]])
    queue = Queue(store)

    first = await queue.search_jobs(limit=3)
    second = await queue.search_jobs(limit=3, cursor=first.next_cursor)

    assert [job.id for job in first.jobs + second.jobs] == newest_first
    assert second.next_cursor is None
    assert first.to_dict()["next_cursor"] == first.next_cursor


# --- attempts ended per minute -------------------------------------------------------------------


async def test_finished_per_minute_sums_each_minute_and_fills_zeros(store: Store) -> None:
    current = (await store.finished_per_minute(1))[0].minute
    earlier = current - timedelta(minutes=2)
    await store.add_finished({(current, "completed"): 2, (earlier + timedelta(seconds=59), "dead"): 1})
    await store.add_finished({(current + timedelta(seconds=30), "completed"): 3, (current, "failed"): 4})

    window = await store.finished_per_minute(5)

    assert len(window) == 5
    minutes = [item.minute for item in window]
    assert minutes == [minutes[0] + timedelta(minutes=n) for n in range(5)]  # oldest first
    assert all(minute.tzinfo is not None and minute.utcoffset() == timedelta(0) for minute in minutes)
    assert minutes[-1] >= current  # the store's current minute (one later if it just turned)
    by_minute = {item.minute: (item.completed, item.failed, item.dead) for item in window}
    assert by_minute[current] == (5, 4, 0)
    assert by_minute[earlier] == (0, 0, 1)
    assert all(
        counts == (0, 0, 0) for minute, counts in by_minute.items() if minute not in (current, earlier)
    )
    assert window[-1].to_dict()["minute"].endswith(":00.000000Z")


async def test_finished_per_minute_with_nothing_counted_is_zeros(store: Store) -> None:
    window = await store.finished_per_minute()
    assert len(window) == 60
    assert {(item.completed, item.failed, item.dead) for item in window} == {(0, 0, 0)}


async def test_an_add_prunes_minutes_older_than_two_days(store: Store, store_target: str) -> None:
    current = (await store.finished_per_minute(1))[0].minute
    old = current - timedelta(seconds=FINISHED_KEPT_SECONDS + 600)
    kept = current - timedelta(seconds=FINISHED_KEPT_SECONDS - 600)
    await store.add_finished({(old, "completed"): 7, (kept, "completed"): 8})
    await store.add_finished({(current, "failed"): 1})

    assert sorted(await stored_minutes(store_target)) == [kept, current]
    window = await store.finished_per_minute(FINISHED_KEPT_SECONDS // 60)
    assert sum(item.completed for item in window) == 8


async def test_add_finished_refuses_other_states(store: Store) -> None:
    with pytest.raises(ValueError, match="completed, failed, dead"):
        await store.add_finished({(datetime.now(UTC), "pending"): 1})
    with pytest.raises(ValueError):
        await store.add_finished({(datetime.now(UTC), "completed"): -1})


async def stored_minutes(target: str) -> list[datetime]:
    """The minutes the counts table holds, read past the store."""
    if is_postgres(target):
        import asyncpg

        connection = await asyncpg.connect(target)
        try:
            return [row["minute"] for row in await connection.fetch("SELECT minute FROM finished_counts")]
        finally:
            await connection.close()
    with closing(sqlite3.connect(target)) as connection:
        rows = connection.execute("SELECT minute FROM finished_counts").fetchall()
    return [datetime.fromtimestamp(minute, UTC) for (minute,) in rows]


# --- each queue's oldest due job -----------------------------------------------------------------


async def test_oldest_due_per_queue_ignores_claimed_future_and_waiting_jobs(store: Store) -> None:
    now = datetime.now(UTC)
    await store.add_jobs(
        [
            new("a-old", queue="a", run_at=now - timedelta(seconds=100)),
            new("a-new", queue="a", run_at=now - timedelta(seconds=5)),
            new("b-taken", queue="b", run_at=now - timedelta(seconds=500), priority=9),
            new("b-due", queue="b", run_at=now - timedelta(seconds=20)),
            new("c-future", queue="c", run_at=now + timedelta(hours=1)),
            new("d-waits", queue="d", run_at=now - timedelta(seconds=900), after=("c-future",)),
        ]
    )
    (claim,) = await store.claim(worker_id="w1", queues=["b"], limit=1, lease=300)
    assert claim.job.id == "b-taken"

    oldest = await store.oldest_due()

    assert sorted(oldest) == ["a", "b"]
    assert 100 <= oldest["a"] < 160
    assert 20 <= oldest["b"] < 80
    await store.cancel_job("a-old")
    assert 5 <= (await store.oldest_due())["a"] < 65


async def test_oldest_due_of_an_empty_store_is_empty(store: Store) -> None:
    assert await store.oldest_due() == {}
    assert await Queue(store).oldest_due() == {}
