"""The worker pool: claim → run → record, with upkeep (heartbeats, leases, lost workers, stop requests).

One pool is one registered worker process (or one embedding application) that runs
up to ``count`` jobs at a time in the current event loop.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType

from queuectl import retry
from queuectl.config import Settings
from queuectl.errors import StoreError
from queuectl.models import Claim, JobState, Outcome
from queuectl.storage.base import Store
from queuectl.worker.orphans import kill_orphans
from queuectl.worker.runner import RunResult, run_command

logger = logging.getLogger(__name__)

#: Seconds between SIGTERM and SIGKILL when a job must die.
KILL_GRACE = 2.0
#: A job is killed this long before its lease runs out if the lease could not be renewed.
LEASE_SAFETY_FRACTION = 0.2
WORKER_LOST = "worker lost (lease expired)"

#: Test-only fault injection (tests/test_faults_crash.py): with ``QUEUECTL_TEST_CRASH_AT`` set to
#: ``claimed`` (just after a claim commits), ``spawned`` (just after a job's shell starts) or
#: ``exited`` (after the job ended, before its result is written), the worker process SIGKILLs
#: itself there; ``POINT:SIGSTOP`` freezes it there instead. Read once at import; unset, each point
#: costs one falsy check.
_CRASH_AT, _, _CRASH_SIGNAL = os.environ.get("QUEUECTL_TEST_CRASH_AT", "").partition(":")


def _crash_at(point: str) -> None:
    if point == _CRASH_AT:
        os.kill(os.getpid(), signal.Signals[_CRASH_SIGNAL or "SIGKILL"])


def _crash_on_spawn(pid: int) -> None:
    _crash_at("spawned")


_ON_SPAWN = _crash_on_spawn if _CRASH_AT else None


class Mode(str, enum.Enum):
    """When a pool stops by itself."""

    FOREVER = "forever"  # until asked to stop
    BURST = "burst"  # when nothing is due now and nothing runs here
    DRAIN = "drain"  # when nothing is pending, failed or processing anywhere


@dataclass(eq=False)
class _Running:
    claim: Claim
    task: asyncio.Task[None]
    lease_deadline: float  # monotonic: kill the job before this if the lease cannot be renewed
    lease_lost: bool = False
    recording: bool = False  # the command has ended; only its result is being written
    refilled: bool = False  # its slot, and every free one it asked for, went to jobs claimed with its result

    def kill(self) -> None:
        """Cancel the command (not the writing of its result, which is conditional anyway)."""
        if not self.recording and not self.task.done():
            self.task.cancel()


@dataclass
class PoolStats:
    """What a pool has done so far."""

    completed: int = 0
    failed: int = 0
    dead: int = 0
    released: int = 0
    lost: int = 0
    started: float = field(default_factory=time.monotonic)


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class WorkerPool:
    """Runs jobs from ``store`` in the current event loop.

    ``count`` jobs at a time from ``queues`` (all queues when ``None``), until
    ``mode`` says to stop or ``stop()`` is called. On a stop request it claims
    nothing new, lets running jobs finish within ``grace`` seconds, then kills
    them and puts them back to ``pending`` without counting the attempt.

    Run it in the foreground with ``await pool.run()``, or in the background::

        async with queue.pool(count=4) as pool:
            ...  # jobs run meanwhile; leaving the block stops the pool gracefully
    """

    def __init__(
        self,
        store: Store,
        *,
        count: int = 1,
        queues: Sequence[str] | None = None,
        mode: Mode | str = Mode.FOREVER,
        idle_timeout: float | None = None,
        grace: float = 30.0,
        worker_id: str | None = None,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.store = store
        self.count = count
        self.queues = list(queues) if queues else None
        self.mode = Mode(mode)
        self.idle_timeout = idle_timeout
        self.grace = grace
        self.worker_id = worker_id or new_worker_id()
        self.stats = PoolStats()
        self.settings = Settings()
        self._running: dict[str, _Running] = {}
        self._reserved = 0  # free slots that claims in flight may fill
        self._stopping = False
        self._hard_stop = False
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._base_env: dict[bytes, bytes] = {}

    # --- control ---------------------------------------------------------------------------

    @property
    def running_jobs(self) -> int:
        return len(self._running)

    def request_stop(self) -> None:
        """Stop gracefully; a second request ends the grace period at once."""
        if self._stopping:
            self._hard_stop = True
        self._stopping = True
        self._wake.set()

    async def start(self) -> WorkerPool:
        """Run the pool in a background task of the current loop."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"queuectl-pool-{self.worker_id}")
        return self

    async def stop(self) -> None:
        """Ask the pool to stop and wait until it has."""
        self.request_stop()
        await self.wait_stopped()

    async def wait_stopped(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)
        else:
            await self._stopped.wait()

    async def __aenter__(self) -> WorkerPool:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- the main loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Run until the mode's end condition or a stop request; return when all is put away."""
        self.settings = await self.store.settings()
        self._base_env = dict(os.environb)  # jobs inherit the environment as it is when the pool starts
        await self.store.register_worker(worker_id=self.worker_id, host=socket.gethostname(), pid=os.getpid())
        upkeep = [
            asyncio.create_task(self._upkeep_loop(), name="queuectl-upkeep"),
            asyncio.create_task(self._lease_guard_loop(), name="queuectl-lease-guard"),
        ]
        try:
            await self._recover_lapsed()
            await self._dispatch()
            await self._finish_running()
        finally:
            for task in upkeep:
                task.cancel()
            await asyncio.gather(*upkeep, return_exceptions=True)
            await self._cancel_running()
            await self._unregister()
            self._stopped.set()

    async def _dispatch(self) -> None:
        idle_since = time.monotonic()
        while not self._stopping:
            free = self._free_slots()
            if free > 0:
                claims = await self._claim(free)
                if claims:
                    self._launch_all(claims)
                    idle_since = time.monotonic()
                    continue
                if await self._should_exit(idle_since):
                    return
                await self._idle_wait(await self._idle_timeout_seconds())
            else:
                self._wake.clear()
                await self._wake.wait()
            if self._running:
                idle_since = time.monotonic()

    def _free_slots(self) -> int:
        return self.count - len(self._running) - self._reserved

    async def _claim(self, limit: int) -> list[Claim]:
        self._reserved += limit
        try:
            return await self.store.claim(
                worker_id=self.worker_id, queues=self.queues, limit=limit, lease=self.settings.lease
            )
        except StoreError as error:
            logger.warning("could not claim jobs: %s", error)
        finally:
            self._reserved -= limit
        await asyncio.sleep(min(self.settings.poll_interval, 1.0))
        return []

    async def _should_exit(self, idle_since: float) -> bool:
        if self._running:
            return False
        if self.mode is Mode.BURST:
            return True
        if self.mode is Mode.DRAIN and not await self._has_unfinished():
            return True
        return self.idle_timeout is not None and time.monotonic() - idle_since >= self.idle_timeout

    async def _has_unfinished(self) -> bool:
        try:
            return await self.store.has_unfinished(self.queues)
        except StoreError:
            return True

    async def _idle_timeout_seconds(self) -> float:
        """Sleep at most a poll interval, less when a scheduled job comes due sooner."""
        timeout = self.settings.poll_interval
        try:
            due_in = await self.store.next_run_at(self.queues)
        except StoreError:
            due_in = None
        # A job due now that the claim did not get (another worker won it) is no reason to
        # spin: the next change, or the poll interval, brings the next chance.
        if due_in is not None and due_in > 0:
            timeout = min(timeout, due_in)
        if self.idle_timeout is not None:
            timeout = min(timeout, self.idle_timeout)
        return max(timeout, 0.001)

    async def _idle_wait(self, timeout: float) -> None:
        """Wait for a store change, a finished job or a stop request."""
        self._wake.clear()
        changed = asyncio.ensure_future(self.store.wait_for_change(timeout))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({changed, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (changed, woken):
                waiter.cancel()
            await asyncio.gather(changed, woken, return_exceptions=True)

    # --- one job ---------------------------------------------------------------------------

    def _launch_all(self, claims: list[Claim]) -> None:
        if _CRASH_AT:
            _crash_at("claimed")
        for claim in claims:
            self._launch(claim)

    def _launch(self, claim: Claim) -> None:
        task = asyncio.create_task(self._run_job(claim), name=f"queuectl-job-{claim.job.id}")
        self._running[claim.token] = _Running(
            claim=claim, task=task, lease_deadline=time.monotonic() + self.settings.lease
        )

    async def _run_job(self, claim: Claim) -> None:
        job = claim.job
        running = self._running[claim.token]
        logger.info("start %s (attempt %d): %s", job.id, job.attempts, job.command)
        try:
            try:
                result = await run_command(
                    job.command,
                    timeout=job.timeout,
                    output_limit=self.settings.output_limit,
                    kill_grace=KILL_GRACE,
                    on_start=_ON_SPAWN,
                    env={"QUEUECTL_JOB_ID": job.id, "QUEUECTL_CLAIM_TOKEN": claim.token},
                    base_env=self._base_env,
                )
            except asyncio.CancelledError:
                await asyncio.shield(self._put_back(claim))
                raise
            if _CRASH_AT:
                _crash_at("exited")
            running.recording = True
            await self._record(claim, result)
        finally:
            # Only now is the slot free: shutdown waits for results still being written.
            del self._running[claim.token]
            if not running.refilled or self._stopping:  # else the dispatcher has nothing to do
                self._wake.set()

    async def _put_back(self, claim: Claim) -> None:
        """After a cancel: release the job, unless its lease was lost (then the new holder owns it)."""
        running = self._running.get(claim.token)
        if running is not None and running.lease_lost:
            self.stats.lost += 1
            logger.warning("killed %s: its lease was lost", claim.job.id)
            return
        try:
            released = await self.store.release(claim)
        except StoreError as error:
            logger.warning("could not put %s back (it runs again after its lease): %s", claim.job.id, error)
            return
        if released:
            self.stats.released += 1
            logger.info("put back %s: the worker is stopping", claim.job.id)

    async def _record(self, claim: Claim, result: RunResult) -> None:
        outcome = self._outcome(claim, result)
        deadline = time.monotonic() + self.settings.lease
        while True:
            try:
                accepted = await self._finish_and_claim_next(claim, outcome)
                break
            except StoreError as error:
                if time.monotonic() > deadline:
                    logger.warning(
                        "could not record %s; it runs again after its lease: %s", claim.job.id, error
                    )
                    return
                await asyncio.sleep(0.2)
        duration = (result.finished_at - result.started_at).total_seconds()
        if not accepted:
            self.stats.lost += 1
            logger.warning("result of %s discarded: the job's lease was lost", claim.job.id)
            return
        self._count(outcome.state)
        if outcome.state is JobState.COMPLETED:
            logger.info("done %s in %.3fs: %s", claim.job.id, duration, claim.job.command)
        else:
            then = f"retry in {outcome.retry_in:g}s" if outcome.state is JobState.FAILED else "dead"
            job = claim.job
            logger.info("fail %s in %.3fs (%s; %s): %s", job.id, duration, outcome.error, then, job.command)

    async def _finish_and_claim_next(self, claim: Claim, outcome: Outcome) -> bool:
        """Record the result and, in the same round trip, claim jobs for this slot and any free one."""
        extra = 0 if self._stopping else self._free_slots()  # this job still holds its own slot
        limit = 0 if self._stopping else extra + 1
        self._reserved += extra
        try:
            accepted, claims = await self.store.finish_and_claim(
                claim,
                outcome,
                worker_id=self.worker_id,
                queues=self.queues,
                limit=limit,
                lease=self.settings.lease,
            )
        finally:
            self._reserved -= extra
        if self._stopping:  # asked to stop meanwhile: nothing new starts
            for taken in claims:
                await self._put_back(taken)
        elif claims:
            self._launch_all(claims)
            self._running[claim.token].refilled = len(claims) == limit
        return accepted

    def _outcome(self, claim: Claim, result: RunResult) -> Outcome:
        attempts = claim.job.attempts
        if result.error is None:
            state, retry_in = JobState.COMPLETED, 0.0
        else:
            state = retry.next_state(attempts, claim.job.max_retries)
            retry_in = retry.retry_delay(attempts, self.settings) if state is JobState.FAILED else 0.0
        return Outcome(
            state=state,
            exit_code=result.exit_code,
            error=result.error,
            started_at=result.started_at,
            finished_at=result.finished_at,
            stdout=result.stdout,
            stderr=result.stderr,
            retry_in=retry_in,
        )

    def _count(self, state: JobState) -> None:
        if state is JobState.COMPLETED:
            self.stats.completed += 1
        elif state is JobState.FAILED:
            self.stats.failed += 1
        else:
            self.stats.dead += 1

    # --- shutdown --------------------------------------------------------------------------

    async def _finish_running(self) -> None:
        """Let running jobs finish within the grace period (or until a second stop request)."""
        deadline = time.monotonic() + self.grace
        while self._running and not self._hard_stop:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return

    async def _cancel_running(self) -> None:
        tasks = [running.task for running in self._running.values()]
        for running in self._running.values():
            running.kill()
        if tasks:
            await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))

    async def _unregister(self) -> None:
        try:
            await asyncio.shield(self.store.unregister_worker(self.worker_id))
        except StoreError as error:
            logger.warning("could not unregister worker %s: %s", self.worker_id, error)

    # --- upkeep ----------------------------------------------------------------------------

    async def _upkeep_loop(self) -> None:
        next_heartbeat = 0.0
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            try:
                if time.monotonic() >= next_heartbeat:
                    await self._heartbeat()
                    next_heartbeat = time.monotonic() + self._heartbeat_interval()
                else:
                    await self._check_stop_request(await self.store.stop_requested(self.worker_id))
                self.settings = await self.store.settings()
                await self._recover_lapsed()
            except StoreError as error:
                logger.warning("upkeep failed, will retry: %s", error)

    async def _lease_guard_loop(self) -> None:
        """On its own timer: upkeep may be stuck retrying a store that went away."""
        while True:
            lease_margin = self.settings.lease * LEASE_SAFETY_FRACTION
            await asyncio.sleep(min(self.settings.poll_interval, lease_margin / 2))
            self._kill_unrenewed()

    def _heartbeat_interval(self) -> float:
        """Writes wake every idle worker of the store, so only as often as leases need."""
        return min(self.settings.lease / 3, 10.0)

    async def _heartbeat(self) -> None:
        await self._check_stop_request(
            await self.store.heartbeat(worker_id=self.worker_id, running=len(self._running))
        )
        await self._renew_leases()

    async def _check_stop_request(self, asked: bool) -> None:
        if asked and not self._stopping:  # once: a repeat would end the grace period
            logger.info("stop requested through the store")
            self.request_stop()

    async def _renew_leases(self) -> None:
        if not self._running:
            return
        asked = list(self._running.items())
        lease = self.settings.lease
        renewed_at = time.monotonic()
        held = await self.store.renew(
            worker_id=self.worker_id, tokens=[token for token, _ in asked], lease=lease
        )
        for token, running in asked:
            if token in held:
                running.lease_deadline = renewed_at + lease
            elif not running.recording:
                running.lease_lost = True
                running.kill()

    def _kill_unrenewed(self) -> None:
        """A job whose lease could not be renewed dies before the lease runs out."""
        now = time.monotonic()
        margin = self.settings.lease * LEASE_SAFETY_FRACTION
        for running in self._running.values():
            if now > running.lease_deadline - margin and not running.recording:
                running.lease_lost = True
                running.kill()

    async def _recover_lapsed(self) -> None:
        """Take back jobs whose worker was lost: the attempt counts, then retry or bury."""
        try:
            lapsed = await self.store.lapsed_claims()
        except StoreError as error:
            logger.warning("could not look for lost workers' jobs: %s", error)
            return
        for claim in lapsed:
            # What is left of the lost attempt on this host must not run beside the next one.
            kill_orphans(claim.token)
            attempts = claim.job.attempts
            state = retry.next_state(attempts, claim.job.max_retries)
            retry_in = retry.retry_delay(attempts, self.settings) if state is JobState.FAILED else 0.0
            outcome = Outcome(
                state=state,
                exit_code=None,
                error=WORKER_LOST,
                started_at=None,
                finished_at=datetime.now(UTC),
                retry_in=retry_in,
            )
            try:
                taken_back = await self.store.finish(claim, outcome)
            except StoreError as error:  # the next upkeep tries again
                logger.warning("could not take back %s from a lost worker: %s", claim.job.id, error)
                return
            if taken_back:
                logger.warning("took back %s from a lost worker: %s", claim.job.id, state.value)
