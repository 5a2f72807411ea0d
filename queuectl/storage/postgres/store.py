"""The shared store: PostgreSQL through asyncpg, for workers on several machines.

The database owns the clock here: every lease, ``run_at`` and heartbeat is
compared with ``now()`` on the server, never with a host's clock, because the
hosts' clocks may disagree. Claims use ``FOR UPDATE SKIP LOCKED``; every later
write is conditional on the claim's token. ``add_jobs``, ``finish``, ``release``
and the DLQ retries ``NOTIFY`` a channel that idle workers ``LISTEN`` on.

A dropped connection (a server restart, a failover) is retried with a short
backoff for ``retry_for`` seconds before the method raises ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import anyio

from queuectl.config import Settings, SettingValue, format_setting
from queuectl.errors import (
    DuplicateJob,
    JobNotFound,
    JobStateConflict,
    QueueError,
    StoreCorrupt,
    StoreError,
    StoreUnavailable,
)
from queuectl.models import UNSET, Claim, Job, JobState, NewJob, Outcome, WorkerInfo
from queuectl.storage.postgres import schema as sql
from queuectl.storage.postgres.schema import Connection, ListenConnection, Pool, Row, job_from_row, reason

try:
    import asyncpg
except ImportError as missing:  # pragma: no cover - exercised in a subprocess without the driver
    _MISSING_DRIVER: ImportError | None = missing
else:
    _MISSING_DRIVER = None

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: What the driver raises when the server or the connection fails.
_DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    ()
    if _MISSING_DRIVER
    else (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)
)


def _server_settings(url: str) -> dict[str, str]:
    """Name our sessions in ``pg_stat_activity``, unless the URL names them already."""
    return {} if "application_name=" in url else {"application_name": "queuectl"}


async def _keep_session(connection: Any) -> None:
    """Pool ``reset`` hook: our sessions hold no state, so skip asyncpg's extra round trip."""


