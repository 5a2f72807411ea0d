"""PostgreSQL across hosts, attacked: clocks that disagree, a LISTEN connection that dies, a server
that restarts while a worker drains the queue, a claim whose reply is lost on the way.

The first four drive real ``queuectl worker start`` processes against the test server. The clock
tests give a worker a wrong wall clock with libfaketime (``apt-get install faketime``) and skip,
saying so, without it. The restart test restarts a cluster of its own on 127.0.0.1 (root, initdb
as postgres: ``netns.loopback_cluster``), never the machine's server, which other tests use.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import netns
import pytest
from helpers import DEADLINE, exit_code_within, lines, queuectl_env, run_queuectl, wait_until
from test_postgres import Proxy, through

pytestmark = pytest.mark.postgres

POSTGRES_URL_ENV = "QUEUECTL_TEST_POSTGRES_URL"  # as in conftest
#: Five minutes, the skew the tests give a worker's wall clock: far more than any lease here.
SKEW = 300.0
#: How far a job's times may be from the server's clock: a round trip, on a loaded machine.
SLACK = timedelta(seconds=5)


# --- shared plumbing ------------------------------------------------------------------------------


def configure(target: str, **settings: str) -> None:
    for key, value in settings.items():
        done = run_queuectl(target, "config", "set", key, value)
        assert done.returncode == 0, done.stderr


def enqueue_all(target: str, jobs: list[dict[str, Any]]) -> list[str]:
    done = run_queuectl(target, "enqueue-file", "-", input="".join(json.dumps(job) + "\n" for job in jobs))
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def server_time(target: str) -> datetime:
    """The database server's clock now."""

    async def read() -> datetime:
        connection = await asyncpg.connect(target)
        try:
            moment: datetime = await connection.fetchval("SELECT clock_timestamp()")
            return moment
        finally:
            await connection.close()

    return asyncio.run(read())


def all_jobs(target: str) -> list[dict[str, Any]]:
    done = run_queuectl(target, "list", "--json", "--limit", "0")
    assert done.returncode == 0, done.stderr
    jobs: list[dict[str, Any]] = json.loads(done.stdout)
    return jobs


def admin_url() -> str:
    """The test server itself (the ``postgres_target`` fixture has skipped if there is none)."""
    return os.environ[POSTGRES_URL_ENV]


def worker(
    target: str, *args: str, log: Path, env: Mapping[str, str] | None = None, verbose: bool = False
) -> subprocess.Popen[str]:
    """``queuectl worker start ARGS`` in the background, its stderr in ``log``."""
    with log.open("w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "queuectl", *(["-v"] if verbose else []), "worker", "start", *args],
            env=queuectl_env(target, env),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[str]]]:
    """Workers a test starts; any still running at the end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=DEADLINE)


def assert_clean_log(log: Path) -> None:
    text = log.read_text()
    assert "Traceback" not in text and "internal error" not in text, text


def run_counts(path: Path) -> Counter[str]:
    """Job ids appended to ``path`` by the jobs' commands, one line per run."""
    return Counter(line.split()[0] for line in path.read_text().splitlines() if line.strip())


# --- a wrong wall clock -----------------------------------------------------------------------------


def libfaketime() -> str:
    """The path of libfaketime, or a skip that says how to get it."""
    candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
        "/usr/local/lib/faketime/libfaketimeMT.so.1",
    ]
    if shutil.which("dpkg"):
        listed = subprocess.run(["dpkg", "-L", "libfaketime"], capture_output=True, text=True, check=False)
        candidates += [line for line in listed.stdout.splitlines() if line.endswith("libfaketimeMT.so.1")]
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate
    pytest.skip("a worker with a wrong clock needs libfaketime: apt-get install faketime")


def skewed(seconds: float) -> dict[str, str]:
    """Environment that moves a process's wall clock by ``seconds`` (its monotonic clock stays)."""
    env = {
        "LD_PRELOAD": libfaketime(),
        "FAKETIME": f"{seconds:+.0f}",
        # A wrong wall clock leaves the monotonic clock alone; the worker times its leases with it.
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    # Make sure the preload works here: a test that silently ran with the right clock proves nothing.
    probe = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=DEADLINE,
    )
    offset = float(probe.stdout) - time.time()
    assert abs(offset - seconds) < 30, f"libfaketime did not move the clock: {offset:+.0f}s"
    return env


