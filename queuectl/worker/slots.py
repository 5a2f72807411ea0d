"""A pool's capacity, in one place: which of its ``count`` slots run a job, wait for a claim, or are free.

Each slot is free, reserved for a claim in flight, or held by a running job from its claim until its
result is written. Every claim the pool makes goes through here, so that ``count`` bounds the
commands running at once however the claims interleave: the dispatcher's claims for free slots,
and the claims a finished job makes in the same round trip as its result (``finish_and_claim``),
for its own slot and for any free one. A finished job whose claims filled its slot and every free
one it asked for has *refilled* its slot: the dispatcher has nothing to do and is not woken.

While a queue the pool serves is paused or limited (``use_queue_settings``, each poll interval),
every claim is the store's ``flow`` claim, which honours the queues' settings in its transaction;
otherwise the plain claim, which costs nothing more than before queues had settings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from queuectl.models import Claim, Outcome
from queuectl.queues import QueueSettings
from queuectl.storage.base import Store

__all__ = ("CANCELLED", "Running", "Slots")

#: Why the command of a job cancelled while it ran was stopped: the ``error`` of its attempt.
CANCELLED = "cancelled"


@dataclass(eq=False, slots=True)
class Running:
    """A slot's job, from its claim until its result is written."""

    claim: Claim
    task: asyncio.Task[None]
    lease_deadline: float  # monotonic: kill the job before this if the lease cannot be renewed
    lease_lost: bool = False
    recording: bool = False  # the command has ended; only its result is being written
    refilled: bool = False  # its slot, and every free one it asked for, went to jobs claimed with its result
    stop: asyncio.Future[str] | None = None  # the runner stops the command when this gets a reason
    pid: int | None = None  # the shell's, once it runs
    started: float | None = None  # wall-clock time (epoch seconds) the attempt started

    def kill(self) -> None:
        """Cancel the command (not the writing of its result, which is conditional anyway)."""
        if not self.recording and not self.task.done():
            self.task.cancel()

    def cancel(self) -> None:
        """The job was cancelled: stop its command (TERM, then KILL), then record it as cancelled."""
        if self.stop is not None and not self.stop.done():
            self.stop.set_result(CANCELLED)

    @property
    def cancelled(self) -> bool:
        """Whether the worker learnt that the job was cancelled while it ran."""
        return self.stop is not None and self.stop.done()

    def spawned(self, pid: int) -> None:
        """The runner's ``on_start``."""
        self.pid = pid


class Slots:
    """``count`` slots; ``jobs`` is the table of running jobs by claim token.

    Once ``closed`` (the pool is stopping), no slot is free and a finished job claims nothing.
    """

    def __init__(self, store: Store, *, count: int, worker_id: str, queues: Sequence[str] | None) -> None:
        self.count = count
        self.jobs: dict[str, Running] = {}
        self.closed = False
        self._reserved = 0  # free slots that claims in flight may fill
        self._store = store
        self._worker_id = worker_id
        self._queues = queues
        self.flow = False  # whether claims honour queues' pauses and limits (``use_queue_settings``)

    def use_queue_settings(self, settings: Sequence[QueueSettings]) -> None:
        """Claim with the ``flow`` claim while a queue this pool serves has a setting."""
        served = None if self._queues is None else set(self._queues)
        self.flow = any(item.any and (served is None or item.name in served) for item in settings)

    def free(self) -> int:
        """Slots neither running a job nor waiting for a claim in flight."""
        if self.closed:
            return 0
        return self.count - len(self.jobs) - self._reserved

    def add(self, running: Running) -> None:
        self.jobs[running.claim.token] = running

    def vacate(self, running: Running) -> bool:
        """Free the slot of a job whose result is written; True if the dispatcher has to hear of it."""
        del self.jobs[running.claim.token]
        return self.closed or not running.refilled

    async def claim(self, lease: float) -> list[Claim]:
        """Claim due jobs for every free slot (``StoreError`` passes through)."""
        limit = self.free()
        self._reserved += limit
        try:
            return await self._store.claim(
                worker_id=self._worker_id, queues=self._queues, limit=limit, lease=lease, flow=self.flow
            )
        finally:
            self._reserved -= limit

    async def finish_and_claim(
        self, running: Running, outcome: Outcome, lease: float
    ) -> tuple[bool, list[Claim]]:
        """Record ``running``'s outcome and, in the same round trip, claim jobs for its slot and any free one.

        Returns whether the result was accepted (the claim still held the job) and the new claims;
        claims that arrive after the slots closed are the caller's to put back.
        """
        extra = self.free()  # this job still holds its own slot
        limit = 0 if self.closed else extra + 1
        self._reserved += extra
        try:
            accepted, claims = await self._store.finish_and_claim(
                running.claim,
                outcome,
                worker_id=self._worker_id,
                queues=self._queues,
                limit=limit,
                lease=lease,
                flow=self.flow,
            )
        finally:
            self._reserved -= extra
        if claims and not self.closed:
            running.refilled = len(claims) == limit
        return accepted, claims
