"""Queues' pauses and limits (``queue list / pause / resume / limit``), on both stores.

The race tests run real worker processes on one store and let the jobs say, from inside, when
they ran; without the guard in the claim, three workers of four slots each would run a limited
queue's jobs twelve at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    DEADLINE,
    Workers,
    assert_error,
    assert_wrote_nothing,
    invoke,
    ok,
    start_worker,
    wait_for,
    wait_until,
)

from queuectl import Queue
from queuectl.errors import InvalidInput
from queuectl.models import Claim, JobState
from queuectl.queues import Rate, parse_rate
from queuectl.storage import Store, open_store

# --- helpers -------------------------------------------------------------------------------------


def qc(target: str, *args: str) -> Any:
    """``queuectl --db TARGET ARGS`` in-process; its ``--json`` output, or None."""
    result = ok(invoke("--db", target, *args))
    return json.loads(result.out) if "--json" in args else None


def enqueue(target: str, command: str, *, queue: str, count: int = 1, priority: int = 0) -> list[str]:
    jobs = [{"command": command, "queue": queue, "priority": priority} for _ in range(count)]
    result = ok(invoke("--db", target, "enqueue-file", "-", input=json.dumps(jobs)))
    return result.stdout.split()


def jobs_of(target: str, queue: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = qc(target, "list", "--queue", queue, "--limit", "0", "--json")
    return found


def states(target: str, queue: str) -> list[str]:
    return sorted(job["state"] for job in jobs_of(target, queue))


def all_completed(target: str, queue: str, count: int) -> bool:
    return states(target, queue) == ["completed"] * count


def fast_polls(target: str) -> None:
    """Workers that look at the store (and the queues' settings) five times a second."""
    qc(target, "config", "set", "poll_interval", "0.2")
    qc(target, "config", "set", "lease", "1")


def intervals(path: Path) -> list[tuple[float, float]]:
    """The ``start end`` lines the jobs wrote (``_timed``)."""
    pairs = [line.split() for line in path.read_text().splitlines()]
    return [(float(start), float(end)) for start, end in pairs]


def most_at_once(spans: Sequence[tuple[float, float]]) -> int:
    """The most spans that overlap at any moment (an end at the very moment of a start: not)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def _timed(log: Path, seconds: float) -> str:
    """A command that appends ``start end`` (epoch seconds, from inside the job) to ``log``."""
    return f's=$(date +%s.%N); sleep {seconds}; echo "$s $(date +%s.%N)" >> {log}'


# --- rates as text ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "count", "seconds", "shown"),
    [
        ("10/s", 10, 1, "10/s"),
        ("100/m", 100, 60, "100/m"),
        ("5/10s", 5, 10, "5/10s"),
        ("1/1h30m", 1, 5400, "1/1h30m"),
        ("3/90", 3, 90, "3/1m30s"),
        ("2/0.5s", 2, 0.5, "2/0.5s"),
    ],
)
def test_rates_are_read_and_shown(text: str, count: int, seconds: float, shown: str) -> None:
    rate = parse_rate(text)
    assert rate == Rate(count=count, seconds=seconds)
    assert str(rate) == shown
    assert parse_rate(shown) == rate


@pytest.mark.parametrize("text", ["10", "0/s", "-1/s", "x/s", "5/0s", "5/-1s", "5/", "/s", "5/x", "1.5/s"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_rate(text)


# --- the command line ---------------------------------------------------------------------------


def test_queue_list_json_shape_pause_before_jobs_and_limits(cli_target: str) -> None:
    qc(cli_target, "queue", "pause", "mail")  # no job yet: a queue may be paused before it has any
    enqueue(cli_target, "true", queue="api", count=2)
    qc(cli_target, "queue", "limit", "api", "--concurrency", "3", "--rate", "100/m")
    listed = qc(cli_target, "queue", "list", "--json")
    assert listed == [
        {
            "name": "api",
            "jobs": {"pending": 2, "processing": 0, "completed": 0, "failed": 0, "dead": 0, "cancelled": 0},
            "paused": False,
            "concurrency": 3,
            "rate": "100/m",
        },
        {
            "name": "mail",
            "jobs": {"pending": 0, "processing": 0, "completed": 0, "failed": 0, "dead": 0, "cancelled": 0},
            "paused": True,
            "concurrency": None,
            "rate": None,
        },
    ]
    table = ok(invoke("--db", cli_target, "queue", "list")).stdout.splitlines()
    assert table[0].split()[:4] == ["QUEUE", "STATE", "CONCURRENCY", "RATE"]
    assert table[1].split()[:5] == ["api", "active", "3", "100/m", "2"]
    assert table[2].split()[:4] == ["mail", "paused", "-", "-"]

    # One limit changes, the other stays; `none` takes one away.
    qc(cli_target, "queue", "limit", "api", "--concurrency", "none")
    (api,) = [info for info in qc(cli_target, "queue", "list", "--json") if info["name"] == "api"]
    assert (api["concurrency"], api["rate"]) == (None, "100/m")
    # A queue with no job and no setting left is no longer listed.
    qc(cli_target, "queue", "resume", "mail")
    assert [info["name"] for info in qc(cli_target, "queue", "list", "--json")] == ["api"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("limit", "api", "--rate", "10"), ("--rate", "N/DURATION")),
        (("limit", "api", "--rate", "0/s"), ("--rate", "at least 1")),
        (("limit", "api", "--rate", "5/0s"), ("--rate", "more than 0")),
        (("limit", "api", "--concurrency", "0"), ("--concurrency",)),
        (("limit", "api", "--concurrency", "two"), ("--concurrency",)),
        (("limit", "api"), ("--concurrency", "--rate")),
        (("pause",), ("NAME",)),
        (("pause", " "), ("whitespace",)),
    ],
)
def test_bad_queue_commands_exit_2_and_write_nothing(
    cli_target: str, args: tuple[str, ...], words: tuple[str, ...]
) -> None:
    assert_error(invoke("--db", cli_target, "queue", *args), 2, *words)
    assert_wrote_nothing(cli_target)


def test_every_queue_command_has_help_with_an_example() -> None:
    for command in ("list", "pause", "resume", "limit"):
        text = ok(invoke("queue", command, "--help")).stdout
        assert f"queuectl queue {command}" in text.split("Examples:")[1]


# --- the embedding API --------------------------------------------------------------------------


async def test_the_api_pauses_resumes_and_limits(store_target: str) -> None:
    async with await Queue.open(store_target) as queue:
        await queue.pause_queue("mail", "reports")
        settings = await queue.limit_queue("api", concurrency=2, rate="5/10s")
        assert (settings.concurrency, settings.rate) == (2, Rate(count=5, seconds=10))
        with pytest.raises(InvalidInput):
            await queue.limit_queue("api", rate="0/s")
        with pytest.raises(InvalidInput):
            await queue.limit_queue("api")
        await queue.resume_queue("reports")
        listed = {info.name: info.to_dict() for info in await queue.list_queues()}
        assert listed["api"]["rate"] == "5/10s"  # the refused change changed nothing
        assert {name: info["paused"] for name, info in listed.items()} == {"api": False, "mail": True}


async def test_a_rate_allows_its_count_per_window_then_the_next_once_the_window_has_passed(
    store_target: str,
) -> None:
    # PostgreSQL counts starts per hundredth of the window, the oldest such bucket whole: the
    # rate must hold, and the next start must not come much later than the window.
    window = 1.0
    async with await Queue.open(store_target) as queue:
        await queue.enqueue_many([{"command": "true", "queue": "api"} for _ in range(10)])
        await queue.limit_queue("api", rate=f"3/{window:g}s")

        async def claim() -> list[Claim]:
            return await queue.store.claim(worker_id="w", queues=None, limit=10, lease=60, flow=True)

        assert len(await claim()) == 3
        began = time.monotonic()
        again = await claim()
        if time.monotonic() - began < window / 2:  # else a stalled machine let the window pass
            assert again == []
        taken: list[Claim] = []
        while not taken and time.monotonic() - began < DEADLINE:
            taken = await claim()
            await asyncio.sleep(0.01)
        waited = time.monotonic() - began
        assert len(taken) == 3
        assert 0.9 * window <= waited < 3 * window


async def test_no_window_of_a_rate_holds_more_starts_than_its_count(store_target: str) -> None:
    # The starts the rate counts are the claims: two connections claim as fast as they can, and
    # the moments the store gave their claims are checked to the microsecond.
    window = 0.5
    async with await Queue.open(store_target) as first, await Queue.open(store_target) as second:
        await first.enqueue_many([{"command": "true", "queue": "api"} for _ in range(7)])
        await first.limit_queue("api", rate=f"2/{window:g}s")
        claims: list[Claim] = []

        async def claim_all(queue: Queue, wanted: int) -> None:
            deadline = time.monotonic() + DEADLINE
            while len(claims) < 7 and time.monotonic() < deadline:
                claims.extend(
                    await queue.store.claim(worker_id="w", queues=None, limit=wanted, lease=60, flow=True)
                )
                await asyncio.sleep(0)

        await asyncio.gather(claim_all(first, 1), claim_all(second, 3))
    starts = sorted(claim.job.started_at.timestamp() for claim in claims if claim.job.started_at)
    assert len(starts) == 7
    gaps = [later - earlier for earlier, later in zip(starts, starts[2:], strict=False)]
    assert min(gaps) >= window - 1e-6, gaps


async def test_a_claim_of_one_job_passes_over_paused_and_full_queues(store_target: str) -> None:
    # One job wanted is what a worker asks for as a slot frees: PostgreSQL answers it with a
    # statement of its own, which must skip the same queues as the general one.
    async with await Queue.open(store_target) as queue:
        await queue.enqueue_many(
            [{"command": "true", "queue": name, "priority": 9} for name in ("held", "busy", "spent")]
            + [{"command": "true", "queue": name, "priority": 9} for name in ("busy", "spent")]
            + [{"command": "true", "queue": "open", "priority": 0}]
        )
        await queue.pause_queue("held")
        await queue.limit_queue("busy", concurrency=1)
        await queue.limit_queue("spent", rate="1/1h")

        async def claim_one() -> list[str]:
            claims = await queue.store.claim(worker_id="w", queues=None, limit=1, lease=60, flow=True)
            return [claim.job.queue for claim in claims]

        # The first claims fill "busy" and spend "spent"'s rate, best first; then only "open" is left.
        taken = [*await claim_one(), *await claim_one()]
        assert sorted(taken) == ["busy", "spent"]
        assert await claim_one() == ["open"]
        assert await claim_one() == []


async def test_claims_drop_the_starts_that_no_window_reaches_any_more(store_target: str) -> None:
    # A rate-limited queue's starts are kept per bucket; the buckets its window has passed must
    # go as claims go on (PostgreSQL's claims of one job drop them on about one claim in 32).
    window = 0.1
    async with await Queue.open(store_target) as queue:
        await queue.limit_queue("api", rate=f"1000000/{window:g}s")
        await queue.enqueue_many([{"command": "true", "queue": "api"} for _ in range(600)])

        async def claim_one() -> None:
            assert await queue.store.claim(worker_id="w", queues=None, limit=1, lease=60, flow=True)

        for _ in range(50):
            await claim_one()
        await asyncio.sleep(3 * window)  # time passing is the condition: the window moves on
        later = time.time() - window / 2  # every bucket older than this is past the window
        assert await _buckets_before(store_target, later) > 0
        for _ in range(500):  # no drop in 500 claims: a chance of 1 in 7 million
            await claim_one()
        assert await _buckets_before(store_target, later) == 0


async def _buckets_before(target: str, moment: float) -> int:
    """The rows of the store's ``queue_starts`` whose bucket began before ``moment``."""
    if target.startswith("postgresql://"):
        import asyncpg

        connection = await asyncpg.connect(target)
        try:
            found = await connection.fetchval(
                "SELECT count(*) FROM queue_starts WHERE started_at < to_timestamp($1)", moment
            )
        finally:
            await connection.close()
        return int(found)
    with contextlib.closing(sqlite3.connect(target)) as connection:
        (count,) = connection.execute(
            "SELECT count(*) FROM queue_starts WHERE started_at < ?", (moment,)
        ).fetchone()
    return int(count)


# --- workers: pauses ----------------------------------------------------------------------------


def test_drain_and_burst_do_not_wait_for_paused_queues(cli_target: str) -> None:
    qc(cli_target, "queue", "pause", "mail")
    enqueue(cli_target, "true", queue="mail", priority=10)
    enqueue(cli_target, "true", queue="other")
    for mode in ("--drain", "--burst"):
        ok(invoke("--db", cli_target, "worker", "start", mode, "--quiet"))
    assert states(cli_target, "mail") == ["pending"]
    assert states(cli_target, "other") == ["completed"]


def _heartbeat(target: str) -> str:
    (worker,) = qc(target, "worker", "list", "--json")
    beat: str = worker["heartbeat_at"]
    return beat


def _two_polls_later(target: str) -> None:
    """Wait until the worker has been through its upkeep round (heartbeat, settings, queues) once
    more after now: two heartbeats later than the latest one now, each a round of that loop."""
    seen = [_heartbeat(target)]

    def beat() -> bool:
        latest = _heartbeat(target)
        if latest > seen[-1]:
            seen.append(latest)
        return len(seen) >= 3

    wait_until(beat, what="two more heartbeats of the worker")


def test_a_pause_reaches_a_running_worker(cli_target: str, workers: Workers) -> None:
    fast_polls(cli_target)
    enqueue(cli_target, "true", queue="mail")
    workers.append(start_worker(cli_target, "--count", "1", "--quiet"))
    wait_until(lambda: all_completed(cli_target, "mail", 1), what="the first mail job")

    qc(cli_target, "queue", "pause", "mail")
    _two_polls_later(cli_target)
    # The worker takes the best job first: the mail jobs, unless their queue is paused.
    enqueue(cli_target, "true", queue="mail", count=3, priority=10)
    enqueue(cli_target, "true", queue="other", count=2)
    wait_until(lambda: all_completed(cli_target, "other", 2), what="the other queue's jobs")
    assert states(cli_target, "mail") == ["completed", "pending", "pending", "pending"]

    qc(cli_target, "queue", "resume", "mail")
    wait_until(lambda: all_completed(cli_target, "mail", 4), what="the mail jobs after the resume")
    assert workers[0].poll() is None


# --- workers: limits ----------------------------------------------------------------------------


def test_a_concurrency_limit_holds_across_worker_processes(
    cli_target: str, workers: Workers, tmp_path: Path
) -> None:
    fast_polls(cli_target)
    log = tmp_path / "spans.log"
    jobs = 12
    qc(cli_target, "queue", "limit", "renders", "--concurrency", "2")
    enqueue(cli_target, _timed(log, 0.4), queue="renders", count=jobs)
    for _ in range(3):
        workers.append(start_worker(cli_target, "--count", "4", "--quiet"))
    wait_until(lambda: all_completed(cli_target, "renders", jobs), timeout=DEADLINE * 2, what="the renders")
    spans = intervals(log)
    assert len(spans) == jobs
    assert most_at_once(spans) == 2  # never more; and the limit is no pause


def test_a_rate_limit_holds_across_worker_processes(cli_target: str, workers: Workers) -> None:
    fast_polls(cli_target)
    jobs = 7
    qc(cli_target, "queue", "limit", "api", "--rate", "2/s")
    enqueue(cli_target, "true", queue="api", count=jobs)
    for _ in range(3):
        workers.append(start_worker(cli_target, "--count", "4", "--quiet"))
    wait_until(lambda: all_completed(cli_target, "api", jobs), what="the api jobs")
    starts = sorted(
        datetime.fromisoformat(job["started_at"]).timestamp() for job in jobs_of(cli_target, "api")
    )
    # Never a third start within a second of the one two before. The rate counts claims;
    # ``started_at`` is when the worker then started the command, a few milliseconds later on a
    # loaded machine, and more for a worker's first jobs: hence the slack. (The claims' own
    # moments are checked to the microsecond by the test above.) Unguarded, the gaps would be 0.
    gaps = [later - earlier for earlier, later in zip(starts, starts[2:], strict=False)]
    assert min(gaps) >= 1.0 - 0.15, gaps


def test_a_limited_queue_does_not_hold_up_another_queue(
    cli_target: str, workers: Workers, tmp_path: Path
) -> None:
    fast_polls(cli_target)
    gate = tmp_path / "gate"
    qc(cli_target, "queue", "limit", "slow", "--concurrency", "1")
    # The slow queue's jobs come first in claim order; one runs until the gate opens.
    enqueue(cli_target, f"while [ ! -e {gate} ]; do sleep 0.05; done", queue="slow", count=3, priority=5)
    enqueue(cli_target, "true", queue="other", count=2)
    workers.append(start_worker(cli_target, "--count", "2", "--quiet"))
    wait_until(lambda: all_completed(cli_target, "other", 2), what="the other queue's jobs")
    assert states(cli_target, "slow") == ["pending", "pending", "processing"]
    gate.touch()
    wait_until(lambda: all_completed(cli_target, "slow", 3), what="the slow jobs")


# --- PostgreSQL: claims racing from several connections --------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize(("limit", "allowed"), [(("--concurrency", "3"), 3), (("--rate", "2/1h"), 2)])
async def test_a_claim_waits_for_a_racing_claim_of_a_limited_queue(
    postgres_target: str, limit: tuple[str, str], allowed: int
) -> None:
    """One connection claims in a transaction it keeps open; another claims meanwhile. The
    second must wait for the first to commit, then count its claims: nothing more is allowed."""
    import asyncpg

    flag, value = limit
    async with await Queue.open(postgres_target) as queue:
        await queue.enqueue_many([{"command": "true", "queue": "renders"} for _ in range(10)])
        await queue.limit_queue("renders", **{flag.lstrip("-"): value})
        holder = await asyncpg.connect(postgres_target)
        watcher = await asyncpg.connect(postgres_target)
        try:
            transaction = holder.transaction()
            await transaction.start()
            first = await holder.fetch("SELECT id FROM queuectl_flow_claim('first', 60, 8, 'f.', NULL)")
            assert len(first) == allowed
            racing = asyncio.ensure_future(
                queue.store.claim(worker_id="second", queues=None, limit=8, lease=60, flow=True)
            )

            async def blocked_or_done() -> bool:
                waiting = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                    holder.get_server_pid(),
                )
                return racing.done() or waiting > 0

            await wait_for(blocked_or_done, what="the second claim to wait (or to end)")
            await transaction.commit()
            assert await racing == []
        finally:
            await holder.close()
            await watcher.close()
        (renders,) = await queue.list_queues()
        assert renders.jobs[JobState.PROCESSING] == allowed


@pytest.mark.postgres
async def test_claims_from_many_connections_at_once_respect_the_limits(postgres_target: str) -> None:
    stores = [await open_store(postgres_target) for _ in range(8)]
    try:
        queue = Queue(stores[0])
        await queue.enqueue_many([{"command": "true", "queue": "renders"} for _ in range(40)])
        await queue.enqueue_many([{"command": "true", "queue": "api"} for _ in range(40)])
        await queue.limit_queue("renders", concurrency=3)
        await queue.limit_queue("api", rate="5/1h")

        async def claim(store: Store, number: int) -> list[Claim]:
            return await store.claim(worker_id=f"w{number}", queues=None, limit=4, lease=60, flow=True)

        for _ in range(3):  # rounds: the held jobs and recorded starts of earlier ones count
            await asyncio.gather(*(claim(store, number) for number, store in enumerate(stores)))
        by_name = {info.name: info.jobs for info in await queue.list_queues()}
        assert by_name["renders"][JobState.PROCESSING] == 3
        assert by_name["api"][JobState.PROCESSING] == 5
    finally:
        for store in stores:
            await store.close()
