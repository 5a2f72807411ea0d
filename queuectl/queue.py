"""The façade the CLI and embedding applications share.

It holds the policy a store does not: every job is checked and its defaults filled in from the
settings before the store sees it (the rules are in ``queuectl.enqueue``, shared with the
synchronous path the command line takes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from queuectl.config import (
    Settings,
    SettingValue,
    canonical_key,
    check_together,
    parse_setting,
    setting_texts,
    stored_text,
)
from queuectl.enqueue import JobInput, check, resolve, unresolved
from queuectl.errors import AmbiguousId, InvalidInput, JobNotFound
from queuectl.models import FINAL_STATES, UNSET, Job, JobState, QueueStatus, Unset, WorkerInfo
from queuectl.queues import QueueInfo, QueueSettings, Rate, check_concurrency, check_queue_name, parse_rate
from queuectl.storage import Store, open_store
from queuectl.storage.flow import MIN_ID_PREFIX

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from queuectl.follow import FollowEvent
    from queuectl.scheduling import Schedule
    from queuectl.worker import WorkerPool


__all__ = ("JobInput", "Queue")

#: The longest the settings that fill in new jobs' defaults are kept between reads (and at
#: most one poll interval): a read per enqueue would cost a third of an embedded enqueue, and
#: settings reach running workers within a poll interval, so they reach enqueuers as fast.
SETTINGS_MAX_AGE = 1.0
#: A ``seq`` past every chunk: ``live_output`` asked only for the job and its entry count.
_NO_CHUNKS = 2**62


class Queue:
    """A job queue on one store.

    Use it as an async context manager::

        async with await Queue.open("jobs.db") as queue:
            job = await queue.enqueue({"command": "echo hello"})
    """

    def __init__(self, store: Store, *, clock: Callable[[], float] | None = None) -> None:
        self.store = store
        self._clock = clock  # what the store was opened with: the pool's clock too
        self._settings: tuple[float, Settings] | None = None  # (good until, settings) for enqueues

    @classmethod
    async def open(cls, target: str | None = None, *, clock: Callable[[], float] | None = None) -> Queue:
        """Open the store at ``target`` (see ``queuectl.storage.open_store``, also for ``clock``)."""
        return cls(await open_store(target, clock=clock), clock=clock)

    async def aclose(self) -> None:
        await self.store.close()

    async def __aenter__(self) -> Queue:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- jobs -----------------------------------------------------------------------------

    async def enqueue(self, job: JobInput | None = None, /, **fields: Any) -> Job:
        """Enqueue one job, given as a ``NewJob``, a mapping, or keyword fields.

        ``await queue.enqueue(command="make test", priority=5)``. Input is checked as
        strictly as the CLI's JSON, a ``NewJob`` too; ``InvalidInput`` says what is wrong.

        Flow control: with ``unique_key=K``, while an unfinished job holds K, nothing is added
        and that job is returned (its id is not the one asked for). ``after=[id, ...]``: not
        claimed until each of them is ``completed``; cancelled if one ends ``dead`` or
        ``cancelled`` (``JobNotFound`` for an unknown id). ``no_retry_exit_codes=[2, ...]``:
        an attempt exiting with one of them makes the job ``dead`` at once.
        """
        if job is None:
            job = fields
        elif fields:
            raise TypeError("give a job or keyword fields, not both")
        (stored,) = await self._add_checked([check(job)])
        return stored

    async def enqueue_many(self, jobs: Sequence[JobInput]) -> list[Job]:
        """Enqueue all of ``jobs`` in one transaction, or none of them."""
        return await self._add_checked([check(job) for job in jobs])

    async def _add_checked(self, checked: list[dict[str, Any]]) -> list[Job]:
        """Enqueue jobs given as their fields, already checked (``queuectl.enqueue.check``).

        Fields left out whose default is a setting take it (``queuectl.enqueue.resolve``;
        the dicts are completed in place), then the store inserts all of them or none.
        Private: the checks are the caller's (here, and ``queuectl.enqueue`` on PostgreSQL).
        """
        settings = await self._enqueue_settings() if any(map(unresolved, checked)) else None
        return await self.store.add_jobs([resolve(fields, settings) for fields in checked])

    async def _enqueue_settings(self) -> Settings:
        """The settings, read again once older than a poll interval (``SETTINGS_MAX_AGE`` at most)."""
        if self._settings is not None and time.monotonic() < self._settings[0]:
            return self._settings[1]
        return await self.settings()

    async def get(self, job_id: str) -> Job:
        """One job with its output; ``JobNotFound`` if there is none."""
        return await self.store.get_job(job_id)

    async def resolve_id(self, text: str) -> str:
        """The id of the job ``text`` names: an exact id wins, else a unique prefix of at least
        ``MIN_ID_PREFIX`` characters. ``JobNotFound``; ``AmbiguousId`` listing the matches."""
        matches = await self.store.ids_with_prefix(text, limit=10)
        if text in matches or len(text) < MIN_ID_PREFIX:
            if text in matches:
                return text
            raise JobNotFound(f"no job with id {text!r}")
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise JobNotFound(f"no job with id {text!r}")
        raise AmbiguousId(text, matches)

    async def resolve_ids(self, texts: Sequence[str]) -> list[str]:
        """``resolve_id`` of each, in order."""
        return [await self.resolve_id(text) for text in texts]

    async def list_jobs(
        self,
        *,
        state: JobState | Sequence[JobState] | None = None,
        queue: str | Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        """Jobs newest first. ``state`` and ``queue`` take one value or several (any of them)."""
        return await self.store.list_jobs(state=state, queue=queue, limit=limit)

    async def count_matching(
        self, *, state: JobState | Sequence[JobState] | None = None, queue: str | Sequence[str] | None = None
    ) -> int:
        """How many jobs ``list_jobs`` with these filters returns without a limit: one count."""
        return await self.store.count_matching(state=state, queue=queue)

    async def wait_for(self, job_id: str, *, timeout: float | None = None, poll: float = 0.05) -> Job:
        """Wait until the job is final (``completed``, ``dead`` or ``cancelled``); return it.

        Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        with anyio.fail_after(timeout):
            await self.store.watch([job_id])  # before the first read: an end after it wakes us
            while True:
                job = await self.store.get_job(job_id)
                if job.state in FINAL_STATES:
                    return job
                await self.store.wait_for_change(poll)

    async def status(self) -> QueueStatus:
        """Counts by state, live workers, and the next scheduled run."""
        settings = await self.settings()
        counts = await self.store.count_jobs()
        workers = await self.store.list_workers(stale_after=settings.lease)
        next_run = await self.store.earliest_run_at()
        return QueueStatus(jobs=counts, workers=len(workers), next_run_at=next_run)

    # --- operating jobs --------------------------------------------------------------------

    async def cancel(self, job_id: str) -> Job:
        """Cancel an unfinished job (a running one's worker kills it); return it.

        ``JobNotFound``; ``JobStateConflict`` for a job already final.
        """
        return await self.store.cancel_job(job_id)

    async def cancel_matching(
        self, *, state: Sequence[JobState] = (), queue: Sequence[str] = ()
    ) -> list[Job]:
        """Cancel every unfinished job in these states and queues (empty: any); return them."""
        return await self.store.cancel_matching(state=state, queue=queue)

    async def retry(self, job_id: str) -> Job:
        """A completed, dead or cancelled job back to ``pending`` with ``attempts`` 0 (history kept).

        ``JobNotFound``; ``JobStateConflict`` for a job in another state.
        """
        return await self.store.retry_job(job_id)

    async def retry_matching(self, *, state: Sequence[JobState] = (), queue: Sequence[str] = ()) -> list[Job]:
        """``retry`` every final job in these states (empty: all final ones) and queues."""
        return await self.store.retry_matching(state=state, queue=queue)

    async def purge(
        self,
        *,
        state: Sequence[JobState] = (),
        queue: Sequence[str] = (),
        older_than: float | None = None,
    ) -> int:
        """Delete final jobs (default: completed and cancelled ones) of these queues finished
        more than ``older_than`` seconds ago (None: any age), in short batches; return how many."""
        from queuectl.purging import RETAINED_STATES, purge

        now = None if self._clock is None else datetime.fromtimestamp(self._clock(), UTC)
        states = list(state) or list(RETAINED_STATES)
        return await purge(self.store, states=states, queues=queue, older_than=older_than, now=now)

    async def attempt_output(self, job_id: str, number: int) -> tuple[bytes, bytes]:
        """stdout and stderr of the ``number``th entry of the job's ``history`` (1 = the first).

        ``JobNotFound``; ``IndexError`` for a number the history does not have.
        """
        job = await self.store.get_job(job_id)
        if not 1 <= number <= len(job.history):
            raise IndexError(number)
        entries = (await self.store.live_output(job_id, after=_NO_CHUNKS)).entries
        return await self.store.attempt_output(job_id, entries - len(job.history) + number)

    def follow(self, job_id: str) -> AsyncIterator[FollowEvent]:
        """The job's output as it is written, across attempts, until the job is final.

        ``async for event in queue.follow(job_id)``: see ``queuectl.follow.FollowEvent``.
        """
        from queuectl.follow import follow

        return follow(self.store, job_id)

    # --- dead-letter queue ----------------------------------------------------------------

    async def dead_jobs(self, *, limit: int | None = None) -> list[Job]:
        """The DLQ, newest first."""
        return await self.store.list_jobs(state=JobState.DEAD, limit=limit)

    async def retry_dead(self, job_ids: Sequence[str]) -> list[Job]:
        """Put dead jobs back to ``pending`` with ``attempts`` 0 (all or nothing)."""
        return await self.store.retry_dead(job_ids)

    async def retry_all_dead(self) -> list[Job]:
        return await self.store.retry_all_dead()

    # --- schedules ------------------------------------------------------------------------

    async def add_schedule(
        self,
        name: str,
        job: JobInput | None = None,
        /,
        *,
        cron: str | None = None,
        tz: str | None = None,
        every: float | str | timedelta | None = None,
        no_overlap: bool = False,
        **fields: Any,
    ) -> Schedule:
        """Create a schedule, or replace the one named ``name``; return it.

        ``await queue.add_schedule("nightly", cron="30 2 * * *", tz="Europe/Berlin",
        command="backup.sh")``: give ``cron`` (five fields or ``@daily``...; ``tz`` an IANA
        zone, default UTC) or ``every`` (seconds, ``"5m"`` or a ``timedelta``, at least 1 s),
        and the job as a ``NewJob`` (its id unused), a mapping, or keyword fields, checked as
        ``enqueue`` checks them; no ``id``, ``run_at``, ``delay`` or ``after``. Each due time
        enqueues one job while a worker runs; ``no_overlap`` skips a due time while the previous
        job is unfinished. ``InvalidInput`` says what is wrong, and nothing is written.
        """
        from queuectl.scheduling import new_schedule

        if job is None:
            job = fields
        elif fields:
            raise TypeError("give a job or keyword fields, not both")
        schedule = new_schedule(name, cron=cron, tz=tz, every=every, no_overlap=no_overlap, job=job)
        return await self.store.add_schedule(schedule)

    async def list_schedules(self) -> list[Schedule]:
        """Every schedule, by name."""
        return await self.store.list_schedules()

    async def remove_schedule(self, name: str) -> Schedule:
        """Delete a schedule (the jobs it enqueued stay); return it. ``ScheduleNotFound``."""
        return await self.store.remove_schedule(name)

    async def pause_schedule(self, name: str) -> Schedule:
        """Stop a schedule enqueueing jobs until resumed; return it. ``ScheduleNotFound``."""
        return await self.store.pause_schedule(name)

    async def resume_schedule(self, name: str) -> Schedule:
        """Resume a paused schedule from now (what it missed meanwhile is not enqueued); return it.

        ``ScheduleNotFound``.
        """
        return await self.store.resume_schedule(name)

    # --- queues: pauses and limits ---------------------------------------------------------

    async def list_queues(self) -> list[QueueInfo]:
        """Every queue that has jobs or settings, by name: its jobs by state, pause and limits."""
        return await self.store.list_queues()

    async def pause_queue(self, *names: str) -> None:
        """Pause these queues: from one poll interval on, no worker on any host claims their
        jobs (running ones finish). A queue may be paused before it has jobs. Persisted."""
        await self.store.pause_queues(_queue_names(names), paused=True)

    async def resume_queue(self, *names: str) -> None:
        """Let workers claim these queues' jobs again."""
        await self.store.pause_queues(_queue_names(names), paused=False)

    async def limit_queue(
        self,
        name: str,
        *,
        concurrency: int | str | Unset | None = UNSET,
        rate: Rate | str | Unset | None = UNSET,
    ) -> QueueSettings:
        """Set (or clear, with ``None``) a queue's limits, across all workers and hosts; return
        its settings. ``concurrency``: at most N of its jobs processing at once; ``rate``: at most
        N started in any window of a duration (``"10/s"``, ``"5/10s"`` or a ``Rate``). A limit
        not given stays as it is. ``InvalidInput`` for a bad value, and nothing changes."""
        (checked,) = _queue_names([name])
        if isinstance(concurrency, Unset) and isinstance(rate, Unset):
            raise InvalidInput("give a concurrency or a rate (or none to clear one)")
        return await self.store.limit_queue(
            checked,
            concurrency=concurrency if isinstance(concurrency, Unset) else check_concurrency(concurrency),
            rate=rate if isinstance(rate, Unset) else parse_rate(rate),
        )

    # --- settings -------------------------------------------------------------------------

    async def settings(self) -> Settings:
        """The store's settings, read now."""
        settings = await self.store.settings()
        self._settings = (time.monotonic() + min(settings.poll_interval, SETTINGS_MAX_AGE), settings)
        return settings

    async def setting_texts(self) -> dict[str, str]:
        """Every setting as text, as it was given (``5m`` stays ``5m``); defaults for keys never set."""
        return setting_texts(await self.store.stored_settings())

    async def set_setting(self, key: str, text: str) -> SettingValue:
        """Validate and persist one setting; return its typed value.

        The value is checked alone (``parse_setting``), then with the other settings as they
        would be (``check_together``: a lease at least two poll intervals): ``InvalidSetting``
        says which values would work, and nothing is written. The text is stored as given.
        """
        key = canonical_key(key)
        value = parse_setting(key, text)
        values: dict[str, Any] = {**(await self.store.settings()).to_dict(), key: value}
        check_together(Settings(**values), changed=key)
        self._settings = None
        await self.store.set_setting(key, stored_text(value, text))
        return value

    # --- workers --------------------------------------------------------------------------

    async def workers(self) -> list[WorkerInfo]:
        """Live worker processes."""
        settings = await self.settings()
        return await self.store.list_workers(stale_after=settings.lease)

    async def stop_workers(self) -> int:
        """Ask every live worker of this store to stop gracefully; return how many."""
        settings = await self.settings()
        return await self.store.request_stop(stale_after=settings.lease)

    def pool(self, **options: Any) -> WorkerPool:
        """A worker pool on this queue; see ``WorkerPool`` for the options (``clock``: the queue's)."""
        from queuectl.worker import WorkerPool

        if self._clock is not None:
            options.setdefault("clock", self._clock)
        return WorkerPool(self.store, **options)

    # --- the dashboard ----------------------------------------------------------------------

    async def search_jobs(
        self,
        *,
        state: Sequence[JobState] = (),
        queue: Sequence[str] = (),
        text: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """A page of jobs, newest first: ``state``, ``queue`` (any of them; empty: any), ``text``
        (an id prefix or a substring of the command, case-sensitive). Pass the page's
        ``next_cursor`` as ``cursor`` for the next (older) one; ``None`` when there is none.

        A rare filter may give short or empty pages that still have a ``next_cursor``: each call
        looks at a bounded number of jobs (``Store.search_jobs``). ``InvalidInput`` for a bad
        cursor or a ``limit`` outside 1..1000.
        """
        return await self.store.search_jobs(state=state, queue=queue, text=text, limit=limit, cursor=cursor)

    async def finished_per_minute(self, minutes: int = 60) -> list[MinuteCount]:
        """Attempts that ended completed, failed or dead in each of the last ``minutes`` minutes
        (the current one last), zeros included, as workers counted them."""
        return await self.store.finished_per_minute(minutes)

    async def oldest_due(self) -> dict[str, float]:
        """Per queue with due jobs no worker took yet: seconds since the oldest one's ``run_at``."""
        return await self.store.oldest_due()


def _queue_names(names: Sequence[str]) -> list[str]:
    """The queue names given, checked as a job's ``queue`` is, once each (``InvalidInput``)."""
    if not names:
        raise InvalidInput("give the name of a queue")
    return list(dict.fromkeys(check_queue_name(name) for name in names))


if TYPE_CHECKING:  # the dashboard's records, for the annotations above
    from queuectl.models import JobPage, MinuteCount