@pytest.mark.slow
def test_workers_whose_clocks_disagree_run_each_job_once(
    postgres_target: str, tmp_path: Path, workers: list[subprocess.Popen[str]]
) -> None:
    """Leases are judged by the database's clock.

    Were they judged by a host's clock, the worker five minutes ahead would take the others'
    jobs as lapsed at once, and the one five minutes behind would write leases that the others
    see as lapsed at once: either way long jobs would run twice.
    """
    clocks = {"right": {}, "behind": skewed(-SKEW), "ahead": skewed(+SKEW)}
    # Long jobs outlast the lease, so their leases must be renewed, not just written once.
    configure(postgres_target, lease="3", poll_interval="0.1")
    logs = {name: tmp_path / f"worker-{name}.log" for name in clocks}
    for name, env in clocks.items():
        workers.append(worker(postgres_target, "--count", "2", log=logs[name], env=env))
    pids = {name: process.pid for name, process in zip(clocks, workers, strict=True)}

    def registered() -> int:
        return len(json.loads(run_queuectl(postgres_target, "worker", "list", "--json").stdout))

    wait_until(lambda: registered() == 3, what="three workers to register")

    runs = tmp_path / "runs"
    record = f'echo "$QUEUECTL_JOB_ID $PPID" >> {runs}'
    began = server_time(postgres_target)
    # Six long jobs of the highest priority: each idle worker claims two, one per slot.
    long_jobs: list[dict[str, Any]] = [
        {"id": f"long-{n}", "command": f"{record}; sleep 5", "priority": 9} for n in range(6)
    ]
    short_jobs = [{"id": f"short-{n}", "command": f"{record}; sleep 0.05"} for n in range(60)]
    enqueue_all(postgres_target, long_jobs + short_jobs)

    def finished_or_run_twice() -> bool:
        if runs.exists() and max(run_counts(runs).values(), default=0) > 1:
            return True  # fail at once, below, naming the job
        return all(job["state"] == "completed" for job in all_jobs(postgres_target))

    wait_until(finished_or_run_twice, what="every job to complete")
    assert run_queuectl(postgres_target, "worker", "stop").returncode == 0
    for process in workers:
        assert exit_code_within(process) == 0

    counts = run_counts(runs)
    assert counts == Counter({job["id"]: 1 for job in long_jobs + short_jobs})
    jobs = all_jobs(postgres_target)
    # Attempts are timed by the database's clock, whichever host ran them.
    ended = server_time(postgres_target)
    for job in jobs:
        for field in ("started_at", "finished_at"):
            moment = datetime.fromisoformat(job[field])
            assert began - SLACK <= moment <= ended + SLACK, f"{job['id']} {field} {moment} by a host's clock"
    assert {(job["attempts"], job["last_error"]) for job in jobs} == {(1, None)}
    runners = {line.split()[0]: int(line.split()[1]) for line in runs.read_text().splitlines()}
    for name, pid in pids.items():
        assert any(runners[job["id"]] == pid for job in long_jobs), f"the worker {name} ran no long job"
        assert_clean_log(logs[name])
        assert "lease was lost" not in logs[name].read_text()
        assert "took back" not in logs[name].read_text()


