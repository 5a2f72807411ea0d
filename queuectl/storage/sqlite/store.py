"""The default store: one SQLite file, shared safely by many processes (WAL, atomic claims).

Python owns the clock here: every time is ``self.clock()`` (epoch seconds), passed into the
SQL (``sql``), so tests can move time without sleeping. Every statement goes through the store's
``connection.Database``: claims and what follows them (results, releases, live output:
``results``) run on the ``lane``, in the event loop's thread; what users hand over (new jobs,
settings, retries, cancels: ``operating``) goes through aiosqlite on a connection that fsyncs
every commit. ``wal`` keeps the write-ahead log bounded.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

if TYPE_CHECKING:
    import aiosqlite

from queuectl.config import Settings
from queuectl.errors import DuplicateJob, JobNotFound, JobStateConflict
from queuectl.models import (
    UNSET,
    AttemptRecord,
    Claim,
    Holder,
    Job,
    JobPage,
    JobState,
    LiveOutput,
    MinuteCount,
    NewJob,
    Outcome,
    OutputChunk,
    Unset,
    WorkerInfo,
)
from queuectl.queues import QueueInfo, QueueSettings, Rate
from queuectl.scheduling import MakeJob, NewSchedule, Schedule, ScheduleTick
from queuectl.storage.base import HISTORY_LIMIT, job_filter
from queuectl.storage.flow import uses_flow
from queuectl.storage.sqlite import flow_insert, results, sql
from queuectl.storage.sqlite import schema as sqlite_schema
from queuectl.storage.sqlite.connection import Database
from queuectl.storage.sqlite.direct import duplicate_of
from queuectl.storage.sqlite.operating import Operator
from queuectl.storage.sqlite.queues import QueueSettingsStore, flow_claim, in_transaction
from queuectl.storage.sqlite.rows import (
    CLAIMED,
    FULL,
    INSERT,
    SELECT_SETTINGS,
    SUMMARY,
    at,
    best_first,
    blob,
    insert_rows,
    settings_from_rows,
    stored_job,
    worker_from_row,
)
from queuectl.storage.sqlite.schedules import Schedules
from queuectl.storage.sqlite.schema import translate_errors
from queuectl.storage.sqlite.watch import ChangeWatcher

Clock = Callable[[], float]
T = TypeVar("T")


class SqliteStore:
    """A job store in one SQLite file. Open it with ``await SqliteStore.open(path)``."""

    def __init__(self, db: Database, *, clock: Clock) -> None:
        self.path = db.path
        self.clock = clock
        self._db = db  # every statement goes through it: lane, aiosqlite, durable, patiently
        self._watcher = ChangeWatcher(db.path)
        self._watcher.changed()  # the baseline: changes from now on wake waiters
        self._operator = Operator(read=db.fetch, write=db.fetch_durably, wake=self._watcher.wake, clock=clock)
        self._queues = QueueSettingsStore(db, wake=self._watcher.wake)
        self._schedules = Schedules(db, clock=clock, wake=self._watcher.wake)

    @classmethod
    async def open(cls, path: Path, *, clock: Clock = time.time) -> SqliteStore:
        """Check, create or migrate the file, then connect. Never modifies a foreign file."""
        await anyio.to_thread.run_sync(sqlite_schema.prepare, path)
        return cls(await Database.open(path), clock=clock)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._db.close()
            self._watcher.close()

    # --- jobs ------------------------------------------------------------------------------

    async def add_jobs(self, jobs: Sequence[NewJob]) -> list[Job]:
        if not jobs:
            return []
        now = self.clock()
        db = await self._db.durable()
        with translate_errors(self.path):
            try:
                if uses_flow(jobs):  # unique keys or dependencies: ``flow_insert``
                    plan = flow_insert.add_jobs(jobs, now)
                    added = await self._transaction(db, lambda: flow_insert.run_async(plan, db))
                else:
                    rows = insert_rows(jobs, now)
                    if len(rows) == 1:
                        await self._db.patiently(lambda: db.execute_fetchall(INSERT, rows[0]))
                    else:
                        await self._transaction(db, lambda: db.executemany(INSERT, rows))
                    added = [stored_job(row) for row in rows]
            except sqlite3.IntegrityError as error:
                raise await self._duplicate_of([job.id for job in jobs]) from error
        self._watcher.wake()
        return added

    async def _transaction(self, db: aiosqlite.Connection, work: Callable[[], Awaitable[T]]) -> T:
        """``work()`` in one ``BEGIN IMMEDIATE`` transaction on ``db`` (waiting for the lock)."""
        await self._db.patiently(lambda: db.execute("BEGIN IMMEDIATE"))
        try:
            result = await work()
            await db.execute("COMMIT")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._db.rollback(db)
            raise
        return result

    async def _duplicate_of(self, ids: list[str]) -> DuplicateJob:
        with translate_errors(self.path):
            return await self._db.lane.run_in_thread(lambda connection: duplicate_of(connection, ids))

    async def get_job(self, job_id: str) -> Job:
        rows = await self._db.fetch(sql.GET_JOB, (job_id,))
        if not rows:
            raise JobNotFound(f"no job with id {job_id!r}")
        return FULL.job(rows[0])

    async def ids_with_prefix(self, prefix: str, *, limit: int) -> list[str]:
        rows = await self._db.fetch(sql.IDS_WITH_PREFIX, (prefix, prefix + "\U0010ffff", limit))
        return [job_id for (job_id,) in rows if job_id.startswith(prefix)]

    async def list_jobs(
        self,
        *,
        state: JobState | Sequence[JobState] | None = None,
        queue: str | Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        states, queues = job_filter(state, queue)
        statement = (
            sql.LIST_JOBS + sql.job_filter(len(states), len(queues)) + " ORDER BY created_at DESC, seq DESC"
        )
        if limit is not None:
            statement += f" LIMIT {int(limit)}"
        return [SUMMARY.job(row) for row in await self._db.fetch(statement, [*states, *queues])]

    async def count_matching(
        self, *, state: JobState | Sequence[JobState] | None = None, queue: str | Sequence[str] | None = None
    ) -> int:
        states, queues = job_filter(state, queue)
        statement = sql.COUNT_MATCHING + sql.job_filter(len(states), len(queues))
        rows = await self._db.fetch(statement, [*states, *queues])
        return int(rows[0][0])

    async def count_jobs(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for state, count in await self._db.fetch(sql.COUNT_JOBS):
            counts[JobState(state)] = count
        return counts

    async def earliest_run_at(self) -> datetime | None:
        rows = await self._db.fetch(sql.EARLIEST_RUN_AT)
        return None if rows[0][0] is None else at(rows[0][0])

    async def next_run_at(self, queues: Sequence[str] | None = None) -> float | None:
        queue_list = list(queues or ())
        rows = await self._db.fetch_on_lane(sql.next_run_at(len(queue_list)), queue_list, writes=False)
        earliest = rows[0][0]
        return None if earliest is None else earliest - self.clock()

    # --- claims ----------------------------------------------------------------------------

    async def claim(
        self,
        *,
        worker_id: str,
        queues: Sequence[str] | None,
        limit: int,
        lease: float,
        flow: bool = False,
    ) -> list[Claim]:
        if limit <= 0:
            return []
        if flow:
            work = flow_claim(worker_id=worker_id, queues=queues, limit=limit, lease=lease, clock=self.clock)
            rows = await self._db.on_lane(in_transaction(work), writes=False)
        else:
            statement, parameters = self._claim_parameters(worker_id, queues, limit, lease)
            rows = await self._db.fetch_on_lane(statement, parameters, writes=False)
        if rows:  # an idle worker's empty claims write nothing
            self._db.wal.wrote()
        return best_first([CLAIMED.claim(row) for row in rows])

    def _claim_parameters(
        self, worker_id: str, queues: Sequence[str] | None, limit: int, lease: float
    ) -> tuple[str, tuple[Any, ...]]:
        now = self.clock()
        queue_list = list(queues or ())
        return sql.claim(len(queue_list)), (worker_id, now + lease, now, now, now, *queue_list, limit)

    async def renew(self, *, worker_id: str, tokens: Sequence[str], lease: float) -> set[str]:
        if not tokens:
            return set()
        rows = await self._db.fetch_on_lane(
            sql.renew(len(tokens)), (self.clock() + lease, worker_id, *tokens)
        )
        return {row[0] for row in rows}

    async def finish(self, claim: Claim, outcome: Outcome) -> bool:
        accepted = await self._db.on_lane(results.finish(results.Finishing(claim, outcome, self.clock())))
        await self._db.wal.after_result()
        return accepted

    async def finish_and_claim(
        self,
        claim: Claim,
        outcome: Outcome,
        *,
        worker_id: str,
        queues: Sequence[str] | None,
        limit: int,
        lease: float,
        flow: bool = False,
    ) -> tuple[bool, list[Claim]]:
        if limit <= 0:
            return await self.finish(claim, outcome), []
        finishing = results.Finishing(claim, outcome, self.clock())
        take: results.Take = (
            flow_claim(worker_id=worker_id, queues=queues, limit=limit, lease=lease, clock=self.clock)
            if flow
            else self._claim_parameters(worker_id, queues, limit, lease)
        )
        accepted, rows = await self._db.on_lane(results.finish_and_claim(finishing, take))
        await self._db.wal.after_result()
        return accepted, best_first([CLAIMED.claim(row) for row in rows])

    async def release(self, claim: Claim, attempt: AttemptRecord) -> bool:
        released = await self._db.on_lane(results.release(claim, attempt, self.clock()))
        if released:
            self._watcher.wake()
        return released

    async def lapsed_claims(self) -> list[Claim]:
        lapsed = []
        for row in await self._db.fetch(sql.LAPSED, (self.clock(),)):
            token, worker, host, pid = CLAIMED.extra(row)
            holder = Holder(worker=worker, host=host, pid=pid)
            lapsed.append(Claim(job=CLAIMED.job(row), token=token, holder=holder))
        return lapsed

    async def cancelled_claims(self, tokens: Sequence[str]) -> set[str]:
        if not tokens:
            return set()
        rows = await self._db.fetch_on_lane(sql.cancelled_claims(len(tokens)), tokens, writes=False)
        return {token for (token,) in rows}

    # --- live output -----------------------------------------------------------------------

    async def append_output(
        self,
        claim: Claim,
        chunks: Sequence[tuple[int, int, bytes]],
        *,
        progress: str | None,
        keep: int,
        lease: float,
    ) -> bool:
        work = results.append_output(
            claim, chunks, progress=progress, keep=keep, lease_end=self.clock() + lease
        )
        appended = await self._db.on_lane(work)
        if appended:
            self._watcher.wake()
        return appended

    async def live_output(self, job_id: str, *, after: int) -> LiveOutput:
        rows = await self._db.fetch(sql.LIVE_OUTPUT, (after, job_id))
        if not rows:
            raise JobNotFound(f"no job with id {job_id!r}")
        entries, seq = sql.LIVE.extra(rows[0])[:2]
        chunks = (
            tuple(
                OutputChunk(seq=seq, stream=stream, offset=offset, data=blob(data))
                for seq, stream, offset, data in (sql.LIVE.extra(row)[1:] for row in rows)
            )
            if seq is not None
            else ()
        )
        return LiveOutput(job=sql.LIVE.job(rows[0]), entries=entries, chunks=chunks)

    async def attempt_output(self, job_id: str, entry: int) -> tuple[bytes, bytes]:
        rows = await self._db.fetch(sql.ATTEMPT_OUTPUT, (entry, job_id))
        if not rows:
            raise JobNotFound(f"no job with id {job_id!r}")
        entries, latest_out, latest_err, earlier_out, earlier_err = rows[0]
        if entry == entries:
            return blob(latest_out), blob(latest_err)
        if max(1, entries - HISTORY_LIMIT + 1) <= entry < entries:
            return blob(earlier_out), blob(earlier_err)
        return b"", b""

    # --- operating jobs (``operating``) -------------------------------------------------------

    async def cancel_job(self, job_id: str) -> Job:
        return await self._operator.cancel_job(job_id)

    async def cancel_matching(self, *, state: Sequence[JobState], queue: Sequence[str]) -> list[Job]:
        return await self._operator.cancel_matching(state=state, queue=queue)

    async def retry_job(self, job_id: str) -> Job:
        return await self._operator.retry_job(job_id)

    async def retry_matching(self, *, state: Sequence[JobState], queue: Sequence[str]) -> list[Job]:
        return await self._operator.retry_matching(state=state, queue=queue)

    async def purge_batch(
        self,
        *,
        state: Sequence[JobState],
        queue: Sequence[str],
        finished_before: datetime | None,
        limit: int,
    ) -> int:
        return await self._operator.purge_batch(
            state=state, queue=queue, finished_before=finished_before, limit=limit
        )

    async def has_unfinished(self, queues: Sequence[str] | None) -> bool:
        queue_list = list(queues or ())
        rows = await self._db.fetch_on_lane(sql.has_unfinished(len(queue_list)), queue_list, writes=False)
        return bool(rows[0][0])

    # --- queues: pauses and limits (``queues``) ----------------------------------------------

    async def list_queues(self) -> list[QueueInfo]:
        return await self._queues.list_queues()

    async def queue_settings(self) -> list[QueueSettings]:
        return await self._queues.queue_settings()

    async def pause_queues(self, names: Sequence[str], *, paused: bool) -> None:
        await self._queues.pause_queues(names, paused=paused)

    async def limit_queue(
        self,
        name: str,
        *,
        concurrency: int | Unset | None = UNSET,
        rate: Rate | Unset | None = UNSET,
    ) -> QueueSettings:
        return await self._queues.limit_queue(name, concurrency=concurrency, rate=rate)

    # --- dead-letter queue -----------------------------------------------------------------

    async def retry_dead(self, job_ids: Sequence[str]) -> list[Job]:
        unique = list(dict.fromkeys(job_ids))
        db = await self._db.durable()
        with translate_errors(self.path):
            await self._db.patiently(lambda: db.execute("BEGIN IMMEDIATE"))
            try:
                for job_id in unique:
                    found = list(await db.execute_fetchall(sql.STATE_OF, (job_id,)))
                    if not found:
                        raise JobNotFound(f"no job with id {job_id!r}")
                    if found[0][0] != JobState.DEAD.value:
                        raise JobStateConflict(f"job {job_id!r} is not dead (it is {found[0][0]})")
                now = self.clock()
                revived = [
                    SUMMARY.job(row)
                    for job_id in unique
                    for row in await db.execute_fetchall(sql.REVIVE, (now, now, job_id))
                ]
                await db.execute("COMMIT")
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._db.rollback(db)
                raise
        self._watcher.wake()
        return revived

    async def retry_all_dead(self) -> list[Job]:
        now = self.clock()
        rows = await self._db.fetch_durably(sql.REVIVE_ALL_DEAD, (now, now))
        self._watcher.wake()
        return sorted((SUMMARY.job(row) for row in rows), key=lambda job: job.created_at, reverse=True)

    # --- schedules (``schedules``) --------------------------------------------------------

    async def add_schedule(self, schedule: NewSchedule) -> Schedule:
        return await self._schedules.add(schedule)

    async def list_schedules(self) -> list[Schedule]:
        return await self._schedules.list_all()

    async def remove_schedule(self, name: str) -> Schedule:
        return await self._schedules.remove(name)

    async def pause_schedule(self, name: str) -> Schedule:
        return await self._schedules.pause(name)

    async def resume_schedule(self, name: str) -> Schedule:
        return await self._schedules.resume(name)

    async def enqueue_due_schedules(self, make_job: MakeJob) -> ScheduleTick:
        return await self._schedules.enqueue_due(make_job)

    # --- settings --------------------------------------------------------------------------

    async def settings(self) -> Settings:
        return settings_from_rows(await self._db.fetch(SELECT_SETTINGS))

    async def stored_settings(self) -> dict[str, str]:
        return dict(await self._db.fetch(SELECT_SETTINGS))

    async def set_setting(self, key: str, text: str) -> None:
        await self._db.fetch_durably(sql.SET_SETTING, (key, text))

    # --- workers ---------------------------------------------------------------------------

    async def register_worker(self, *, worker_id: str, host: str, pid: int) -> None:
        now = self.clock()
        await self._db.fetch(sql.REGISTER_WORKER, (worker_id, host, pid, now, now))

    async def heartbeat(self, *, worker_id: str, running: int) -> bool:
        rows = await self._db.fetch(sql.HEARTBEAT, (self.clock(), running, worker_id))
        return bool(rows and rows[0][0])

    async def stop_requested(self, worker_id: str) -> bool:
        rows = await self._db.fetch(sql.STOP_REQUESTED, (worker_id,))
        return bool(rows and rows[0][0])

    async def unregister_worker(self, worker_id: str) -> None:
        await self._db.fetch(sql.UNREGISTER_WORKER, (worker_id,))

    async def list_workers(self, *, stale_after: float) -> list[WorkerInfo]:
        return [
            worker_from_row(row)
            for row in await self._db.fetch(sql.LIVE_WORKERS, (self.clock() - stale_after,))
        ]

    async def request_stop(self, *, stale_after: float) -> int:
        asked = await self._db.fetch_durably(sql.REQUEST_STOP, (self.clock() - stale_after,))
        return sum(1 for (live,) in asked if live)

    # --- wake-ups --------------------------------------------------------------------------

    async def wait_for_change(self, timeout: float) -> None:
        await self._watcher.wait(timeout)

    async def watch(self, job_ids: Sequence[str]) -> None:
        pass  # any write to the store wakes ``wait_for_change``

    async def wait_for_cancel(self, timeout: float) -> None:
        # No notifications here: every change to the file would wake it, so workers just poll.
        await anyio.sleep(timeout)

    # --- the dashboard (``dashboard``: loaded by the processes that read it) -----------------

    async def search_jobs(
        self,
        *,
        state: Sequence[JobState] = (),
        queue: Sequence[str] = (),
        text: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        from queuectl.storage.sqlite import dashboard

        query = dashboard.search(state=state, queue=queue, text=text, limit=limit, cursor=cursor)
        return await dashboard.read_page(self._db, query)

    async def add_finished(self, counts: Mapping[tuple[datetime, str], int]) -> None:
        from queuectl.storage.sqlite import dashboard

        rows = dashboard.finished_rows(counts)
        if rows:  # a short write on the lane, as a worker's results
            await self._db.on_lane(dashboard.add_finished(rows, self.clock()))

    async def finished_per_minute(self, minutes: int = 60) -> list[MinuteCount]:
        from queuectl.storage.sqlite import dashboard

        return await dashboard.finished_per_minute(self._db, minutes, self.clock())

    async def oldest_due(self) -> dict[str, float]:
        from queuectl.storage.sqlite import dashboard

        return await dashboard.oldest_due(self._db, self.clock())