class PostgresStore:
    """A job store in a PostgreSQL schema. Open it with ``await PostgresStore.open(url)``."""

    def __init__(
        self, url: str, pool: Pool, *, schema: str | None, retry_for: float, connect_timeout: float
    ) -> None:
        self.url = url
        self.where = sql.describe_target(url)
        self.retry_for = retry_for
        self.connect_timeout = connect_timeout
        self._pool = pool
        self._kept: Connection | None = None  # a free connection kept out of the pool (see _run)
        self._channel = sql.channel_name(schema)
        self._closed = False
        self._changed = asyncio.Event()
        self._listener: ListenConnection | None = None
        self._listening: asyncio.Task[None] | None = None
        self._listen_backoff = 1.0
        self._next_listen_at = 0.0

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        retry_for: float = 30.0,
        connect_timeout: float = 10.0,
        command_timeout: float = 60.0,
    ) -> PostgresStore:
        """Connect, then create or migrate the schema.

        ``retry_for``: how long methods keep retrying while the server is
        unreachable. ``connect_timeout``: how long one connection attempt may take.
        ``command_timeout``: how long one statement may take (a hung connection).
        """
        if _MISSING_DRIVER is not None:
            raise StoreUnavailable(
                "PostgreSQL support needs the extra: pip install 'queuectl[postgres]'"
            ) from _MISSING_DRIVER
        where = sql.describe_target(url)
        try:
            pool: Pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=4,
                timeout=connect_timeout,
                command_timeout=command_timeout,
                reset=_keep_session,
                server_settings=_server_settings(url),
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as error:
            raise sql.cannot_connect(where, url, error) from error
        try:
            connection = await pool.acquire()
            try:
                schema = await sql.migrate(connection, where)
            finally:
                await pool.release(connection)
        except BaseException as error:
            pool.terminate()
            if isinstance(error, (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
                raise StoreUnavailable(
                    f"cannot set up PostgreSQL at {where}: {reason(error, url)}"
                ) from error
            raise
        return cls(url, pool, schema=schema, retry_for=retry_for, connect_timeout=connect_timeout)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            if self._listening is not None:
                self._listening.cancel()
                with contextlib.suppress(BaseException):
                    await self._listening
            listener, self._listener = self._listener, None
            if listener is not None:
                try:
                    await listener.close(timeout=5)
                except Exception:
                    listener.terminate()
            kept, self._kept = self._kept, None
            if kept is not None:
                with contextlib.suppress(Exception):
                    await self._pool.release(kept)
            try:
                await asyncio.wait_for(self._pool.close(), 10)
            except Exception:
                self._pool.terminate()

    # --- running statements --------------------------------------------------------------

    async def _run(self, operation: Callable[[Connection, bool], Awaitable[T]]) -> T:
        """Run ``operation`` on a pooled connection, retrying while the server is unreachable.

        ``operation`` gets a flag that is true when an earlier try may have taken
        effect (the connection dropped after the statement was sent).
        """
        if self._closed:
            raise StoreUnavailable(f"the store at {self.where} is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_for
        pause = 0.05
        maybe_applied = False
        retries = 0
        while True:
            sent = False
            try:
                connection, self._kept = self._kept, None
                if connection is not None and not _still_usable(connection):
                    with contextlib.suppress(Exception):
                        await self._pool.release(connection)
                    connection = None
                if connection is None:
                    connection = await self._pool.acquire()
                healthy = False
                try:
                    sent = True
                    result = await operation(connection, maybe_applied)
                    healthy = True
                    return result
                except _DRIVER_ERRORS:
                    # After a server restart a pooled connection can be left mid-operation
                    # ("cannot switch to state ..."): never hand it out again.
                    with contextlib.suppress(Exception):
                        connection.terminate()
                    raise
                finally:
                    # The worker's statements come one after another: keeping one connection
                    # out of the pool between them saves asyncpg's release and acquire, which
                    # cost more CPU than the round trip itself.
                    if healthy and self._kept is None and not self._closed:
                        self._kept = connection
                    else:
                        with contextlib.suppress(Exception):
                            await self._pool.release(connection)
            except QueueError:
                raise
            except _DRIVER_ERRORS as error:
                if self._closed or not sql.is_transient(error):
                    raise self._error(error) from error
                maybe_applied = maybe_applied or (sent and not sql.surely_rolled_back(error))
                if loop.time() + pause > deadline:
                    raise StoreUnavailable(
                        f"lost PostgreSQL at {self.where} and could not reconnect within"
                        f" {self.retry_for:g}s: {reason(error, self.url)}"
                    ) from error
                logger.log(
                    logging.DEBUG if retries else logging.WARNING,
                    "PostgreSQL at %s: %s; retrying for up to %gs",
                    self.where,
                    reason(error, self.url),
                    self.retry_for,
                )
                retries += 1
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)

    def _error(self, error: BaseException) -> StoreError:
        text = reason(error, self.url)
        if isinstance(error, (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError)):
            return StoreCorrupt(f"the store at {self.where} is not a queuectl database or is damaged: {text}")
        if self._closed or (isinstance(error, asyncpg.InterfaceError) and "closed" in str(error)):
            return StoreUnavailable(f"the store at {self.where} is closed")
        return StoreError(f"PostgreSQL at {self.where} failed: {text}")

    async def _fetch(self, query: str, *args: object) -> list[Row]:
        async def fetch(connection: Connection, _retried: bool) -> list[Row]:
            return await connection.fetch(query, *args)

        return await self._run(fetch)

    # --- jobs ----------------------------------------------------------------------------

    async def add_jobs(self, jobs: Sequence[NewJob]) -> list[Job]:
        if not jobs:
            return []
        ids = [job.id for job in jobs]
        if len(set(ids)) < len(ids):
            repeated = next(job_id for job_id, count in Counter(ids).items() if count > 1)
            raise DuplicateJob(f"the job id {repeated!r} is given more than once")
        needs_settings = any(job.timeout is UNSET or job.max_retries is UNSET for job in jobs)
        settings = await self.settings() if needs_settings else Settings()
        timeouts = [settings.default_timeout if job.timeout is UNSET else job.timeout for job in jobs]
        retries = [settings.max_retries if job.max_retries is UNSET else job.max_retries for job in jobs]
        arguments = (
            ids,
            [job.command for job in jobs],
            [job.queue for job in jobs],
            [job.priority for job in jobs],
            timeouts,
            retries,
            [job.run_at for job in jobs],
            [sql.seconds(job.delay or 0.0) for job in jobs],
            self._channel,
        )

        loop = asyncio.get_running_loop()
        began = loop.time()

        async def insert(connection: Connection, retried: bool) -> list[Row]:
            try:
                return await connection.fetch(sql.INSERT_JOBS, *arguments)
            except asyncpg.UniqueViolationError as error:
                # After a dropped connection the first try may have committed.
                window = loop.time() - began + 5.0
                if retried and (ours := await self._already_added(connection, arguments, window)):
                    return ours
                raise await self._duplicate(connection, ids) from error

        by_id = {row["id"]: job_from_row(row) for row in await self._run(insert)}
        return [by_id[job_id] for job_id in ids]

    @staticmethod
    async def _already_added(connection: Connection, arguments: tuple[Any, ...], window: float) -> list[Row]:
        """The batch's rows if an earlier try of it committed: all there, as sent, just now."""
        rows = await connection.fetch(
            f"SELECT {sql.JOB_COLUMNS} FROM jobs WHERE id = ANY($1::text[])"
            " AND created_at >= now() - $2::float8 * interval '1 second'",
            arguments[0],
            window,
        )
        fields = ("id", "command", "queue", "priority", "timeout", "max_retries")
        stored = {tuple(row[field] for field in fields) for row in rows}
        return rows if stored == set(zip(*arguments[:6], strict=True)) else []

    @staticmethod
    async def _duplicate(connection: Connection, ids: list[str]) -> DuplicateJob:
        rows = await connection.fetch("SELECT id FROM jobs WHERE id = ANY($1::text[])", ids)
        taken = {row["id"] for row in rows}
        first = next((job_id for job_id in ids if job_id in taken), None)
        return DuplicateJob(None if first is None else f"a job with id {first!r} already exists")

    async def get_job(self, job_id: str) -> Job:
        rows = await self._fetch(f"SELECT {sql.JOB_COLUMNS}, stdout, stderr FROM jobs WHERE id = $1", job_id)
        if not rows:
            raise JobNotFound(f"no job with id {job_id!r}")
        return job_from_row(rows[0], with_output=True)

    async def list_jobs(
        self, *, state: JobState | None = None, queue: str | None = None, limit: int | None = None
    ) -> list[Job]:
        state_value = None if state is None else state.value
        no_limit = limit is None or limit < 0  # as SQLite reads LIMIT -1
        rows = await self._fetch(sql.LIST_JOBS, state_value, queue, None if no_limit else limit)
        return [job_from_row(row) for row in rows]

    async def count_jobs(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for row in await self._fetch("SELECT state, count(*) AS n FROM jobs GROUP BY state"):
            counts[JobState(row["state"])] = int(row["n"])
        return counts

    async def earliest_run_at(self) -> datetime | None:
        rows = await self._fetch(
            "SELECT min(run_at) AS earliest FROM jobs WHERE state IN ('pending', 'failed')"
        )
        earliest: datetime | None = rows[0]["earliest"]
        return earliest

    async def next_run_at(self, queues: Sequence[str] | None = None) -> float | None:
        rows = await self._fetch(
            # Not min(run_at) - now(): asyncpg stores datetime.max as infinity, which cannot
            # be subtracted; extract() gives it as an infinite number of seconds.
            "SELECT (extract(epoch FROM min(run_at)) - extract(epoch FROM now()))::float8 AS seconds"
            " FROM jobs WHERE state IN ('pending', 'failed')"
            " AND (cardinality($1::text[]) = 0 OR queue = ANY($1::text[]))",
            list(queues or ()),
        )
        seconds = rows[0]["seconds"]
        return None if seconds is None else float(seconds)

    # --- claims --------------------------------------------------------------------------

    async def claim(
        self, *, worker_id: str, queues: Sequence[str] | None, limit: int, lease: float
    ) -> list[Claim]:
        if limit <= 0:
            return []
        take, _ = self._claim_work(worker_id, queues, limit, lease)
        return _best_first(await self._run(take))

    def _claim_work(
        self, worker_id: str, queues: Sequence[str] | None, limit: int, lease: float
    ) -> tuple[Callable[[Connection, bool], Awaitable[list[Row]]], tuple[Any, ...]]:
        """The claim as retryable work, and its arguments: worker, lease, limit, prefix(, queues)."""
        # If the connection drops after the claim committed, the retry must hand over what the
        # first try took: else those jobs would wait out their lease and count an attempt that
        # never ran (straight to the DLQ with max_retries 0). Their tokens start with ``prefix``.
        prefix = f"{uuid.uuid4().hex}."
        # None or empty: every queue, as in the SQLite store.
        statement, only = (sql.CLAIM_QUEUES, [list(queues)]) if queues else (sql.CLAIM_ANY_QUEUE, [])

        async def take(connection: Connection, retried: bool) -> list[Row]:
            rows = await connection.fetch(sql.CLAIMED_BEFORE, worker_id, prefix) if retried else []
            if len(rows) < limit:
                more = limit - len(rows)
                rows += await connection.fetch(statement, worker_id, sql.seconds(lease), more, prefix, *only)
            return rows

        return take, (worker_id, sql.seconds(lease), limit, prefix, *only)

    async def renew(self, *, worker_id: str, tokens: Sequence[str], lease: float) -> set[str]:
        if not tokens:
            return set()
        rows = await self._fetch(sql.RENEW, worker_id, list(tokens), sql.seconds(lease))
        return {row["claim_token"] for row in rows}

    async def finish(self, claim: Claim, outcome: Outcome) -> bool:
        write, _ = self._finish_work(claim, outcome)
        return await self._run(write)

    async def finish_and_claim(
        self,
        claim: Claim,
        outcome: Outcome,
        *,
        worker_id: str,
        queues: Sequence[str] | None,
        limit: int,
        lease: float,
    ) -> tuple[bool, list[Claim]]:
        if limit <= 0:
            return await self.finish(claim, outcome), []
        write, finish_arguments = self._finish_work(claim, outcome)
        take, claim_arguments = self._claim_work(worker_id, queues, limit, lease)
        statement = sql.FINISH_AND_CLAIM_QUEUES if queues else sql.FINISH_AND_CLAIM_ANY_QUEUE
        arguments = (*finish_arguments, *claim_arguments)

        async def both(connection: Connection, retried: bool) -> tuple[bool, list[Row]]:
            if retried:  # the first try may have committed: each part checks on its own
                return await write(connection, retried), await take(connection, retried)
            rows = await connection.fetch(statement, *arguments)
            return bool(rows[0]["finished"]), [row for row in rows if row["claim_token"] is not None]

        accepted, rows = await self._run(both)
        return accepted, _best_first(rows)

    def _finish_work(
        self, claim: Claim, outcome: Outcome
    ) -> tuple[Callable[[Connection, bool], Awaitable[bool]], tuple[Any, ...]]:
        """Recording the outcome as retryable work, and ``sql.FINISH``'s arguments."""
        arguments = (
            claim.job.id,
            claim.token,
            outcome.state.value,
            outcome.exit_code,
            outcome.error,
            outcome.started_at,
            outcome.finished_at,
            outcome.stdout,
            outcome.stderr,
            sql.seconds(outcome.retry_in),
            self._channel,
        )

        async def write(connection: Connection, retried: bool) -> bool:
            if await connection.fetch(sql.FINISH, *arguments):
                return True
            # After a dropped connection the first try may have committed: it did if
            # the job now shows exactly this outcome and nobody holds it.
            return retried and bool(
                await connection.fetch(
                    "SELECT 1 FROM jobs WHERE id = $1 AND state = $2 AND finished_at = $3"
                    " AND claim_token IS NULL",
                    claim.job.id,
                    outcome.state.value,
                    outcome.finished_at,
                )
            )

        return write, arguments

    async def release(self, claim: Claim) -> bool:
        return bool(await self._fetch(sql.RELEASE, claim.job.id, claim.token, self._channel))

    async def lapsed_claims(self) -> list[Claim]:
        rows = await self._fetch(sql.LAPSED)
        return [Claim(job=job_from_row(row), token=row["claim_token"]) for row in rows]

    async def has_unfinished(self, queues: Sequence[str] | None) -> bool:
        rows = await self._fetch(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE state IN ('pending', 'failed', 'processing')"
            " AND ($1::text[] IS NULL OR queue = ANY($1::text[]))) AS found",
            list(queues) if queues else None,
        )
        return bool(rows[0]["found"])

    # --- dead-letter queue ---------------------------------------------------------------

    async def retry_dead(self, job_ids: Sequence[str]) -> list[Job]:
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return []

        async def revive(connection: Connection, _retried: bool) -> list[Row]:
            async with connection.transaction():
                found = await connection.fetch(
                    "SELECT id, state FROM jobs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE", ids
                )
                states = {row["id"]: row["state"] for row in found}
                for job_id in ids:
                    if job_id not in states:
                        raise JobNotFound(f"no job with id {job_id!r}")
                    if states[job_id] != JobState.DEAD.value:
                        raise JobStateConflict(f"job {job_id!r} is not dead (it is {states[job_id]})")
                return await connection.fetch(sql.REVIVE_SOME, self._channel, ids)

        by_id = {row["id"]: job_from_row(row) for row in await self._run(revive)}
        return [by_id[job_id] for job_id in ids]

    async def retry_all_dead(self) -> list[Job]:
        rows = await self._fetch(sql.REVIVE_ALL, self._channel)
        rows.sort(key=lambda row: (row["created_at"], row["seq"]), reverse=True)
        return [job_from_row(row) for row in rows]

    # --- settings ------------------------------------------------------------------------

    async def settings(self) -> Settings:
        rows = await self._fetch("SELECT key, value FROM settings")
        return Settings.from_stored({row["key"]: row["value"] for row in rows})

    async def set_setting(self, key: str, value: SettingValue) -> None:
        await self._fetch(
            "INSERT INTO settings (key, value) VALUES ($1, $2)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            key,
            format_setting(value),
        )

    # --- workers -------------------------------------------------------------------------

    async def register_worker(self, *, worker_id: str, host: str, pid: int) -> None:
        await self._fetch(sql.REGISTER_WORKER, worker_id, host.replace("\x00", ""), pid)

    async def heartbeat(self, *, worker_id: str, running: int) -> bool:
        rows = await self._fetch(
            "UPDATE workers SET heartbeat_at = now(), running = $2 WHERE id = $1 RETURNING stop_requested",
            worker_id,
            running,
        )
        return bool(rows and rows[0]["stop_requested"])

    async def stop_requested(self, worker_id: str) -> bool:
        rows = await self._fetch("SELECT stop_requested FROM workers WHERE id = $1", worker_id)
        return bool(rows and rows[0]["stop_requested"])

    async def unregister_worker(self, worker_id: str) -> None:
        await self._fetch("DELETE FROM workers WHERE id = $1", worker_id)

    async def list_workers(self, *, stale_after: float) -> list[WorkerInfo]:
        rows = await self._fetch(sql.LIVE_WORKERS, sql.seconds(stale_after))
        return [
            WorkerInfo(
                id=row["id"],
                host=row["host"],
                pid=row["pid"],
                started_at=row["started_at"],
                heartbeat_at=row["heartbeat_at"],
                running=row["running"],
            )
            for row in rows
        ]

    async def request_stop(self, *, stale_after: float) -> int:
        rows = await self._fetch(
            "UPDATE workers SET stop_requested = true"
            " WHERE heartbeat_at > now() - $1::float8 * interval '1 second' RETURNING id",
            sql.seconds(stale_after),
        )
        return len(rows)

    # --- wake-ups ------------------------------------------------------------------------

    async def wait_for_change(self, timeout: float) -> None:
        """Wait for a NOTIFY from any process (or ``timeout``).

        The first call opens a dedicated LISTEN connection in the background. While
        it is down, this is a plain sleep (the caller polls), and reconnecting is
        retried with a backoff. A (re)connect counts as a change: notifications may
        have been missed meanwhile.
        """
        self._keep_listening()
        changed = self._changed
        if not changed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), max(timeout, 0.0))
        if changed.is_set() and self._changed is changed:
            self._changed = asyncio.Event()  # consumed: the next wait waits for a new change

    def _keep_listening(self) -> None:
        listener = self._listener
        if listener is not None and not listener.is_closed():
            return
        self._listener = None
        if self._closed or (self._listening is not None and not self._listening.done()):
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_listen_at:
            return
        self._listening = loop.create_task(self._listen(), name="queuectl-postgres-listen")

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        listener: ListenConnection | None = None
        try:
            listener = await asyncpg.connect(
                self.url, timeout=self.connect_timeout, server_settings=_server_settings(self.url)
            )
            assert listener is not None
            await listener.add_listener(self._channel, self._on_notify)
            listener.add_termination_listener(self._on_listener_lost)
        except Exception as error:  # a background task: log, fall back to polling, retry later
            if listener is not None:
                listener.terminate()
            self._next_listen_at = loop.time() + self._listen_backoff
            self._listen_backoff = min(self._listen_backoff * 2, 30.0)
            logger.info(
                "cannot LISTEN on PostgreSQL at %s (%s); polling instead", self.where, reason(error, self.url)
            )
            return
        if self._closed:
            listener.terminate()
            return
        self._listener = listener
        self._listen_backoff = 1.0
        self._changed.set()

    def _on_notify(self, *_args: object) -> None:
        self._changed.set()

    def _on_listener_lost(self, *_args: object) -> None:
        self._listener = None
        if not self._closed:
            logger.info(
                "lost the LISTEN connection to PostgreSQL at %s; polling until it is back", self.where
            )


def _still_usable(connection: Connection) -> bool:
    """Whether a connection kept out of the pool can run a statement now."""
    try:
        return not connection.is_closed()
    except asyncpg.InterfaceError:  # its connection was lost: asyncpg took it back to the pool
        return False


def _best_first(rows: list[Row]) -> list[Claim]:
    """RETURNING gives no order; hand out the best job first."""
    return [
        Claim(job=job_from_row(row), token=row["claim_token"]) for row in sorted(rows, key=sql.best_first)
    ]