@pytest.mark.slow
def test_a_worker_behind_takes_back_a_lost_workers_job_after_the_lease_not_minutes_later(
    postgres_target: str, tmp_path: Path, workers: list[subprocess.Popen[str]]
) -> None:
    lease = 3.0
    configure(postgres_target, lease=f"{lease:g}", poll_interval="0.1", backoff_base="1", backoff_max="0.01")
    runs, first = tmp_path / "runs", tmp_path / "first"
    command = f"echo run >> {runs}; if [ ! -e {first} ]; then touch {first}; exec sleep 300; fi"
    (job_id,) = enqueue_all(postgres_target, [{"id": "survivor", "command": command}])
    victim = worker(postgres_target, log=tmp_path / "victim.log")
    workers.append(victim)
    wait_until(first.exists, what="the first attempt to start")
    behind = worker(postgres_target, log=tmp_path / "behind.log", env=skewed(-SKEW))
    workers.append(behind)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=DEADLINE)
    killed_at = time.monotonic()

    # Judged by its own clock, the worker behind would wait five minutes more.
    wait_until(lambda: len(lines(runs)) >= 2, timeout=SKEW / 3, what="the job to run again")
    taken_back_after = time.monotonic() - killed_at
    wait_until(
        lambda: [job["state"] for job in all_jobs(postgres_target)] == ["completed"],
        what="the job to complete",
    )
    (job,) = all_jobs(postgres_target)
    assert (job["id"], job["attempts"]) == (job_id, 2)
    assert lines(runs) == ["run", "run"]
    assert taken_back_after < SKEW / 3
    behind.send_signal(signal.SIGTERM)
    assert exit_code_within(behind) == 0
    assert_clean_log(tmp_path / "behind.log")


# --- the LISTEN connection --------------------------------------------------------------------------


def schema_of(target: str) -> str:
    return urlsplit(target).query.rpartition("search_path=")[2]


async def listening_pids(schema: str) -> list[int]:
    """Server pids of the sessions that LISTEN on this schema's channel."""
    import asyncpg

    connection = await asyncpg.connect(admin_url())
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity"
            " WHERE query LIKE 'LISTEN %' AND query LIKE $1 AND pid <> pg_backend_pid()",
            f'%"queuectl_{schema}"%',
        )
        return [row["pid"] for row in rows]
    finally:
        await connection.close()


async def terminate(pid: int) -> None:
    import asyncpg

    connection = await asyncpg.connect(admin_url())
    try:
        assert await connection.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await connection.close()


async def listener_other_than(schema: str, old: int | None) -> int:
    """Wait until a session LISTENs on this schema's channel (not ``old``); its server pid."""
    import anyio

    deadline = time.monotonic() + DEADLINE
    while True:
        pids = [pid for pid in await listening_pids(schema) if pid != old]
        if pids:
            return pids[0]
        assert time.monotonic() < deadline, f"timed out after {DEADLINE}s waiting for a LISTEN session"
        await anyio.sleep(0.05)


@pytest.mark.slow
async def test_a_killed_listen_connection_falls_back_to_polling_and_listens_again(
    postgres_target: str, tmp_path: Path, workers: list[subprocess.Popen[str]]
) -> None:
    poll_interval = 6.0  # long enough to tell a NOTIFY's wake-up from a poll
    configure(postgres_target, poll_interval=f"{poll_interval:g}")
    schema = schema_of(postgres_target)
    runs = tmp_path / "runs"
    record = f'echo "$QUEUECTL_JOB_ID" >> {runs}'
    log = tmp_path / "worker.log"
    workers.append(worker(postgres_target, log=log, verbose=True))
    first_listener = await listener_other_than(schema, None)

    await terminate(first_listener)
    enqueue_all(postgres_target, [{"id": "after-the-kill", "command": record}])
    # Its NOTIFY went nowhere: the worker's next poll finds it.
    wait_until(lambda: "after-the-kill" in lines(runs), what="polling to pick up the job")

    await listener_other_than(schema, first_listener)
    # Woken by a NOTIFY again: far sooner than its poll interval, even on a loaded machine.
    began = time.monotonic()
    enqueue_all(postgres_target, [{"id": "woken", "command": record}])
    wait_until(lambda: "woken" in lines(runs), what="the NOTIFY to wake the worker")
    assert time.monotonic() - began < poll_interval * 0.75
    assert workers[0].poll() is None
    workers[0].send_signal(signal.SIGTERM)
    assert exit_code_within(workers[0]) == 0
    assert "lost the LISTEN connection" in log.read_text()
    assert_clean_log(log)


# --- a server restart --------------------------------------------------------------------------------


