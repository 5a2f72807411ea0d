"""The default store: one SQLite file, shared safely by many processes (WAL, atomic claims).

Python owns the clock here: every time is ``self.clock()`` (epoch seconds),
passed into the SQL, so tests can move time without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import anyio

from queuectl.config import Settings, SettingValue, format_setting
from queuectl.errors import DuplicateJob, JobNotFound, JobStateConflict, StoreError
from queuectl.models import Claim, Job, JobState, NewJob, Outcome, WorkerInfo
from queuectl.storage.sqlite import schema as sqlite_schema
from queuectl.storage.sqlite.lane import Lane, fetch_all
from queuectl.storage.sqlite.rows import (
    CLAIM_COLUMNS,
    FULL_COLUMNS,
    INSERT,
    SUMMARY_COLUMNS,
    at,
    claim_from_row,
    epoch,
    insert_rows,
    job_from_row,
    needs_settings,
    stored_job,
)
from queuectl.storage.sqlite.schema import translate_errors
from queuectl.storage.sqlite.watch import ChangeWatcher

Clock = Callable[[], float]
T = TypeVar("T")

logger = logging.getLogger(__name__)

#: How often, at most, a store checks the size of its WAL after recording a result. After a
#: checkpoint that a reader blocked, the wait doubles up to ``WAL_CHECK_MAX_SECONDS``: a reader
#: that never lets go must not hold up every writer again and again.
WAL_CHECK_SECONDS = 1.0
WAL_CHECK_MAX_SECONDS = 60.0
#: The lane never checkpoints (see ``sqlite_lane``): after this many of its transactions a
#: passive checkpoint runs on aiosqlite's thread, about as often as SQLite's own would (every
#: ~1,000 WAL pages: a job's result and next claim write six or seven).
CHECKPOINT_EVERY = 150


def _finish_statement(run_at: str) -> str:
    return (
        f"UPDATE jobs SET state = ?, {run_at} exit_code = ?, last_error = ?,"
        " started_at = coalesce(?, started_at), finished_at = ?, stdout = ?, stderr = ?,"
        " worker_id = NULL, claim_token = NULL, lease_expires_at = NULL, updated_at = ?"
        " WHERE id = ? AND claim_token = ? AND state = 'processing' RETURNING 1"
    )


_FINISH = _finish_statement("")
_FINISH_RETRY = _finish_statement("run_at = ?,")  # a failed job comes due again after its backoff


def _best_first(rows: list[Any]) -> list[Claim]:
    """RETURNING gives no order; hand out the best job first."""
    claims = [claim_from_row(row) for row in rows]
    if len(claims) > 1:
        claims.sort(key=lambda c: (-c.job.priority, c.job.run_at, c.job.created_at))
    return claims


class SqliteStore:
    """A job store in one SQLite file. Open it with ``await SqliteStore.open(path)``."""

    def __init__(self, path: Path, db: aiosqlite.Connection, lane: Lane, *, clock: Clock) -> None:
        self.path = path
        self.clock = clock
        self._db = db
        self._lane = lane  # claims and results: the worker's hot path
        self._durable: aiosqlite.Connection | None = None
        self._watcher = ChangeWatcher(path)
        self._watcher.changed()  # the baseline: changes from now on wake waiters
        self._claim_sql: dict[int, str] = {}
        self._defaults: tuple[float, Settings] | None = None  # (read at, settings) for add_jobs
        self._wal_check_at = 0.0  # time.monotonic(): maintenance cadence, not job time
        self._wal_check_every = WAL_CHECK_SECONDS
        self._lane_writes = 0  # since the last checkpoint
        self._checkpoint: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: Path, *, clock: Clock = time.time) -> SqliteStore:
        """Check, create or migrate the file, then connect. Never modifies a foreign file."""
        await anyio.to_thread.run_sync(sqlite_schema.prepare, path)
        db = await cls._connect(path, durable=False)
        try:
            with translate_errors(path):
                lane = await Lane.open(path)
        except BaseException:
            await db.close()
            raise
        return cls(path, db, lane, clock=clock)

    @staticmethod
    async def _connect(path: Path, *, durable: bool) -> aiosqlite.Connection:
        with translate_errors(path):
            db = await aiosqlite.connect(
                path,
                timeout=sqlite_schema.BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                await db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            except BaseException:
                await db.close()
                raise
        return db

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            if self._checkpoint is not None:
                await asyncio.gather(self._checkpoint, return_exceptions=True)
            for connection in (self._db, self._durable):
                if connection is not None:
                    await connection.close()
            self._durable = None
            self._lane.close()
            self._watcher.close()

    async def _durable_db(self) -> aiosqlite.Connection:
        """The connection that fsyncs each commit: used for what users hand us."""
        if self._durable is None:
            self._durable = await self._connect(self.path, durable=True)
        return self._durable

    async def _fetch(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        with translate_errors(self.path):
            return list(await self._db.execute_fetchall(sql, parameters))

    def _wake_local_waiters(self) -> None:
        self._watcher.wake()

    # --- jobs ------------------------------------------------------------------------------

    async def add_jobs(self, jobs: Sequence[NewJob]) -> list[Job]:
        if not jobs:
            return []
        settings = await self._enqueue_defaults() if needs_settings(jobs) else None
        rows = insert_rows(jobs, settings, self.clock())
        db = await self._durable_db()
        with translate_errors(self.path):
            try:
                if len(rows) == 1:
                    await db.execute_fetchall(INSERT, rows[0])
                else:
                    await db.execute("BEGIN IMMEDIATE")
                    try:
                        await db.executemany(INSERT, rows)
                        await db.execute("COMMIT")
                    except BaseException:
                        with anyio.CancelScope(shield=True):
                            await self._rollback(db)
                        raise
            except sqlite3.IntegrityError as error:
                raise await self._duplicate_error(jobs) from error
        self._wake_local_waiters()
        return [stored_job(row) for row in rows]

    @staticmethod
    async def _rollback(db: aiosqlite.Connection) -> None:
        """Roll back unless SQLite already did (see ``sqlite_schema.rollback``)."""
        if db.in_transaction:
            await db.execute("ROLLBACK")

    async def _duplicate_error(self, jobs: Sequence[NewJob]) -> DuplicateJob:
        ids = [job.id for job in jobs]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            found = await self._fetch(f"SELECT id FROM jobs WHERE id IN ({marks}) LIMIT 1", chunk)
            if found:
                return DuplicateJob(f"a job with id {found[0][0]!r} already exists")
        return DuplicateJob()

    async def get_job(self, job_id: str) -> Job:
        rows = await self._fetch(f"SELECT {FULL_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise JobNotFound(f"no job with id {job_id!r}")
        return job_from_row(rows[0])

    async def list_jobs(
        self, *, state: JobState | None = None, queue: str | None = None, limit: int | None = None
    ) -> list[Job]:
        where, parameters = [], []
        if state is not None:
            where.append("state = ?")
            parameters.append(state.value)
        if queue is not None:
            where.append("queue = ?")
            parameters.append(queue)
        sql = f"SELECT {SUMMARY_COLUMNS} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, seq DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [job_from_row(row) for row in await self._fetch(sql, parameters)]

    async def count_jobs(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for state, count in await self._fetch("SELECT state, count(*) FROM jobs GROUP BY state"):
            counts[JobState(state)] = count
        return counts

    async def earliest_run_at(self) -> datetime | None:
        rows = await self._fetch(
            "SELECT min(run_at) FROM jobs INDEXED BY jobs_waiting_run_at WHERE state IN ('pending', 'failed')"
        )
        return None if rows[0][0] is None else at(rows[0][0])

    async def next_run_at(self, queues: Sequence[str] | None = None) -> float | None:
        queue_list = list(queues or ())
        queue_filter = f" AND queue IN ({', '.join('?' * len(queue_list))})" if queue_list else ""
        rows = await self._fetch_on_lane(
            "SELECT min(run_at) FROM jobs INDEXED BY jobs_waiting_run_at"
            f" WHERE state IN ('pending', 'failed'){queue_filter}",
            queue_list,
            writes=False,
        )
        earliest = rows[0][0]
        return None if earliest is None else earliest - self.clock()

    # --- claims ----------------------------------------------------------------------------

    def _claim_statement(self, queue_count: int) -> str:
        sql = self._claim_sql.get(queue_count)
        if sql is None:
            queue_filter = f" AND queue IN ({', '.join('?' * queue_count)})" if queue_count else ""
            sql = (
                "UPDATE jobs SET state = 'processing', attempts = attempts + 1, worker_id = ?,"
                " claim_token = lower(hex(randomblob(8))), lease_expires_at = ?, started_at = ?,"
                " updated_at = ?"
                # SQLite keeps no statistics and would sort every waiting job; the partial index
                # is already in claim order, so the claim reads LIMIT rows.
                " WHERE seq IN (SELECT seq FROM jobs INDEXED BY jobs_due WHERE state IN ('pending', 'failed')"
                f" AND run_at <= ?{queue_filter}"
                " ORDER BY priority DESC, run_at, created_at, seq LIMIT ?)"
                f" RETURNING {CLAIM_COLUMNS}"
            )
            self._claim_sql[queue_count] = sql
        return sql

    async def claim(
        self, *, worker_id: str, queues: Sequence[str] | None, limit: int, lease: float
    ) -> list[Claim]:
        if limit <= 0:
            return []
        statement, parameters = self._claim_parameters(worker_id, queues, limit, lease)
        rows = await self._fetch_on_lane(statement, parameters, writes=False)
        if rows:  # an idle worker's empty claims write nothing
            self._count_write()
        return _best_first(rows)

    def _claim_parameters(
        self, worker_id: str, queues: Sequence[str] | None, limit: int, lease: float
    ) -> tuple[str, tuple[Any, ...]]:
        now = self.clock()
        queue_list = list(queues or ())
        return self._claim_statement(len(queue_list)), (
            worker_id,
            now + lease,
            now,
            now,
            now,
            *queue_list,
            limit,
        )

    async def _fetch_on_lane(
        self, sql: str, parameters: Sequence[Any] = (), *, writes: bool = True
    ) -> list[Any]:
        return await self._on_lane(fetch_all(sql, tuple(parameters)), writes=writes)

    async def _on_lane(self, work: Callable[[sqlite3.Connection], T], *, writes: bool = True) -> T:
        with translate_errors(self.path):
            result = await self._lane.run(work)
        if writes:
            self._count_write()
        return result

    def _count_write(self) -> None:
        """Start a checkpoint in the background every ``CHECKPOINT_EVERY`` writes of the lane."""
        self._lane_writes += 1
        if self._lane_writes >= CHECKPOINT_EVERY and (self._checkpoint is None or self._checkpoint.done()):
            self._lane_writes = 0
            self._checkpoint = asyncio.get_running_loop().create_task(
                self._checkpoint_wal(), name="queuectl-sqlite-checkpoint"
            )

    async def _checkpoint_wal(self) -> None:
        def checkpoint(connection: sqlite3.Connection) -> None:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

        try:
            with translate_errors(self.path):
                await self._lane.run_in_thread(checkpoint)
        except StoreError as error:  # the next one tries again; the WAL is bounded anyway
            logger.warning("could not checkpoint the WAL: %s", error)

    async def renew(self, *, worker_id: str, tokens: Sequence[str], lease: float) -> set[str]:
        if not tokens:
            return set()
        marks = ", ".join("?" * len(tokens))
        rows = await self._fetch_on_lane(
            f"UPDATE jobs SET lease_expires_at = ? WHERE worker_id = ? AND state = 'processing'"
            f" AND claim_token IN ({marks}) RETURNING claim_token",
            (self.clock() + lease, worker_id, *tokens),
        )
        return {row[0] for row in rows}

    async def finish(self, claim: Claim, outcome: Outcome) -> bool:
        rows = await self._fetch_on_lane(*self._finish_parameters(claim, outcome))
        await self._limit_wal()
        return bool(rows)

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
        finish = self._finish_parameters(claim, outcome)
        take = self._claim_parameters(worker_id, queues, limit, lease)

        def work(connection: sqlite3.Connection) -> tuple[bool, list[Any]]:
            connection.execute("BEGIN IMMEDIATE")
            try:
                finished = connection.execute(*finish).fetchall()
                claimed = connection.execute(*take).fetchall()
                connection.execute("COMMIT")
            except BaseException:
                sqlite_schema.rollback(connection)
                raise
            return bool(finished), claimed

        accepted, rows = await self._on_lane(work)
        await self._limit_wal()
        return accepted, _best_first(rows)

    def _finish_parameters(self, claim: Claim, outcome: Outcome) -> tuple[str, tuple[Any, ...]]:
        now = self.clock()
        failed = outcome.state is JobState.FAILED
        sql = _FINISH_RETRY if failed else _FINISH
        return sql, (
            outcome.state.value,
            *((now + outcome.retry_in,) if failed else ()),
            outcome.exit_code,
            outcome.error,
            epoch(outcome.started_at),
            epoch(outcome.finished_at),
            outcome.stdout,
            outcome.stderr,
            now,
            claim.job.id,
            claim.token,
        )

    async def _limit_wal(self) -> None:
        """Keep the WAL bounded when readers starve SQLite's own checkpoints (``shrink_wal``).

        Done after recording a result, the write every job makes, as SQLite runs its own
        checkpoints after commits. Never raises: the result is already recorded.
        """
        if time.monotonic() < self._wal_check_at:
            return
        self._wal_check_at = float("inf")  # one check at a time in this process
        completed: bool | None = False
        try:
            completed = await anyio.to_thread.run_sync(sqlite_schema.shrink_wal, self.path)
        except StoreError as error:
            logger.warning("could not checkpoint the WAL: %s", error)
        finally:
            if completed is False:
                self._wal_check_every = min(self._wal_check_every * 2, WAL_CHECK_MAX_SECONDS)
            else:
                self._wal_check_every = WAL_CHECK_SECONDS
            self._wal_check_at = time.monotonic() + self._wal_check_every

    async def release(self, claim: Claim) -> bool:
        rows = await self._fetch_on_lane(
            "UPDATE jobs SET state = 'pending', attempts = max(attempts - 1, 0), worker_id = NULL,"
            " claim_token = NULL, lease_expires_at = NULL, updated_at = ?"
            " WHERE id = ? AND claim_token = ? AND state = 'processing' RETURNING 1",
            (self.clock(), claim.job.id, claim.token),
        )
        if rows:
            self._wake_local_waiters()
        return bool(rows)

    async def lapsed_claims(self) -> list[Claim]:
        rows = await self._fetch(
            f"SELECT {CLAIM_COLUMNS} FROM jobs WHERE state = 'processing' AND lease_expires_at < ?",
            (self.clock(),),
        )
        return [claim_from_row(row) for row in rows]

    async def has_unfinished(self, queues: Sequence[str] | None) -> bool:
        queue_list = list(queues or ())
        queue_filter = f" AND queue IN ({', '.join('?' * len(queue_list))})" if queue_list else ""
        rows = await self._fetch_on_lane(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE state IN ('pending', 'failed', 'processing')"
            f"{queue_filter})",
            queue_list,
            writes=False,
        )
        return bool(rows[0][0])

    # --- dead-letter queue -----------------------------------------------------------------

    async def retry_dead(self, job_ids: Sequence[str]) -> list[Job]:
        db = await self._durable_db()
        with translate_errors(self.path):
            await db.execute("BEGIN IMMEDIATE")
            try:
                for job_id in dict.fromkeys(job_ids):
                    found = list(await db.execute_fetchall("SELECT state FROM jobs WHERE id = ?", (job_id,)))
                    if not found:
                        raise JobNotFound(f"no job with id {job_id!r}")
                    if found[0][0] != JobState.DEAD.value:
                        raise JobStateConflict(f"job {job_id!r} is not dead (it is {found[0][0]})")
                rows = await self._revive(db, list(dict.fromkeys(job_ids)))
                await db.execute("COMMIT")
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._rollback(db)
                raise
        self._wake_local_waiters()
        return rows

    async def retry_all_dead(self) -> list[Job]:
        db = await self._durable_db()
        with translate_errors(self.path):
            rows = [
                job_from_row(row)
                for row in await db.execute_fetchall(
                    f"UPDATE jobs SET state = 'pending', attempts = 0, run_at = ?, updated_at = ?"
                    f" WHERE state = 'dead' RETURNING {SUMMARY_COLUMNS}",
                    (self.clock(), self.clock()),
                )
            ]
        self._wake_local_waiters()
        return sorted(rows, key=lambda job: job.created_at, reverse=True)

    async def _revive(self, db: aiosqlite.Connection, job_ids: list[str]) -> list[Job]:
        now = self.clock()
        revived: list[Job] = []
        for job_id in job_ids:
            rows = await db.execute_fetchall(
                f"UPDATE jobs SET state = 'pending', attempts = 0, run_at = ?, updated_at = ?"
                f" WHERE id = ? RETURNING {SUMMARY_COLUMNS}",
                (now, now, job_id),
            )
            revived.extend(job_from_row(row) for row in rows)
        return revived

    # --- settings --------------------------------------------------------------------------

    async def settings(self) -> Settings:
        rows = await self._fetch("SELECT key, value FROM settings")
        settings = Settings.from_stored({key: value for key, value in rows})
        self._defaults = (time.monotonic(), settings)
        return settings

    async def _enqueue_defaults(self) -> Settings:
        """The settings that fill unset fields, read again after a poll interval (1 s at most).

        A read per enqueue would cost a third of an embedded enqueue; settings reach
        running workers within a poll interval, and so they reach enqueuers.
        """
        if self._defaults is not None:
            read_at, settings = self._defaults
            if time.monotonic() - read_at < min(settings.poll_interval, 1.0):
                return settings
        return await self.settings()

    async def set_setting(self, key: str, value: SettingValue) -> None:
        self._defaults = None
        db = await self._durable_db()
        with translate_errors(self.path):
            await db.execute_fetchall(
                "INSERT INTO settings (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, format_setting(value)),
            )

    # --- workers ---------------------------------------------------------------------------

    async def register_worker(self, *, worker_id: str, host: str, pid: int) -> None:
        now = self.clock()
        await self._fetch(
            "INSERT INTO workers (id, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)",
            (worker_id, host, pid, now, now),
        )

    async def heartbeat(self, *, worker_id: str, running: int) -> bool:
        rows = await self._fetch(
            "UPDATE workers SET heartbeat_at = ?, running = ? WHERE id = ? RETURNING stop_requested",
            (self.clock(), running, worker_id),
        )
        return bool(rows and rows[0][0])

    async def stop_requested(self, worker_id: str) -> bool:
        rows = await self._fetch("SELECT stop_requested FROM workers WHERE id = ?", (worker_id,))
        return bool(rows and rows[0][0])

    async def unregister_worker(self, worker_id: str) -> None:
        await self._fetch("DELETE FROM workers WHERE id = ?", (worker_id,))

    async def list_workers(self, *, stale_after: float) -> list[WorkerInfo]:
        rows = await self._fetch(
            "SELECT id, host, pid, started_at, heartbeat_at, running FROM workers"
            " WHERE heartbeat_at > ? ORDER BY started_at, id",
            (self.clock() - stale_after,),
        )
        return [
            WorkerInfo(
                id=row[0],
                host=row[1],
                pid=row[2],
                started_at=datetime.fromtimestamp(row[3], UTC),
                heartbeat_at=datetime.fromtimestamp(row[4], UTC),
                running=row[5],
            )
            for row in rows
        ]

    async def request_stop(self, *, stale_after: float) -> int:
        db = await self._durable_db()
        with translate_errors(self.path):
            rows = await db.execute_fetchall(
                "UPDATE workers SET stop_requested = 1 WHERE heartbeat_at > ? RETURNING id",
                (self.clock() - stale_after,),
            )
        return len(list(rows))

    # --- wake-ups --------------------------------------------------------------------------

    async def wait_for_change(self, timeout: float) -> None:
        await self._watcher.wait(timeout)
