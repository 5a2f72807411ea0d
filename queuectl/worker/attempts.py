"""The attempts a pool runs: a task per claimed job, from its command to its recorded outcome.

This is the hot path. A claim becomes a task that runs the command (``runner``), asks the retry
policy once (``retry.decide``), and writes the outcome while claiming the next jobs in the same
round trip (``Slots.finish_and_claim``), which start at once. The job's slot is freed only after
its result is written; a task cancelled before that (a stop, a lost lease) puts its job back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from queuectl import retry
from queuectl.config import Settings
from queuectl.display import OneLine
from queuectl.errors import StoreError
from queuectl.models import Claim, Job, JobState, Outcome
from queuectl.storage.base import Store
from queuectl.worker.runner import RunResult, run_command
from queuectl.worker.slots import Running, Slots

if TYPE_CHECKING:
    from queuectl.testing import Faults

__all__ = ("FAULTS", "KILL_GRACE", "Attempts", "PoolStats")

logger = logging.getLogger(__name__)

#: Seconds between SIGTERM and SIGKILL when a job must die.
KILL_GRACE = 2.0

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
    released: int = 0
    lost: int = 0
    started: float = field(default_factory=time.monotonic)


class Attempts:
    """Starts claimed jobs in ``slots`` and sees each to its end; ``wake`` hears of freed slots.

    ``settings`` and ``base_env`` (the environment jobs inherit, encoded once) are the pool's.
    """

    def __init__(
        self,
        store: Store,
        *,
        slots: Slots,
        stats: PoolStats,
        wake: asyncio.Event,
        clock: Callable[[], float] | None,
    ) -> None:
        self.settings = Settings()
        self.base_env: dict[bytes, bytes] = {}
        self._store = store
        self._slots = slots
        self._stats = stats
        self._wake = wake
        self._clock = clock  # for the runner; None: the system clock, which it reads faster itself

    def start(self, claims: list[Claim]) -> None:
        if FAULTS:
            FAULTS.at("claimed")
        for claim in claims:
            task = asyncio.create_task(self._run(claim), name=f"queuectl-job-{claim.job.id}")
            self._slots.add(
                Running(claim=claim, task=task, lease_deadline=time.monotonic() + self.settings.lease)
            )

    async def _run(self, claim: Claim) -> None:
        job = claim.job
        running = self._slots.jobs[claim.token]
        if logger.isEnabledFor(logging.INFO):
            logger.info("start %s (attempt %d): %s", job.id, job.attempts, OneLine(job.command))
        try:
            try:
                result = await run_command(
                    job.command,
                    timeout=job.timeout,
                    output_limit=self.settings.output_limit,
                    kill_grace=KILL_GRACE,
                    on_start=_ON_SPAWN,
                    env={"QUEUECTL_JOB_ID": job.id, "QUEUECTL_CLAIM_TOKEN": claim.token},
                    base_env=self.base_env,
                    clock=self._clock,
                )
            except asyncio.CancelledError:
                await asyncio.shield(self.put_back(claim))
                raise
            if FAULTS:
                FAULTS.at("exited")
            running.recording = True
            await self._record(running, result)
        finally:
            # Only now is the slot free: shutdown waits for results still being written.
            if self._slots.vacate(running):  # else its result refilled the slot: nothing to do
                self._wake.set()

    async def put_back(self, claim: Claim) -> None:
        """After a cancel: release the job, unless its lease was lost (then the new holder owns it)."""
        running = self._slots.jobs.get(claim.token)
        if running is not None and running.lease_lost:
            self._stats.lost += 1
            logger.warning("killed %s: its lease was lost", claim.job.id)
            return
        try:
            released = await self._store.release(claim)
        except StoreError as exc:
            logger.warning("could not put %s back (it runs again after its lease): %s", claim.job.id, exc)
            return
        if released:
            self._stats.released += 1
            logger.info("put back %s: the worker is stopping", claim.job.id)

    async def _record(self, running: Running, result: RunResult) -> None:
        """Write the result and, in the same round trip, start the jobs claimed with it."""
        job = running.claim.job
        outcome = Outcome.of(retry.decide(job, result.error, self.settings), result)
        deadline = time.monotonic() + self.settings.lease
        while True:
            try:
                accepted, claims = await self._slots.finish_and_claim(running, outcome, self.settings.lease)
                break
            except StoreError as exc:
                if time.monotonic() > deadline:
                    logger.warning("could not record %s; it runs again after its lease: %s", job.id, exc)
                    return
                await asyncio.sleep(0.2)
        if self._slots.closed:  # asked to stop meanwhile: nothing new starts
            for taken in claims:
                await self.put_back(taken)
        elif claims:
            self.start(claims)
        if not accepted:
            self._stats.lost += 1
            logger.warning("result of %s discarded: the job's lease was lost", job.id)
            return
        self._count(outcome.state)
        if logger.isEnabledFor(logging.INFO):
            _log_outcome(job, outcome, result)

    def _count(self, state: JobState) -> None:
        if state is JobState.COMPLETED:
            self._stats.completed += 1
        elif state is JobState.FAILED:
            self._stats.failed += 1
        else:
            self._stats.dead += 1


def _log_outcome(job: Job, outcome: Outcome, result: RunResult) -> None:
    """The line that says how an attempt ended (only when INFO is on: not a cost otherwise)."""
    duration = (result.finished_at - result.started_at).total_seconds()
    if outcome.state is JobState.COMPLETED:
        logger.info("done %s in %.3fs: %s", job.id, duration, OneLine(job.command))
    else:
        then = f"retry in {outcome.retry_in:g}s" if outcome.state is JobState.FAILED else "dead"
        error = OneLine(str(result.error))
        logger.info("fail %s in %.3fs (%s; %s): %s", job.id, duration, error, then, OneLine(job.command))