@pytest.fixture
def private_cluster() -> Iterator[netns.Cluster]:
    """A PostgreSQL cluster of the test's own on 127.0.0.1: restarting the machine's server
    would break the tests that use it meanwhile (the suite runs in two processes)."""
    reason = netns.cluster_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with netns.loopback_cluster() as cluster:
        yield cluster


@pytest.mark.slow
def test_a_server_restart_mid_run_loses_nothing(
    private_cluster: netns.Cluster, tmp_path: Path, workers: list[subprocess.Popen[str]]
) -> None:
    target = private_cluster.create_database()
    configure(target, poll_interval="0.2")
    runs, long_started = tmp_path / "runs", tmp_path / "long-started"
    record = f'echo "$QUEUECTL_JOB_ID" >> {runs}'
    long_job: dict[str, Any] = {
        "id": "long",
        "command": f"touch {long_started}; sleep 6; {record}",
        "priority": 9,
    }
    short_jobs = [{"id": f"short-{n}", "command": f"sleep 0.1; {record}"} for n in range(200)]
    enqueue_all(target, [long_job, *short_jobs])
    log = tmp_path / "worker.log"
    drainer = worker(target, "--count", "4", "--drain", log=log)
    workers.append(drainer)
    wait_until(lambda: long_started.exists() and len(lines(runs)) >= 20, what="the run to be under way")

    private_cluster.restart()
    runs_at_restart = lines(runs)
    assert len(runs_at_restart) < len(short_jobs) and "long" not in runs_at_restart, "restarted too late"
    assert drainer.poll() is None, "the worker died with the server"

    assert exit_code_within(drainer) == 0
    counts = run_counts(runs)
    assert counts == Counter({job["id"]: 1 for job in [long_job, *short_jobs]})
    jobs = all_jobs(target)
    assert Counter(job["state"] for job in jobs) == {"completed": len(short_jobs) + 1}
    assert_clean_log(log)
    assert "PostgreSQL" in log.read_text()  # it said what happened, in one line per event


# --- a reply lost on the way ---------------------------------------------------------------------------


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    """A TCP proxy in front of the test server that can drop replies and connections."""
    parts = urlsplit(admin_url())
    running = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await running.start()
    yield running
    await running.cut()


async def test_a_claim_whose_reply_is_lost_is_not_lost(postgres_target: str, proxy: Proxy) -> None:
    """The claim committed but its worker never heard: the retry must hand over what it took.

    Otherwise the job sits in ``processing`` until its lease runs out, then counts an attempt
    it never made: with ``max_retries`` 0 it would go to the DLQ without having run at all.
    """
    from queuectl.models import JobState, NewJob, Outcome
    from queuectl.storage.postgres.store import PostgresStore

    store = await PostgresStore.open(through(proxy, postgres_target), retry_for=20)
    observer = await PostgresStore.open(postgres_target)
    try:
        await store.add_jobs(
            [
                NewJob(id="warm", command="true", timeout=None, max_retries=3),
                NewJob(id="once", command="true", timeout=None, max_retries=0),
            ]
        )
        # Warm up: asyncpg prepares a statement on first use, one more reply to lose.
        (warm,) = await store.claim(worker_id="w", queues=None, limit=1, lease=60)
        assert warm.job.id == "warm"
        proxy.swallow_replies = True
        claiming = asyncio.create_task(store.claim(worker_id="w", queues=None, limit=5, lease=60))
        deadline = time.monotonic() + DEADLINE
        while (await observer.get_job("once")).state is not JobState.PROCESSING:
            assert time.monotonic() < deadline, "the claim never committed"
            await asyncio.sleep(0.02)
        await proxy.cut()
        await proxy.start()
        (claim,) = await claiming
        assert (claim.job.id, claim.job.attempts) == ("once", 1)
        now = datetime.now(UTC)
        done = Outcome(state=JobState.COMPLETED, exit_code=0, error=None, started_at=now, finished_at=now)
        assert await store.finish(claim, done)  # the token handed over is the one that holds the job
        assert (await observer.get_job("once")).state is JobState.COMPLETED
    finally:
        await store.close()
        await observer.close()
