"""What only the PostgreSQL store does: concurrent migrations, LISTEN/NOTIFY, lost connections.

The shared behaviour (including claims from several processes) is in ``test_store.py``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from queuectl.config import Settings
from queuectl.errors import DuplicateJob, StoreCorrupt, StoreUnavailable
from queuectl.models import JobState, NewJob, Outcome
from queuectl.storage import open_store
from queuectl.storage.postgres.schema import SCHEMA_VERSION
from queuectl.storage.postgres.store import PostgresStore

POSTGRES_URL_ENV = (
    "QUEUECTL_TEST_POSTGRES_URL"  # as in conftest: the postgres_target fixture skips without it
)


#: What the façade gives a job that sets neither on a fresh store: stores never resolve defaults.
RESOLVED = {"timeout": Settings().default_timeout, "max_retries": Settings().max_retries}


def new(job_id: str, **fields: object) -> NewJob:
    return NewJob(id=job_id, command="true", **{**RESOLVED, **fields})  # type: ignore[arg-type]


def schema_of(target: str) -> str:
    return urlsplit(target).query.rpartition("search_path=")[2]


def postgres_url() -> str:
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        pytest.skip(f"needs {POSTGRES_URL_ENV}")
    return url


async def admin_fetchval(query: str, *args: object) -> object:
    import asyncpg

    connection = await asyncpg.connect(postgres_url())
    try:
        return await connection.fetchval(query, *args)
    finally:
        await connection.close()


# --- opening -------------------------------------------------------------------------------

OPENER = textwrap.dedent(
    """
    import asyncio, sys, time
    from queuectl.storage import open_store

    async def main(target, start):
        await asyncio.sleep(max(0.0, float(start) - time.time()))
        store = await open_store(target)
        await store.close()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.postgres
async def test_many_tasks_open_a_fresh_schema_at_once(postgres_target: str) -> None:
    stores = await asyncio.gather(*(PostgresStore.open(postgres_target) for _ in range(8)))
    await asyncio.gather(*(store.close() for store in stores))
    schema = schema_of(postgres_target)
    rows = await admin_fetchval(f'SELECT array_agg(version) FROM "{schema}".queuectl_schema')
    assert rows == [SCHEMA_VERSION]


@pytest.mark.postgres
async def test_many_processes_open_a_fresh_schema_at_once(postgres_target: str) -> None:
    start = str(time.time() + 2.0)  # all of them connect at the same moment, not as they start
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", OPENER, postgres_target, start, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(8)
    ]
    for process in processes:
        _, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
    rows = await admin_fetchval(
        f'SELECT array_agg(version) FROM "{schema_of(postgres_target)}".queuectl_schema'
    )
    assert rows == [SCHEMA_VERSION]


@pytest.mark.postgres
async def test_tables_of_another_program_are_left_alone(postgres_target: str) -> None:
    schema = schema_of(postgres_target)
    await admin_fetchval(f'CREATE TABLE "{schema}".jobs (name text)')
    with pytest.raises(StoreCorrupt, match="another program"):
        await PostgresStore.open(postgres_target)
    columns = await admin_fetchval(
        "SELECT array_agg(column_name::text) FROM information_schema.columns"
        " WHERE table_schema = $1 AND table_name = 'jobs'",
        schema,
    )
    assert columns == ["name"]


@pytest.mark.postgres
async def test_schemas_are_separate_queues(postgres_target: str) -> None:
    other_schema = f"qt_{uuid.uuid4().hex[:12]}"
    await admin_fetchval(f'CREATE SCHEMA "{other_schema}"')
    try:
        first = await PostgresStore.open(postgres_target)
        second = await PostgresStore.open(postgres_target.replace(schema_of(postgres_target), other_schema))
        try:
            await first.add_jobs([new("only-here")])
            assert await second.list_jobs() == []
            # A change in one schema does not wake waiters on another.
            await second.wait_for_change(10)  # returns once its LISTEN connection is up
            began = time.monotonic()
            waiting = asyncio.create_task(second.wait_for_change(1.0))
            await first.add_jobs([new("still-only-here")])
            await waiting
            assert time.monotonic() - began >= 0.9
        finally:
            await first.close()
            await second.close()
    finally:
        await admin_fetchval(f'DROP SCHEMA "{other_schema}" CASCADE')


