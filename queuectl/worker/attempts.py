"""The attempts a pool runs: a task per claimed job, from its command to its recorded outcome.

This is the hot path. A claim becomes a task that runs the command (``runner``), asks the retry
policy once (``retry.decide``), and writes the outcome while claiming the next jobs in the same
round trip (``Slots.finish_and_claim``), which start at once. The job's slot is freed only after
its result is written; a task cancelled before that (a stop, a lost lease) puts its job back.

A job cancelled while it runs (``upkeep`` learns of it, or its live output is refused) has its
command stopped through ``Running.stop`` and its attempt recorded as cancelled; so is a result the
store refused because the job was cancelled meanwhile. Output is written for followers while the
command runs only once it has run a while (``live``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from queuectl import retry
from queuectl.config import Settings
from queuectl.display import OneLine
from queuectl.errors import StoreError
from queuectl.models import AttemptOutcome, AttemptRecord, Claim, Decision, Job, JobState, Outcome
from queuectl.storage.base import Store
from queuectl.worker.live import KEEP_FACTOR, PROGRESS_ENV, FirstFlushes, LiveOutput
from queuectl.worker.runner import RunResult, run_command
from queuectl.worker.slots import Running, Slots

if TYPE_CHECKING:
    from queuectl.testing import Faults

__all__ = ("FAULTS", "KILL_GRACE", "Attempts", "PoolStats")

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds between SIGTERM and SIGKILL when a job must die.
KILL_GRACE = 2.0
#: What is recorded for the attempt of a job cancelled while it ran: its state stays ``cancelled``.
KEEP_CANCELLED = Decision(state=JobState.CANCELLED)

#: Test-only fault injection (``queuectl.testing``), imported only when its variable is set:
#: unset, each fault point costs one falsy check.
FAULTS: Faults | None = None
if os.environ.get("QUEUECTL_TEST_CRASH_AT"):
    from queuectl.testing import Faults

    FAULTS = Faults.from_environ()
_ON_SPAWN = FAULTS.on_spawn if FAULTS else None


@dataclass
class PoolStats:
    """What a pool has done so far."""

    completed: int = 0
    failed: int = 0
    dead: int = 0
    cancelled: int = 0
    released: int = 0
    lost: int = 0
    started: float = field(default_factory=time.monotonic)


class Attempts:
    """Starts claimed jobs in ``slots`` and sees each to its end; ``wake`` hears of freed slots.

    ``settings``, ``base_env`` (the environment jobs inherit, encoded once) and ``progress_dir``
    (where commands write their progress files; None: no progress) are the pool's; the history
    names ``worker_id`` and ``host``.
    """

    def __init__(
        self,
        store: Store,
        *,
        slots: Slots,
        stats: PoolStats,
        wake: asyncio.Event,
        clock: Callable[[], float] | None,
        worker_id: str,
        host: str,
    ) -> None:
        self.settings = Settings()
        self.base_env: dict[bytes, bytes] = {}
        self.progress_dir: str | None = None
        self._store = store
        self._slots = slots
        self._stats = stats
        self._wake = wake
        self._clock = clock  # for the runner; None: the system clock, which it reads faster itself
        self._worker_id = worker_id
        self._host = host
        self._first_flushes = FirstFlushes()

    def close(self) -> None:
        """Nothing more is started (the pool has stopped)."""
        self._first_flushes.close()

    def start(self, claims: list[Claim]) -> None:
        if FAULTS:
            FAULTS.at("claimed")
        loop = asyncio.get_running_loop()
        for claim in claims:
            task = asyncio.create_task(self._run(claim), name=f"queuectl-job-{claim.job.id}")
            self._slots.add(
                Running(
                    claim=claim,
                    task=task,
                    lease_deadline=time.monotonic() + self.settings.lease,
                    stop=loop.create_future(),
                )
            )

    async def _run(self, claim: Claim) -> None:
        job = claim.job
        running = self._slots.jobs[claim.token]
        running.started = (self._clock or time.time)()
        if logger.isEnabledFor(logging.INFO):
            logger.info("start %s (attempt %d): %s", job.id, job.attempts, OneLine(job.command))
        # Exported by the shell after the job's own ``env``, which never hides them.
        exports = {"QUEUECTL_JOB_ID": job.id, "QUEUECTL_CLAIM_TOKEN": claim.token}
        progress = None
        if self.progress_dir is not None:
            progress = exports[PROGRESS_ENV] = f"{self.progress_dir}/{claim.token}"
        live = LiveOutput(
            self._store,
            running,
            keep=KEEP_FACTOR * self.settings.output_limit,
            lease=self.settings.lease,
            progress_path=progress,
            on_refused=self._stop_if_cancelled,
        )
        self._first_flushes.add(live)
        try:
            try:
                result = await run_command(
                    job.command,
                    timeout=job.timeout,
                    output_limit=self.settings.output_limit,
                    kill_grace=KILL_GRACE,
                    on_start=running.spawned if _ON_SPAWN is None else _on_start(running),
                    on_output=live.received,
                    stop=running.stop,
                    env=job.env or None,
                    base_env=self.base_env,
                    exports=exports,
                    cwd=job.cwd,
                    clock=self._clock,
                )
            finally:
                flushing = live.stop()  # however the command ended, nothing more is written
            if FAULTS:
                FAULTS.at("exited")
            running.recording = True
            if flushing is not None:
                await asyncio.shield(flushing)
            await self._record(running, result, live.streamed)
        except asyncio.CancelledError:
            if not running.recording:
                await asyncio.shield(self._put_back_after(flushing, running))
            raise
        finally:
            # Only now is the slot free: shutdown waits for results still being written.
            if self._slots.vacate(running):  # else its result refilled the slot: nothing to do
                self._wake.set()

    async def _stop_if_cancelled(self, running: Running) -> bool:
        """Ask the store whether the job was cancelled; if so, stop its command."""
        try:
            cancelled = running.claim.token in await self._store.cancelled_claims([running.claim.token])
        except StoreError as exc:
            logger.debug("could not tell whether %s was cancelled: %s", running.claim.job.id, exc)
            return False
        if cancelled:
            running.cancel()
        return cancelled

    async def _put_back_after(self, flushing: asyncio.Task[None] | None, running: Running) -> None:
        if flushing is not None:
            await flushing
        await self.put_back(running.claim, running)

    async def put_back(self, claim: Claim, running: Running | None = None) -> None:
        """After a cancel: release the job, unless its lease was lost (then the new holder owns it).

        The history gets a ``stopped`` entry for the attempt (``running``: the attempt that ran).
        """
        if running is not None and running.lease_lost:
            self._stats.lost += 1
            logger.warning("killed %s: its lease was lost", claim.job.id)
            return
        attempt = AttemptRecord(
            worker=self._worker_id,
            host=self._host,
            pid=running.pid if running else None,
            started_at=_moment(running.started) if running else None,
            finished_at=_moment((self._clock or time.time)()),
            exit_code=None,
            outcome=AttemptOutcome.STOPPED,
            error="the worker stopped",
        )
        try:
            released = await self._store.release(claim, attempt)
        except StoreError as exc:
            logger.warning("could not put %s back (it runs again after its lease): %s", claim.job.id, exc)
            return
        if released:
            self._stats.released += 1
            logger.info("put back %s: the worker is stopping", claim.job.id)

    async def _record(self, running: Running, result: RunResult, streamed: bool) -> None:
        """Write the result and, in the same round trip, start the jobs claimed with it."""
        job = running.claim.job
        cancelled = running.cancelled
        decision = (
            KEEP_CANCELLED if cancelled else retry.decide(job, result.error, self.settings, result.exit_code)
        )
        outcome = Outcome.of(decision, result, worker=self._worker_id, host=self._host, streamed=streamed)
        lease = self.settings.lease
        try:
            accepted, claims = await self._slots.finish_and_claim(running, outcome, lease)
        except StoreError:  # retried until the lease would have lapsed
            retried = functools.partial(self._slots.finish_and_claim, running, outcome, lease)
            written = await self._patiently(job, retried)
            if written is None:
                return
            accepted, claims = written
        if self._slots.closed:  # asked to stop meanwhile: nothing new starts
            for taken in claims:
                await self.put_back(taken)
        elif claims:
            self.start(claims)
        if not accepted and not cancelled and await self._stop_if_cancelled(running):
            # Cancelled while it ran, and it ended before the worker heard: a cancelled attempt.
            outcome = self._outcome(KEEP_CANCELLED, result, streamed)
            accepted = bool(await self._patiently(job, lambda: self._store.finish(running.claim, outcome)))
        if not accepted:
            self._stats.lost += 1
            logger.warning("result of %s discarded: the job's lease was lost", job.id)
            return
        self._count(outcome.state)
        if logger.isEnabledFor(logging.INFO):
            _log_outcome(job, outcome, result)

    def _outcome(self, decision: Decision, result: RunResult, streamed: bool) -> Outcome:
        return Outcome.of(decision, result, worker=self._worker_id, host=self._host, streamed=streamed)

    async def _patiently(self, job: Job, write: Callable[[], Awaitable[T]]) -> T | None:
        """``write``, retried while the store fails, until the lease would have lapsed (None)."""
        deadline = time.monotonic() + self.settings.lease
        while True:
            try:
                return await write()
            except StoreError as exc:
                if time.monotonic() > deadline:
                    logger.warning("could not record %s; it runs again after its lease: %s", job.id, exc)
                    return None
                await asyncio.sleep(0.2)

    def _count(self, state: JobState) -> None:
        if state is JobState.COMPLETED:
            self._stats.completed += 1
        elif state is JobState.FAILED:
            self._stats.failed += 1
        elif state is JobState.CANCELLED:
            self._stats.cancelled += 1
        else:
            self._stats.dead += 1


def _on_start(running: Running) -> Callable[[int], None]:
    """The runner's ``on_start`` with the ``spawned`` fault point (tests only)."""

    def spawned(pid: int) -> None:
        running.spawned(pid)
        if _ON_SPAWN is not None:
            _ON_SPAWN(pid)

    return spawned


def _moment(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _log_outcome(job: Job, outcome: Outcome, result: RunResult) -> None:
    """The line that says how an attempt ended (only when INFO is on: not a cost otherwise)."""
    duration = (result.finished_at - result.started_at).total_seconds()
    if outcome.state is JobState.COMPLETED:
        logger.info("done %s in %.3fs: %s", job.id, duration, OneLine(job.command))
    elif outcome.state is JobState.CANCELLED:
        logger.info("cancelled %s after %.3fs: %s", job.id, duration, OneLine(job.command))
    else:
        then = f"retry in {outcome.retry_in:g}s" if outcome.state is JobState.FAILED else "dead"
        error = OneLine(str(result.error))
        logger.info("fail %s in %.3fs (%s; %s): %s", job.id, duration, error, then, OneLine(job.command))
