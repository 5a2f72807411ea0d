"""The worker pool: claim → run → record, in supervised tasks of the current event loop.

One pool is one registered worker process (or one embedding application) that runs up to
``count`` jobs at a time. The pool owns the lifecycle: the dispatcher, which claims for free
slots when nothing else does, the upkeep tasks, and the order in which all of it starts and
stops. How many jobs to claim is decided in ``slots``; each job's task is in ``attempts``;
heartbeats, leases, lost workers, cancelled jobs, stop requests and retention are ``upkeep``'s;
one command's process group is the ``runner``'s.

Upkeep is supervised. If it fails for any reason but a passing ``StoreError``, nobody renews this
worker's leases any more: the pool claims nothing new, lets running jobs finish while their leases
hold (and within the grace period), puts the others back as a stop does, and ``run()`` raises
``WorkerFailed``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from queuectl.config import Settings
from queuectl.display import in_words, quantity
from queuectl.errors import StoreError, WorkerFailed
from queuectl.models import Claim
from queuectl.storage.base import Store
from queuectl.worker.attempts import FAULTS, KILL_GRACE, Attempts, PoolStats
from queuectl.worker.slots import Slots
from queuectl.worker.tally import Tally
from queuectl.worker.upkeep import Upkeep, kill_deadline

__all__ = ("KILL_GRACE", "Mode", "PoolStats", "WorkerPool", "new_worker_id")

logger = logging.getLogger(__name__)

#: An idle pool says when the next job is due if that is at least this many seconds away (and
#: this much later than the due time it said last): a retry due at once is no news.
ANNOUNCE_AFTER = 1.0


class Mode(str, enum.Enum):
    """When a pool stops by itself."""

    FOREVER = "forever"  # until asked to stop
    BURST = "burst"  # when nothing is due now and nothing runs here
    DRAIN = "drain"  # when nothing is pending, failed or processing anywhere


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class WorkerPool:
    """Runs jobs from ``store`` in the current event loop.

    ``count`` jobs at a time from ``queues`` (all queues when ``None``), until
    ``mode`` says to stop or ``stop()`` is called. On a stop request it claims
    nothing new, lets running jobs finish within ``grace`` seconds, then kills
    them and puts them back to ``pending`` without counting the attempt.
    ``clock`` is the wall-clock time in epoch seconds that attempts are timed with; by default
    the store's (``Store.clock``: on PostgreSQL, the server's, whatever this host's clock says).

    Run it in the foreground with ``await pool.run()``, or in the background::

        async with queue.pool(count=4) as pool:
            ...  # jobs run meanwhile; leaving the block stops the pool gracefully

    If its upkeep fails, the pool stops by itself and ``run()`` (or ``stop()``,
    or leaving the block) raises ``WorkerFailed``.
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
        clock: Callable[[], float] | None = None,
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
        self.clock = clock = clock or store.clock
        self.host = socket.gethostname()
        self.stats = PoolStats()
        self._slots = Slots(store, count=count, worker_id=self.worker_id, queues=self.queues)
        self._wake = asyncio.Event()  # a slot was freed, a stop was asked for, or upkeep failed
        self._attempts = Attempts(
            store,
            slots=self._slots,
            stats=self.stats,
            wake=self._wake,
            clock=None if clock is time.time else clock,  # None: the runner reads it faster itself
            worker_id=self.worker_id,
            host=self.host,
        )
        self._hard_stop = False
        self._announced_due: float | None = None  # the due time of the latest "next job due" line
        self._failure: tuple[str, BaseException] | None = None  # which supervised task, and why
        self._supervised: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- control ---------------------------------------------------------------------------

    @property
    def running_jobs(self) -> int:
        return len(self._slots.jobs)

    @property
    def settings(self) -> Settings:
        """The settings in use: read from the store at start, then once a poll interval."""
        return self._attempts.settings

    @property
    def stopping(self) -> bool:
        """Whether the pool was asked to stop (or is stopping by itself): it claims nothing new."""
        return self._slots.closed

    def request_stop(self, *, now: bool = False) -> None:
        """Stop gracefully; a second request, or ``now=True``, ends the grace period at once."""
        if now or self._slots.closed:
            self._hard_stop = True
        self._slots.closed = True
        self._wake.set()

    def stop_plan(self) -> str | None:
        """What a stop does now, for people: ``waiting up to 30s for 1 running job``; None if none runs."""
        running = self.running_jobs
        if not running:
            return None
        jobs = quantity(running, "running job")
        if self._hard_stop or self.grace <= 0:
            return f"putting {jobs} back to pending"
        return f"waiting up to {self.grace:g}s for {jobs}"

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
        """Run until the mode's end condition or a stop request; return when all is put away.

        Raises ``WorkerFailed`` if upkeep failed (once the jobs are put away all the same).
        """
        self._use_settings(await self.store.settings())
        self._attempts.base_env = dict(os.environb)  # jobs inherit the environment as the pool starts
        await self.store.register_worker(worker_id=self.worker_id, host=self.host, pid=os.getpid())
        progress_dir = self._attempts.progress_dir = _progress_dir()
        tally = Tally(self.store, self.stats, self.clock)
        upkeep = Upkeep(
            FAULTS.wrap(self.store) if FAULTS else self.store,
            worker_id=self.worker_id,
            jobs=self._slots.jobs,
            settings=self.settings,
            on_settings=self._use_settings,
            on_stop=self._stop_requested_by_store,
            clock=self.clock,
            progress_dir=progress_dir,
            on_queues=self._slots.use_queue_settings,
            tally=tally,
        )
        self._supervised = [
            self._supervise(upkeep.run(), "upkeep"),
            self._supervise(upkeep.guard_leases(), "lease guard"),
            self._supervise(upkeep.watch_jobs(), "job watch"),
            self._supervise(upkeep.keep_retention(), "retention"),
            self._supervise(upkeep.keep_schedules(), "schedules"),
        ]
        try:
            await upkeep.read_queues()  # before the first claim: a paused queue stays paused
            await upkeep.purge_retained()
            await upkeep.recover_lapsed()
            await self._dispatch()
            await self._finish_running()
        finally:
            await self._end_supervised()
            await self._cancel_running()
            await asyncio.shield(tally.write())
            await self._unregister()
            self._attempts.close()
            self._attempts.progress_dir = None
            if progress_dir is not None:
                shutil.rmtree(progress_dir, ignore_errors=True)
            self._stopped.set()
        if self._failure is not None:
            name, exc = self._failure
            raise WorkerFailed(
                f"worker {self.worker_id} stopped: its {name} failed: {type(exc).__name__}: {exc}"
            ) from exc

    def _use_settings(self, settings: Settings) -> None:
        self._attempts.settings = settings

    def _stop_requested_by_store(self) -> None:
        if not self._slots.closed:  # once: a repeat would end the grace period
            self.request_stop()
            plan = self.stop_plan()
            logger.info("stop requested through the store%s", f": {plan}" if plan else "")

    async def _dispatch(self) -> None:
        idle_since = time.monotonic()
        while not self._slots.closed:
            if self._slots.free() > 0:
                claims = await self._claim()
                if claims:
                    self._attempts.start(claims)
                    idle_since = time.monotonic()
                    continue
                if await self._should_exit(idle_since):
                    return
                await self._idle_wait(await self._idle_timeout_seconds())
            else:
                self._wake.clear()
                await self._wake.wait()
            if self._slots.jobs:
                idle_since = time.monotonic()

    async def _claim(self) -> list[Claim]:
        try:
            return await self._slots.claim(self.settings.lease)
        except StoreError as exc:
            logger.warning("could not claim jobs: %s", exc)
        await asyncio.sleep(min(self.settings.poll_interval, 1.0))
        return []

    async def _should_exit(self, idle_since: float) -> bool:
        if self._slots.jobs:
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
            if not self._slots.jobs and logger.isEnabledFor(logging.INFO):
                self._announce_due(due_in)
        if self.idle_timeout is not None:
            timeout = min(timeout, self.idle_timeout)
        return max(timeout, 0.001)

    def _announce_due(self, due_in: float) -> None:
        """Say when the next job is due, once per due time, when an idle pool waits for it."""
        if due_in < ANNOUNCE_AFTER:
            return
        due = self.clock() + due_in
        if self._announced_due is not None and abs(due - self._announced_due) < ANNOUNCE_AFTER:
            return
        self._announced_due = due
        when = datetime.fromtimestamp(due, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        logger.info("next job due %s, in %s", when, in_words(due_in))

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

    # --- supervision -----------------------------------------------------------------------

    def _supervise(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=f"queuectl-{name.replace(' ', '-')}")
        task.add_done_callback(lambda ended: self._supervised_ended(name, ended))
        return task

    def _supervised_ended(self, name: str, task: asyncio.Task[None]) -> None:
        """Upkeep never ends by itself: if it did, the pool stops, bounded by its leases."""
        if task.cancelled():
            return
        exc = task.exception() or RuntimeError("it returned")
        if self._failure is not None:
            return
        self._failure = (name, exc)
        for other in self._supervised:
            other.cancel()  # the wind-down kills jobs before their leases need renewing
        self._slots.closed = True
        self._wake.set()

    async def _end_supervised(self) -> None:
        for task in self._supervised:
            task.cancel()
        await asyncio.gather(*self._supervised, return_exceptions=True)

    # --- shutdown --------------------------------------------------------------------------

    async def _finish_running(self) -> None:
        """Let running jobs finish within the grace period (or until a second stop request).

        After an upkeep failure, only while their leases hold: nobody renews them any more.
        """
        deadline = time.monotonic() + self.grace
        while self._slots.jobs and not self._hard_stop:
            end = deadline
            if self._failure is not None:
                end = min(end, kill_deadline(self._slots.jobs, self.settings.lease))
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                async with asyncio.timeout(remaining):  # not wait_for: it may swallow a cancel
                    await self._wake.wait()
            except TimeoutError:
                return

    async def _cancel_running(self) -> None:
        jobs = self._slots.jobs.values()
        tasks = [running.task for running in jobs]
        for running in jobs:
            running.kill()
        if tasks:
            await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))

    async def _unregister(self) -> None:
        try:
            await asyncio.shield(self.store.unregister_worker(self.worker_id))
        except StoreError as exc:
            logger.warning("could not unregister worker %s: %s", self.worker_id, exc)


def _progress_dir() -> str | None:
    """A directory of this pool's own for its commands' progress files (None: none could be made)."""
    try:
        return tempfile.mkdtemp(prefix="queuectl-progress-")
    except OSError as exc:
        logger.warning("no temporary directory for progress files, so no progress: %s", exc)
        return None
