"""The shared store: PostgreSQL through asyncpg, for workers on several machines.

The database owns the clock here: every lease, ``run_at`` and heartbeat is
compared with ``now()`` on the server, never with a host's clock, because the
hosts' clocks may disagree. Claims use ``FOR UPDATE SKIP LOCKED``; every later
write is conditional on the claim's token. ``add_jobs``, ``finish``, ``release``,
``append_output``, cancels and retries ``NOTIFY`` a channel that idle workers and
followers ``LISTEN`` on.

Each method is work for ``Database.run`` (``connection.py``), which retries it on a
fresh connection while the server restarts; work that may have taken effect before
its connection dropped checks what the first try did. Statements are in ``sql.py``;
what a claim writes (results, releases, live output) is ``results.py``'s, cancelling
and retrying one job ``operating.py``'s; rows become records in ``rows.py``, wake-ups
are ``listen.py``'s.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import anyio

from queuectl.config import Settings
from queuectl.errors import DuplicateJob, JobNotFound, JobStateConflict
from queuectl.models import (
    FINAL_STATES,
    UNFINISHED_STATES,
    UNSET,
    AttemptRecord,
    Claim,
    Job,
    JobPage,
    JobState,
    LiveOutput,
    MinuteCount,
    NewJob,
    Outcome,
    Unset,
    WorkerInfo,
)
from queuectl.queues import QueueInfo, QueueSettings, Rate
from queuectl.scheduling import MakeJob, NewSchedule, Schedule, ScheduleTick
from queuectl.storage.base import job_filter
from queuectl.storage.flow import uses_flow
from queuectl.storage.postgres import flow_insert, operating, results, rows, sql
from queuectl.storage.postgres.connection import Database, UniqueViolation, Work
from queuectl.storage.postgres.listen import Listener, channel_name
from queuectl.storage.postgres.queues import QueueSettingsStore
from queuectl.storage.postgres.rows import chunk_from_row, claim_from_row, job_from_row, seconds
from queuectl.storage.postgres.schedules import Schedules
from queuectl.storage.postgres.schema import Connection, Row
from queuectl.storage.postgres.server_clock import ServerClock


class PostgresStore:
    """A job store in a PostgreSQL schema. Open it with ``await PostgresStore.open(url)``."""

    def __init__(self, database: Database, *, connect_timeout: float) -> None:
        self.url = database.url
        self.where = database.where
        self._database = database
        self._channel = channel_name(database.schema)
        self._schedules = Schedules(database, channel=self._channel)
        self._listener = Listener(database.url, self._channel, connect_timeout=connect_timeout)
        self._queues = QueueSettingsStore(database, self._channel)
        self.clock = ServerClock()

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
        database = await Database.open(
            url, retry_for=retry_for, connect_timeout=connect_timeout, command_timeout=command_timeout
        )
        return cls(database, connect_timeout=connect_timeout)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._listener.close()
            await self._database.close()

    # --- jobs ----------------------------------------------------------------------------

    async def add_jobs(self, jobs: Sequence[NewJob]) -> list[Job]:
        if not jobs:
            return []
        ids = [job.id for job in jobs]
        if len(set(ids)) < len(ids):
            repeated = next(job_id for job_id, count in Counter(ids).items() if count > 1)
            raise DuplicateJob(f"the job id {repeated!r} is given more than once")
        if uses_flow(jobs):
            return await self._database.run(self._flow_work(jobs, ids))
        arrays = rows.insert_arguments(jobs)
        loop = asyncio.get_running_loop()
        began = loop.time()

        async def insert(connection: Connection, retried: bool) -> list[Row]:
            try:
                return await connection.fetch(sql.INSERT_JOBS, *arrays, self._channel)
            except UniqueViolation as error:
                # After a dropped connection the first try may have committed.
                window = loop.time() - began + 5.0
                if retried and (ours := await _already_added(connection, ids, arrays, window)):
                    return ours
                raise await _duplicate(connection, ids) from error

        by_id = {row["id"]: job_from_row(row) for row in await self._database.run(insert)}
        return [by_id[job_id] for job_id in ids]

    def _flow_work(self, jobs: Sequence[NewJob], ids: list[str]) -> Work[list[Job]]:
        """Jobs with unique keys or dependencies (``flow_insert``) as retryable work."""
        began = asyncio.get_running_loop().time()

        async def insert(connection: Connection, retried: bool) -> list[Job]:
            if retried:  # after a dropped connection the first try may have committed
                window = asyncio.get_running_loop().time() - began + 5.0
                found = await connection.fetch(sql.ADDED_RECENTLY, ids, window)
                if found and (added := await flow_insert.added_before(connection, jobs, found)):
                    return added
            try:
                async with connection.transaction():
                    added = await flow_insert.add_jobs(connection, jobs)
                    await connection.execute("SELECT pg_notify($1, 'added')", self._channel)
            except UniqueViolation as error:
                raise await _duplicate(connection, ids) from error
            return added

        return insert

    async def get_job(self, job_id: str) -> Job:
        found = await self._database.fetch(sql.GET_JOB, job_id)
        if not found:
            raise JobNotFound(f"no job with id {job_id!r}")
        return job_from_row(found[0], with_output=True)

    async def ids_with_prefix(self, prefix: str, *, limit: int) -> list[str]:
        found = await self._database.fetch(sql.IDS_WITH_PREFIX, prefix, limit)
        return [row["id"] for row in found]

    async def list_jobs(
        self,
        *,
        state: JobState | Sequence[JobState] | None = None,
        queue: str | Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        states, queues = job_filter(state, queue)
        no_limit = limit is None or limit < 0  # as SQLite reads LIMIT -1
        found = await self._database.fetch(
            sql.LIST_JOBS, states or None, queues or None, None if no_limit else limit
        )
        return [job_from_row(row) for row in found]

    async def count_matching(
        self, *, state: JobState | Sequence[JobState] | None = None, queue: str | Sequence[str] | None = None
    ) -> int:
        states, queues = job_filter(state, queue)
        found = await self._database.fetch(sql.COUNT_MATCHING, states or None, queues or None)
        return int(found[0]["n"])

    async def count_jobs(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for row in await self._database.fetch(sql.COUNT_JOBS):
            counts[JobState(row["state"])] = int(row["n"])
        return counts

    async def earliest_run_at(self) -> datetime | None:
        found = await self._database.fetch(sql.EARLIEST_RUN_AT)
        earliest: datetime | None = found[0]["earliest"]
        return earliest

    async def next_run_at(self, queues: Sequence[str] | None = None) -> float | None:
        found = await self._database.fetch(sql.NEXT_RUN_AT, list(queues or ()))
        remaining = found[0]["seconds"]
        return None if remaining is None else float(remaining)

    # --- claims --------------------------------------------------------------------------

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
        take, _ = _claim_work(worker_id, queues, limit, lease, flow=flow)
        return _best_first(await self._database.run(take))

    async def renew(self, *, worker_id: str, tokens: Sequence[str], lease: float) -> set[str]:
        if not tokens:
            return set()
        found = await self._database.fetch(sql.RENEW, worker_id, list(tokens), seconds(lease))
        return {row["claim_token"] for row in found}

    async def finish(self, claim: Claim, outcome: Outcome) -> bool:
        write, _ = results.finish_work(claim, outcome, self._channel)
        return await self._database.run(write)

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
        write, finish_arguments = results.finish_work(claim, outcome, self._channel)
        take, claim_arguments = _claim_work(worker_id, queues, limit, lease, flow=flow)
        first, streamed, cancelled = results.first_entry(claim), outcome.streamed, results.cancels(outcome)
        if flow:
            statement = results.finish_and_flow_claim(first=first, streamed=streamed, cancelled=cancelled)
        else:
            statement = results.finish_and_claim(
                queues=bool(queues), first=first, streamed=streamed, cancelled=cancelled
            )
        arguments = (*finish_arguments, *claim_arguments)

        async def both(connection: Connection, retried: bool) -> tuple[bool, list[Row]]:
            if retried:  # the first try may have committed: each part checks on its own
                return await write(connection, retried), await take(connection, retried)
            found = await connection.fetch(statement, *arguments)
            return bool(found[0]["finished"]), [row for row in found if row["claim_token"] is not None]

        accepted, taken = await self._database.run(both)
        return accepted, _best_first(taken)

    async def release(self, claim: Claim, attempt: AttemptRecord) -> bool:
        return await self._database.run(results.release_work(claim, attempt, self._channel))

    async def lapsed_claims(self) -> list[Claim]:
        return [rows.lapsed_claim_from_row(row) for row in await self._database.fetch(sql.LAPSED)]

    async def cancelled_claims(self, tokens: Sequence[str]) -> set[str]:
        if not tokens:
            return set()
        found = await self._database.fetch(sql.CANCELLED_CLAIMS, list(tokens))
        return {row["claim_token"] for row in found}

    # --- live output ---------------------------------------------------------------------

    async def append_output(
        self,
        claim: Claim,
        chunks: Sequence[tuple[int, int, bytes]],
        *,
        progress: str | None,
        keep: int,
        lease: float,
    ) -> bool:
        work = results.append_work(
            claim, chunks, progress=progress, keep=keep, lease=lease, channel=self._channel
        )
        return await self._database.run(work)

    async def live_output(self, job_id: str, *, after: int) -> LiveOutput:
        found = await self._database.fetch(sql.LIVE_OUTPUT, job_id, after)
        if not found:
            raise JobNotFound(f"no job with id {job_id!r}")
        chunks = tuple(chunk_from_row(row) for row in found if row["chunk_seq"] is not None)
        return LiveOutput(job=job_from_row(found[0]), entries=found[0]["entries"], chunks=chunks)

    async def attempt_output(self, job_id: str, entry: int) -> tuple[bytes, bytes]:
        found = await self._database.fetch(sql.ATTEMPT_OUTPUT, job_id, entry)
        if not found:
            raise JobNotFound(f"no job with id {job_id!r}")
        return bytes(found[0]["stdout"] or b""), bytes(found[0]["stderr"] or b"")

    # --- operating jobs ------------------------------------------------------------------

    async def cancel_job(self, job_id: str) -> Job:
        return await self._database.run(operating.cancel_work(job_id, self._channel))

    async def cancel_matching(self, *, state: Sequence[JobState], queue: Sequence[str]) -> list[Job]:
        states = operating.states_among(state, UNFINISHED_STATES, "cancelled")
        found = await self._database.fetch(sql.CANCEL_MATCHING, self._channel, states, list(queue) or None)
        return rows.newest_first(found)

    async def retry_job(self, job_id: str) -> Job:
        return await self._database.run(operating.retry_work(job_id, self._channel))

    async def retry_matching(self, *, state: Sequence[JobState], queue: Sequence[str]) -> list[Job]:
        states = operating.states_among(state, FINAL_STATES, "retried")
        found = await self._database.fetch(sql.RETRY_MATCHING, self._channel, states, list(queue) or None)
        return rows.newest_first(found)

    async def purge_batch(
        self,
        *,
        state: Sequence[JobState],
        queue: Sequence[str],
        finished_before: datetime | None,
        limit: int,
    ) -> int:
        states = operating.states_among(state, FINAL_STATES, "purged")
        found = await self._database.fetch(
            sql.PURGE_BATCH, states, list(queue) or None, finished_before, limit
        )
        return int(found[0]["n"])

    async def has_unfinished(self, queues: Sequence[str] | None) -> bool:
        found = await self._database.fetch(sql.HAS_UNFINISHED, list(queues) if queues else None)
        return bool(found[0]["found"])

    # --- queues: pauses and limits (``queues``) --------------------------------------------

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

    # --- dead-letter queue ---------------------------------------------------------------

    async def retry_dead(self, job_ids: Sequence[str]) -> list[Job]:
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return []

        async def revive(connection: Connection, _retried: bool) -> list[Row]:
            async with connection.transaction():
                found = await connection.fetch(sql.LOCK_FOR_REVIVAL, ids)
                states = {row["id"]: row["state"] for row in found}
                for job_id in ids:
                    if job_id not in states:
                        raise JobNotFound(f"no job with id {job_id!r}")
                    if states[job_id] != JobState.DEAD.value:
                        raise JobStateConflict(f"job {job_id!r} is not dead (it is {states[job_id]})")
                return await connection.fetch(sql.REVIVE_SOME, self._channel, ids)

        by_id = {row["id"]: job_from_row(row) for row in await self._database.run(revive)}
        return [by_id[job_id] for job_id in ids]

    async def retry_all_dead(self) -> list[Job]:
        return rows.newest_first(await self._database.fetch(sql.REVIVE_ALL, self._channel))

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

    # --- settings ------------------------------------------------------------------------

    async def settings(self) -> Settings:
        return Settings.from_stored(await self.stored_settings())

    async def stored_settings(self) -> dict[str, str]:
        found = await self._database.fetch(sql.SETTINGS)
        return {row["key"]: row["value"] for row in found}

    async def set_setting(self, key: str, text: str) -> None:
        await self._database.fetch(sql.SET_SETTING, key, text)

    # --- workers -------------------------------------------------------------------------

    async def register_worker(self, *, worker_id: str, host: str, pid: int) -> None:
        await self._read_clock(sql.REGISTER_WORKER, worker_id, host.replace("\x00", ""), pid)
        # The first run of a statement is two round trips (it is prepared first), which skews
        # its sample; the quickest of a few more is the clock the worker starts with.
        for _ in range(3):
            await self._read_clock(sql.SERVER_TIME)

    async def heartbeat(self, *, worker_id: str, running: int) -> bool:
        found = await self._read_clock(sql.HEARTBEAT, worker_id, running)
        return bool(found and found[0]["stop_requested"])

    async def _read_clock(self, statement: str, *arguments: Any) -> list[Row]:
        """``statement``'s rows; their ``server_time`` is a sample for ``clock``."""
        sent = time.time()
        found = await self._database.fetch(statement, *arguments)
        if found:
            self.clock.sample(sent=sent, received=time.time(), server_time=found[0]["server_time"])
        return found

    async def stop_requested(self, worker_id: str) -> bool:
        found = await self._database.fetch(sql.STOP_REQUESTED, worker_id)
        return bool(found and found[0]["stop_requested"])

    async def unregister_worker(self, worker_id: str) -> None:
        await self._database.fetch(sql.UNREGISTER_WORKER, worker_id)

    async def list_workers(self, *, stale_after: float) -> list[WorkerInfo]:
        found = await self._database.fetch(sql.LIVE_WORKERS, seconds(stale_after))
        return [rows.worker_from_row(row) for row in found]

    async def request_stop(self, *, stale_after: float) -> int:
        return len(await self._database.fetch(sql.REQUEST_STOP, seconds(stale_after)))

    # --- wake-ups ------------------------------------------------------------------------

    async def wait_for_change(self, timeout: float) -> None:
        """Wait for a NOTIFY from any process (or ``timeout``); a plain sleep while LISTEN is down."""
        await self._listener.wait(timeout)

    async def watch(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            await self._database.fetch(sql.WATCH, list(job_ids))

    async def wait_for_cancel(self, timeout: float) -> None:
        """Wait for a NOTIFY of a cancel (or ``timeout``): a hint for workers running jobs."""
        await self._listener.wait_for_cancel(timeout)

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
        from queuectl.storage.postgres import dashboard

        query = dashboard.search(state=state, queue=queue, text=text, limit=limit, cursor=cursor)
        return await dashboard.read_page(self._database, query)

    async def add_finished(self, counts: Mapping[tuple[datetime, str], int]) -> None:
        from queuectl.storage.postgres import dashboard

        await dashboard.add_finished(self._database, counts)

    async def finished_per_minute(self, minutes: int = 60) -> list[MinuteCount]:
        from queuectl.storage.postgres import dashboard

        return await dashboard.finished_per_minute(self._database, minutes)

    async def oldest_due(self) -> dict[str, float]:
        from queuectl.storage.postgres import dashboard

        return await dashboard.oldest_due(self._database)


# --- work that survives a lost reply -------------------------------------------------------------


def _claim_work(
    worker_id: str, queues: Sequence[str] | None, limit: int, lease: float, *, flow: bool = False
) -> tuple[Work[list[Row]], tuple[Any, ...]]:
    """The claim as retryable work, and its arguments: worker, lease, limit, prefix(, queues).

    ``flow``: the claim that honours queues' pauses and limits (``sql.FLOW_CLAIM``).
    """
    # If the connection drops after the claim committed, the retry must hand over what the
    # first try took: else those jobs would wait out their lease and count an attempt that
    # never ran (straight to the DLQ with max_retries 0). Their tokens start with ``prefix``.
    prefix = f"{uuid.uuid4().hex}."
    # None or empty: every queue, as in the SQLite store.
    if flow:
        statement, only = sql.FLOW_CLAIM, [list(queues) if queues else None]
    else:
        statement, only = (sql.CLAIM_QUEUES, [list(queues)]) if queues else (sql.CLAIM_ANY_QUEUE, [])

    async def take(connection: Connection, retried: bool) -> list[Row]:
        found = await connection.fetch(sql.CLAIMED_BEFORE, worker_id, prefix) if retried else []
        if len(found) < limit:
            more = limit - len(found)
            found += await connection.fetch(statement, worker_id, seconds(lease), more, prefix, *only)
        return found

    return take, (worker_id, seconds(lease), limit, prefix, *only)


async def _already_added(
    connection: Connection, ids: list[str], arrays: list[list[Any]], window: float
) -> list[Row]:
    """The batch's rows if an earlier try of it committed: all there, as sent, just now."""
    found = await connection.fetch(sql.ADDED_RECENTLY, ids, window)
    return found if rows.stored(found) == rows.given(arrays) else []


async def _duplicate(connection: Connection, ids: list[str]) -> DuplicateJob:
    taken = {row["id"] for row in await connection.fetch(sql.TAKEN_IDS, ids)}
    first = next((job_id for job_id in ids if job_id in taken), None)
    return DuplicateJob(None if first is None else f"a job with id {first!r} already exists")


def _best_first(found: list[Row]) -> list[Claim]:
    """RETURNING gives no order; hand out the best job first."""
    return [claim_from_row(row) for row in sorted(found, key=rows.best_first)]