def test_unreachable_server_is_one_line_without_the_password() -> None:
    with pytest.raises(StoreUnavailable) as caught:
        asyncio.run(PostgresStore.open("postgresql://someone:s3cret@127.0.0.1:1/jobs"))
    message = str(caught.value)
    assert "127.0.0.1:1/jobs" in message and "refused" in message
    assert "s3cret" not in message and "\n" not in message
    assert caught.value.__cause__ is not None


def test_unknown_host_is_named() -> None:
    with pytest.raises(StoreUnavailable, match=r"no-such-host\.invalid:5432/jobs: unknown host"):
        asyncio.run(PostgresStore.open("postgresql://u@no-such-host.invalid/jobs"))


@pytest.mark.postgres
async def test_missing_database_is_named() -> None:
    parts = urlsplit(postgres_url())
    url = urlunsplit(parts._replace(path="/queuectl_no_such_database"))
    with pytest.raises(
        StoreUnavailable, match='database "queuectl_no_such_database" does not exist'
    ) as caught:
        await open_store(url)
    assert "\n" not in str(caught.value)


def test_import_never_loads_the_driver(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        import queuectl, queuectl.queue, queuectl.storage
        from queuectl.storage import open_store

        async def main():
            store = await open_store({str(tmp_path)!r} + "/queue.db")
            await store.close()

        asyncio.run(main())
        assert "asyncpg" not in sys.modules, "asyncpg was imported"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_missing_driver_names_the_extra() -> None:
    code = textwrap.dedent(
        """
        import asyncio, sys
        sys.modules["asyncpg"] = None  # as if it were not installed
        from queuectl.errors import StoreUnavailable
        from queuectl.storage import open_store

        try:
            asyncio.run(open_store("postgresql://u@127.0.0.1:1/db"))
        except StoreUnavailable as error:
            print(error)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "PostgreSQL support needs the extra: pip install 'queuectl[postgres]'"


# --- rows and statements -------------------------------------------------------------------


def test_statements_follow_the_job_field_table() -> None:
    from queuectl.models import INPUT_FIELDS, JOB_FIELDS, SUMMARY_FIELDS
    from queuectl.storage.postgres import sql

    assert sql.JOB_COLUMNS.split(", ") == list(SUMMARY_FIELDS)
    # Every field by its column's name; the history is made of the array and the latest entry.
    from queuectl.storage.postgres.history import HISTORY

    assert ", ".join(f"{HISTORY} AS history" if f == "history" else f for f in JOB_FIELDS) == sql.FULL_COLUMNS
    # Every input field is inserted: as given, or (run_at, delay) as the server's now() + delay.
    assert set(sql.INSERT_FIELDS) == set(INPUT_FIELDS)
    assert sql.INSERT_FIELDS[-2:] == ("run_at", "delay")
    # The parameters' types are the columns' types in the schema.
    types = {name: sql.array_type(name) for name in sql.INSERT_FIELDS}
    assert types == {
        "id": "text[]",
        "command": "text[]",
        "queue": "text[]",
        "priority": "integer[]",
        "timeout": "float8[]",
        "max_retries": "integer[]",
        "cwd": "text[]",
        "env": "text[]",  # JSON text
        "unique_key": "text[]",
        "after": "text[]",  # JSON text
        "no_retry_exit_codes": "text[]",  # JSON text
        "run_at": "timestamptz[]",
        "delay": "float8[]",
    }
    for number, name in enumerate(sql.INSERT_FIELDS, 1):
        assert f"${number}::{types[name]}" in sql.INSERT_JOBS


@pytest.mark.postgres
async def test_unresolved_defaults_are_a_programming_error(postgres_target: str) -> None:
    """The façade resolves ``UNSET`` timeout and max_retries; a store refuses to guess them."""
    from queuectl.models import UNSET

    store = await PostgresStore.open(postgres_target)
    try:
        with pytest.raises(TypeError, match="'b' with timeout UNSET"):
            await store.add_jobs([new("a"), new("b", timeout=UNSET)])
        with pytest.raises(TypeError, match="'c' with max_retries UNSET"):
            await store.add_jobs([new("c", max_retries=UNSET)])
        assert await store.list_jobs() == []
    finally:
        await store.close()


@pytest.mark.postgres
async def test_rows_read_back_every_field(postgres_target: str) -> None:
    store = await PostgresStore.open(postgres_target)
    at = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    try:
        (added,) = await store.add_jobs(
            [new("a", queue="q", priority=-3, timeout=2.5, max_retries=7, run_at=at)]
        )
        assert (added.queue, added.priority, added.timeout, added.max_retries, added.run_at) == (
            "q",
            -3,
            2.5,
            7,
            at,
        )
        assert added.state is JobState.PENDING and added.attempts == 0
        assert await store.get_job("a") == added  # nothing ran yet: empty output tails either way
        assert await store.list_jobs() == [added]
    finally:
        await store.close()


# --- claims --------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_claimers_on_separate_connections_get_each_job_once(postgres_target: str) -> None:
    total = 2000
    stores = [await PostgresStore.open(postgres_target) for _ in range(4)]
    try:
        await stores[0].add_jobs([new(f"job-{index}", priority=index % 7) for index in range(total)])

        async def claim_all(store: PostgresStore, name: str, worker: int) -> list[str]:
            got: list[str] = []
            while claims := await store.claim(worker_id=name, queues=None, limit=1 + worker % 3, lease=300):
                got.extend(claim.job.id for claim in claims)
            return got

        results = await asyncio.gather(
            *(
                claim_all(store, f"w{index}-{worker}", worker)
                for index, store in enumerate(stores)
                for worker in range(4)
            )
        )
        claimed = [job_id for result in results for job_id in result]
        assert len(claimed) == total and len(set(claimed)) == total
        assert (await stores[0].count_jobs())[JobState.PROCESSING] == total
    finally:
        for store in stores:
            await store.close()


# --- wake-ups ------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_notify_wakes_a_waiter_at_once(postgres_target: str) -> None:
    waiter = await PostgresStore.open(postgres_target)
    writer = await PostgresStore.open(postgres_target)
    try:
        await waiter.wait_for_change(10)  # returns once its LISTEN connection is up
        began = time.monotonic()
        await waiter.wait_for_change(0.3)
        assert time.monotonic() - began >= 0.25  # nothing changed: it waited
        waiting = asyncio.create_task(waiter.wait_for_change(30))
        await asyncio.sleep(0.1)
        began = time.monotonic()
        await writer.add_jobs([new("a")])
        await asyncio.wait_for(waiting, 10)
        assert time.monotonic() - began < 5  # woken by the NOTIFY, not the 30 s timeout
    finally:
        await waiter.close()
        await writer.close()


# --- lost connections ----------------------------------------------------------------------


class Proxy:
    """A TCP proxy to the test server that can cut every connection and refuse new ones.

    With ``swallow_replies`` set, what the server sends is dropped: a statement
    commits, but its client never hears so.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.listen_port = 0
        self.swallow_replies = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.swallow_replies = False
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.listen_port)
        self.listen_port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop accepting and drop every open connection, like a server going down."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, replies: bool) -> None:
            try:
                while data := await source.read(65536):
                    if not (replies and self.swallow_replies):
                        sink.write(data)
                        await sink.drain()
            except OSError:
                pass
            finally:
                sink.transport.abort()
                self._writers.discard(sink)

        await asyncio.gather(pipe(reader, upstream_writer, False), pipe(upstream_reader, writer, True))


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    parts = urlsplit(postgres_url())
    running = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await running.start()
    yield running
    await running.cut()


def through(proxy: Proxy, target: str) -> str:
    parts = urlsplit(target)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{proxy.listen_port}" if user else f"127.0.0.1:{proxy.listen_port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def restart_later(proxy: Proxy, seconds: float) -> None:
    await asyncio.sleep(seconds)
    await proxy.start()


@pytest.mark.postgres
async def test_a_completion_is_announced_only_when_someone_waits_for_it(postgres_target: str) -> None:
    # A NOTIFY wakes every listening connection of the database: one per job would cost every
    # worker. A watched job's end (``wait``, ``logs -f``, ``run``) and a failure are announced.
    waiter = await PostgresStore.open(postgres_target)
    worker = await PostgresStore.open(postgres_target)
    now = datetime.now(UTC)
    completed = Outcome(state=JobState.COMPLETED, exit_code=0, error=None, started_at=now, finished_at=now)
    failed = Outcome(
        state=JobState.FAILED, exit_code=1, error="exit code 1", started_at=now, finished_at=now, retry_in=60
    )
    try:
        await worker.add_jobs([new("plain"), new("watched"), new("failing")])
        claims = {
            claim.job.id: claim for claim in await worker.claim(worker_id="w", queues=None, limit=3, lease=60)
        }
        await waiter.watch(["watched"])
        await waiter.wait_for_change(10)  # returns once its LISTEN connection is up

        async def woken_by(finishing: object) -> bool:
            waiting = asyncio.create_task(waiter.wait_for_change(30))
            await asyncio.sleep(0.1)
            began = time.monotonic()
            assert await finishing  # type: ignore[misc]
            try:
                await asyncio.wait_for(waiting, 2)
            except TimeoutError:
                return False
            return time.monotonic() - began < 2

        assert not await woken_by(worker.finish(claims["plain"], completed))
        await waiter.wait_for_change(0)  # the 2 s above may have ended in a stray wake: consume it
        assert await woken_by(worker.finish(claims["watched"], completed))
        assert await woken_by(worker.finish(claims["failing"], failed))
    finally:
        await waiter.close()
        await worker.close()


@pytest.mark.postgres
async def test_a_freed_slot_of_a_limited_queue_is_announced_unless_its_worker_takes_it_again(
    postgres_target: str,
) -> None:
    # Workers held back by a queue's concurrency limit wait for a slot: a completion there is
    # news, but not when the finishing worker's own claim, in the same statement, takes it.
    waiter = await PostgresStore.open(postgres_target)
    worker = await PostgresStore.open(postgres_target)
    now = datetime.now(UTC)
    completed = Outcome(state=JobState.COMPLETED, exit_code=0, error=None, started_at=now, finished_at=now)
    try:
        await worker.limit_queue("render", concurrency=2)
        await worker.add_jobs([new(job_id, queue="render") for job_id in ("a", "b", "c")])
        held = {
            claim.job.id: claim
            for claim in await worker.claim(worker_id="w", queues=None, limit=3, lease=60, flow=True)
        }
        assert sorted(held) == ["a", "b"]
        await waiter.wait_for_change(10)  # returns once its LISTEN connection is up

        async def woken_by(finishing: Awaitable[object]) -> bool:
            waiting = asyncio.create_task(waiter.wait_for_change(30))
            await asyncio.sleep(0.1)
            began = time.monotonic()
            await finishing
            try:
                await asyncio.wait_for(waiting, 2)
            except TimeoutError:
                return False
            return time.monotonic() - began < 2

        async def finish_and_claim(job_id: str) -> list[str]:
            accepted, claims = await worker.finish_and_claim(
                held.pop(job_id), completed, worker_id="w", queues=None, limit=1, lease=60, flow=True
            )
            assert accepted
            held.update((claim.job.id, claim) for claim in claims)
            return list(held)

        assert not await woken_by(finish_and_claim("a"))  # it took c: the queue is full again
        assert sorted(held) == ["b", "c"]
        await waiter.wait_for_change(0)  # the 2 s above may have ended in a stray wake: consume it
        assert await woken_by(finish_and_claim("b"))  # nothing left to take: a slot is free
        assert await woken_by(worker.finish(held.pop("c"), completed))  # no claim: a slot is free
    finally:
        await waiter.close()
        await worker.close()


@pytest.mark.postgres
async def test_a_short_outage_is_ridden_out(postgres_target: str, proxy: Proxy) -> None:
    store = await PostgresStore.open(through(proxy, postgres_target), retry_for=20)
    try:
        await store.add_jobs([new("a")])
        await store.wait_for_change(10)  # the LISTEN connection is up
        await proxy.cut()
        began = time.monotonic()
        # While the server is away, waiting degrades to sleeping: no error.
        await store.wait_for_change(0.2)
        restart = asyncio.create_task(restart_later(proxy, 1.0))
        (claim,) = await store.claim(worker_id="w", queues=None, limit=1, lease=60)
        await restart
        assert time.monotonic() - began >= 0.9
        assert claim.job.id == "a"
        assert await store.count_jobs() == {**dict.fromkeys(JobState, 0), JobState.PROCESSING: 1}
    finally:
        await store.close()


@pytest.mark.postgres
async def test_a_long_outage_raises_store_unavailable(postgres_target: str, proxy: Proxy) -> None:
    store = await PostgresStore.open(through(proxy, postgres_target), retry_for=1.0)
    try:
        await proxy.cut()
        began = time.monotonic()
        with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{proxy.listen_port}/") as caught:
            await store.get_job("a")
        assert 0.5 <= time.monotonic() - began < 10
        assert "\n" not in str(caught.value) and caught.value.__cause__ is not None
    finally:
        await proxy.start()
        await store.close()


@pytest.mark.postgres
async def test_lost_listener_comes_back(postgres_target: str, proxy: Proxy) -> None:
    waiter = await PostgresStore.open(through(proxy, postgres_target), retry_for=20)
    writer = await PostgresStore.open(postgres_target)
    try:
        await waiter.wait_for_change(10)
        await proxy.cut()
        await waiter.wait_for_change(0.1)  # notices, falls back to sleeping
        await proxy.start()
        # Reconnecting counts as a change, since notifications may have been missed.
        deadline = time.monotonic() + 20
        while True:
            began = time.monotonic()
            await waiter.wait_for_change(0.5)
            if time.monotonic() - began < 0.4:
                break
            assert time.monotonic() < deadline, "the LISTEN connection never came back"
        waiting = asyncio.create_task(waiter.wait_for_change(30))
        await asyncio.sleep(0.1)
        began = time.monotonic()
        await writer.add_jobs([new("a")])
        await asyncio.wait_for(waiting, 10)
        assert time.monotonic() - began < 5
    finally:
        await waiter.close()
        await writer.close()


@pytest.mark.postgres
async def test_store_closes_twice(postgres_target: str) -> None:
    store = await open_store(postgres_target)
    await store.close()
    await store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.count_jobs()


async def wait_for_state(store: PostgresStore, job_id: str, state: JobState) -> None:
    deadline = time.monotonic() + 20
    while {job.id: job.state for job in await store.list_jobs()}.get(job_id) is not state:
        assert time.monotonic() < deadline, f"{job_id} never became {state}"
        await asyncio.sleep(0.02)


@pytest.mark.postgres
async def test_writes_that_committed_before_the_connection_dropped_count(
    postgres_target: str, proxy: Proxy
) -> None:
    store = await PostgresStore.open(through(proxy, postgres_target), retry_for=20)
    observer = await PostgresStore.open(postgres_target)
    now = datetime.now(UTC)
    outcome = Outcome(state=JobState.COMPLETED, exit_code=0, error=None, started_at=now, finished_at=now)
    try:
        # Warm up: asyncpg prepares a statement on first use, one more reply to lose.
        await store.add_jobs([new("warm", priority=9, timeout=None, max_retries=0), new("job")])
        (warm,) = await store.claim(worker_id="w", queues=None, limit=1, lease=60)
        assert await store.finish(warm, outcome)

        # finish commits, the reply is lost, the retry sees its own outcome: True, not "lost".
        (claim,) = await store.claim(worker_id="w", queues=None, limit=1, lease=60)
        proxy.swallow_replies = True
        finishing = asyncio.create_task(store.finish(claim, outcome))
        await wait_for_state(observer, claim.job.id, JobState.COMPLETED)
        await proxy.cut()
        await proxy.start()
        assert await finishing is True

        # add_jobs commits, the reply is lost, the retry finds the jobs: success, not DuplicateJob.
        await store.add_jobs([new("warm-again", timeout=None, max_retries=0)])  # on the new connection
        proxy.swallow_replies = True
        batch = [new("a", timeout=None, max_retries=0), new("b", priority=5, timeout=5.0, max_retries=2)]
        adding = asyncio.create_task(store.add_jobs(batch))
        await wait_for_state(observer, "b", JobState.PENDING)
        await proxy.cut()
        await proxy.start()
        assert [job.id for job in await adding] == ["a", "b"]

        # An id taken before is still a duplicate.
        with pytest.raises(DuplicateJob, match="'a'"):
            await store.add_jobs([new("a", timeout=None, max_retries=0)])
    finally:
        await store.close()
        await observer.close()


@pytest.mark.postgres
async def test_finish_and_claim_after_a_lost_reply_reports_both_parts(
    postgres_target: str, proxy: Proxy
) -> None:
    store = await PostgresStore.open(through(proxy, postgres_target), retry_for=20)
    observer = await PostgresStore.open(postgres_target)
    now = datetime.now(UTC)
    outcome = Outcome(state=JobState.COMPLETED, exit_code=0, error=None, started_at=now, finished_at=now)
    try:
        jobs = [new("warm", priority=9), new("first", priority=5), new("next")]
        await store.add_jobs(jobs)
        (warm,) = await store.claim(worker_id="w", queues=None, limit=1, lease=60)
        # Warm up: asyncpg prepares the statement on first use, one more reply to lose.
        accepted, (first,) = await store.finish_and_claim(
            warm, outcome, worker_id="w", queues=None, limit=1, lease=60
        )
        assert accepted and first.job.id == "first"

        # The statement commits, its reply is lost; the retry must report what the first try did.
        proxy.swallow_replies = True
        writing = asyncio.create_task(
            store.finish_and_claim(first, outcome, worker_id="w", queues=None, limit=1, lease=60)
        )
        await wait_for_state(observer, "next", JobState.PROCESSING)
        await proxy.cut()
        await proxy.start()
        accepted, claims = await writing
        assert accepted is True
        assert [claim.job.id for claim in claims] == ["next"]
        assert await observer.finish(claims[0], outcome)  # the token handed over holds the job
        assert (await observer.get_job("first")).state is JobState.COMPLETED
    finally:
        await store.close()
        await observer.close()


@pytest.mark.postgres
async def test_the_relaxed_commit_of_results_ends_with_its_statement(postgres_target: str) -> None:
    import asyncpg

    from queuectl.storage.postgres import results

    store = await PostgresStore.open(postgres_target)
    try:
        await store.add_jobs([new("a"), new("b")])
        (claim,) = await store.claim(worker_id="w", queues=None, limit=1, lease=60)
    finally:
        await store.close()
    connection = await asyncpg.connect(postgres_target)
    try:
        rows = await connection.fetch(
            results.FINISH_AND_CLAIM_ANY_QUEUE,
            *(claim.job.id, claim.token, "completed", 0, None, None, datetime.now(UTC), b"", b"", 0.0, "c"),
            *("w", "host", 1, "completed"),  # the history entry's worker, host, pid and outcome
            *("w", 60.0, 1, "prefix."),
        )
        assert rows[0]["finished"] == 1 and rows[0]["id"] == "b"
        # Enqueues on the same pooled connection must still wait for the WAL flush.
        assert await connection.fetchval("SHOW synchronous_commit") == "on"
    finally:
        await connection.close()
