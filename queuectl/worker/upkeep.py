"""Keeping claims good: heartbeats, lease renewal, the lease guard, lost workers' jobs, cancelled
jobs, stop requests, the retention of finished jobs, and the schedules' due jobs.

Upkeep sees what it needs and nothing more of the pool: the store, the worker's id, the table of
running jobs (whose leases it renews, which it kills when it cannot, and which it stops when they
are cancelled), and callbacks for a stop request and for new settings. It runs as tasks that the
pool supervises (``run``, ``guard_leases``, ``watch_jobs``, ``keep_retention``,
``keep_schedules``); each retries a passing ``StoreError`` itself, and any other failure ends it.

A cancelled job is learnt of by one read a poll interval while jobs run (``cancelled_claims``), so
within a poll interval on any host, whatever wake-ups the store has; on PostgreSQL a NOTIFY of the
cancel makes that read at once (a hint: a dropped notification only delays it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from queuectl import retry
from queuectl.config import Settings
from queuectl.display import in_words
from queuectl.errors import InvalidInput, StoreError
from queuectl.models import AttemptOutcome, Decision, EndedAttempt, Holder, JobState, NewJob, Outcome
from queuectl.purging import purge
from queuectl.queues import QueueSettings
from queuectl.scheduling import scheduled_job
from queuectl.storage.base import Store
from queuectl.worker.live import sweep_progress
from queuectl.worker.orphans import kill_orphans
from queuectl.worker.slots import Running
from queuectl.worker.tally import Tally

__all__ = (
    "LEASE_SAFETY_FRACTION",
    "RETENTION_EVERY",
    "SCHEDULES_EVERY",
    "WORKER_LOST",
    "Upkeep",
    "kill_deadline",
)

logger = logging.getLogger(__name__)

#: A job is killed this long before its lease runs out if the lease could not be renewed.
LEASE_SAFETY_FRACTION = 0.2
#: The ``last_error`` of an attempt whose worker was lost.
WORKER_LOST = "worker lost (lease expired)"
#: Seconds between two deletions of the jobs past ``retention`` (the first is at start).
RETENTION_EVERY = 600.0
#: Most seconds between two looks for due schedules (sooner when one is due sooner): a schedule
#: added by another process is seen within this, and each due time enqueued within it.
SCHEDULES_EVERY = 1.0
#: Fewest seconds between two looks: a due schedule another worker is enqueueing right now
#: (its row locked) is no reason to spin.
_SCHEDULES_PAUSE = 0.01


def kill_deadline(jobs: Mapping[str, Running], lease: float) -> float:
    """The monotonic time by which the running jobs must end if no lease is renewed any more."""
    return min(running.lease_deadline for running in jobs.values()) - lease * LEASE_SAFETY_FRACTION


class Upkeep:
    """The background work of one worker; ``settings`` are the latest read from the store."""

    def __init__(
        self,
        store: Store,
        *,
        worker_id: str,
        jobs: Mapping[str, Running],
        settings: Settings,
        on_settings: Callable[[Settings], None],
        on_stop: Callable[[], None],
        clock: Callable[[], float],
        progress_dir: str | None = None,
        on_queues: Callable[[Sequence[QueueSettings]], None] | None = None,
        tally: Tally | None = None,
    ) -> None:
        self.store = store
        self.tally = tally
        self._on_queues = on_queues
        self.progress_dir = progress_dir
        self.worker_id = worker_id
        self.jobs = jobs
        self.settings = settings
        self._on_settings = on_settings
        self._on_stop = on_stop
        self._clock = clock

    async def run(self) -> None:
        """Each poll interval: heartbeat (or read stop requests), settings, lost workers' jobs, and
        the count of ended attempts (``tally``)."""
        next_heartbeat = 0.0
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            try:
                if time.monotonic() >= next_heartbeat:
                    await self._heartbeat()
                    next_heartbeat = time.monotonic() + self._heartbeat_interval()
                elif await self.store.stop_requested(self.worker_id):
                    self._on_stop()
                self.settings = await self.store.settings()
                self._on_settings(self.settings)
                await self.read_queues()
                await self.recover_lapsed()
                if self.tally is not None:
                    await self.tally.write()
            except StoreError as exc:
                logger.warning("upkeep failed, will retry: %s", exc)

    async def read_queues(self) -> None:
        """The queues' pauses and limits (one read of a small table): whether claims honour them."""
        if self._on_queues is not None:
            self._on_queues(await self.store.queue_settings())

    async def guard_leases(self) -> None:
        """On its own timer: ``run`` may be stuck retrying a store that went away."""
        while True:
            lease_margin = self.settings.lease * LEASE_SAFETY_FRACTION
            await asyncio.sleep(min(self.settings.poll_interval, lease_margin / 2))
            self._kill_unrenewed()

    async def watch_jobs(self) -> None:
        """Each poll interval: stop the commands of the jobs cancelled meanwhile (while jobs run),
        and remove the progress files of attempts that ended."""
        while True:
            # A notification may come sooner (PostgreSQL); the read below is the guarantee.
            await self.store.wait_for_cancel(self.settings.poll_interval)
            tokens = [token for token, running in self.jobs.items() if not running.cancelled]
            if tokens:
                await self.stop_cancelled(tokens)
            if self.progress_dir is not None:
                sweep_progress(self.progress_dir, self.jobs)

    async def stop_cancelled(self, tokens: list[str]) -> set[str]:
        """Of these running jobs, stop those cancelled (one read); return their tokens."""
        try:
            cancelled = await self.store.cancelled_claims(tokens)
        except StoreError as exc:  # the next poll asks again; ``run`` says the store fails
            logger.debug("could not look for cancelled jobs: %s", exc)
            return set()
        for token in cancelled:
            running = self.jobs.get(token)
            if running is not None:
                running.cancel()
        return cancelled

    async def keep_retention(self) -> None:
        """Every ``RETENTION_EVERY`` seconds, delete the jobs past ``retention`` (see ``purge_retained``)."""
        while True:
            await asyncio.sleep(RETENTION_EVERY)
            await self.purge_retained()

    async def keep_schedules(self) -> None:
        """Enqueue the schedules' due jobs, at each due time and at least every ``SCHEDULES_EVERY``
        seconds. Every worker does it; the store lets one job through per due time."""
        while True:
            wait = SCHEDULES_EVERY
            try:
                tick = await self.store.enqueue_due_schedules(self._scheduled_job)
            except StoreError as exc:  # the next look tries again
                logger.warning("could not enqueue the schedules' due jobs: %s", exc)
            else:
                for job in tick.enqueued:
                    logger.info("schedule %s enqueued job %s", job.schedule, job.id)
                if tick.next_due_in is not None:
                    wait = max(min(wait, tick.next_due_in), _SCHEDULES_PAUSE)
            await asyncio.sleep(wait)

    def _scheduled_job(self, template: str, due: datetime) -> NewJob:
        """A schedule's job for ``due``, its defaults from the settings as they are now."""
        try:
            return scheduled_job(template, due, self.settings)
        except InvalidInput as exc:  # the store skips this due time
            logger.warning("skipped a schedule's due time: its job is refused now: %s", exc)
            raise

    async def purge_retained(self) -> None:
        """Delete completed and cancelled jobs that finished more than ``retention`` ago (None: keep)."""
        retention = self.settings.retention
        if retention is None:
            return
        now = datetime.fromtimestamp(self._clock(), UTC)
        try:
            deleted = await purge(self.store, older_than=retention, now=now)
        except StoreError as exc:  # the next round tries again
            logger.warning("could not delete jobs past their retention: %s", exc)
            return
        if deleted:
            logger.info("deleted %d jobs finished more than %s ago (retention)", deleted, in_words(retention))

    def _heartbeat_interval(self) -> float:
        """Writes wake every idle worker of the store, so only as often as leases need."""
        return min(self.settings.lease / 3, 10.0)

    async def _heartbeat(self) -> None:
        if await self.store.heartbeat(worker_id=self.worker_id, running=len(self.jobs)):
            self._on_stop()
        await self._renew_leases()

    async def _renew_leases(self) -> None:
        if not self.jobs:
            return
        asked = list(self.jobs.items())
        lease = self.settings.lease
        renewed_at = time.monotonic()
        held = await self.store.renew(
            worker_id=self.worker_id, tokens=[token for token, _ in asked], lease=lease
        )
        missed = []
        for token, running in asked:
            if token in held:
                running.lease_deadline = renewed_at + lease
            elif not running.recording:
                missed.append((token, running))
        if not missed:
            return
        # Not renewed: lost, unless cancelled (the job is no longer processing, yet still held).
        cancelled = await self.stop_cancelled([token for token, _ in missed])
        for token, running in missed:
            if token not in cancelled and not running.cancelled:
                running.lease_lost = True
                running.kill()

    def _kill_unrenewed(self) -> None:
        """A job whose lease could not be renewed dies before the lease runs out.

        Not a cancelled one: its command is being stopped already, and its attempt recorded.
        """
        now = time.monotonic()
        margin = self.settings.lease * LEASE_SAFETY_FRACTION
        for running in self.jobs.values():
            if now > running.lease_deadline - margin and not running.recording and not running.cancelled:
                running.lease_lost = True
                running.kill()

    async def recover_lapsed(self) -> None:
        """Take back jobs whose worker was lost: the attempt counts, then retry or bury.

        A job cancelled while its lost worker ran it stays cancelled; either way its history
        gets a ``lost`` entry.
        """
        try:
            lapsed = await self.store.lapsed_claims()
        except StoreError as exc:
            logger.warning("could not look for lost workers' jobs: %s", exc)
            return
        for claim in lapsed:
            # What is left of the lost attempt on this host must not run beside the next one.
            kill_orphans(claim.token)
            if claim.job.state is JobState.CANCELLED:
                decision = Decision(state=JobState.CANCELLED)
            else:
                decision = retry.decide(claim.job, WORKER_LOST, self.settings)
            holder = claim.holder or Holder()
            lost = EndedAttempt(
                exit_code=None,
                error=WORKER_LOST,
                started_at=claim.job.started_at,
                finished_at=datetime.fromtimestamp(self._clock(), UTC),
                pid=holder.pid,
            )
            outcome = Outcome.of(
                decision, lost, worker=holder.worker, host=holder.host, outcome=AttemptOutcome.LOST
            )
            try:
                taken_back = await self.store.finish(claim, outcome)
            except StoreError as exc:  # the next upkeep tries again
                logger.warning("could not take back %s from a lost worker: %s", claim.job.id, exc)
                return
            if taken_back:
                logger.warning("took back %s from a lost worker: %s", claim.job.id, decision.state.value)
