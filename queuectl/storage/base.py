"""The storage seam: what every job store does. Rows, not policy.

Each method is one transaction. Writes made for a claimed job are conditional on
the claim's token: a worker that lost its lease changes nothing and is told so
(the method returns ``False``).

Policy stays above this seam, in the façade (``queuectl.queue``, ``queuectl.enqueue``): it
checks every new job and fills in the fields whose default is a setting before calling
``add_jobs``. A store never reads the settings to complete a job and keeps no copy of them:
``settings`` only reads and parses what is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from queuectl.config import Settings
from queuectl.models import Claim, Job, JobState, NewJob, Outcome, WorkerInfo


class Store(Protocol):
    """A persistent job store. Open one with ``queuectl.storage.open_store``."""

    async def close(self) -> None:
        """Release connections. Safe to call twice."""

    # --- jobs --------------------------------------------------------------------------

    async def add_jobs(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Insert all of ``jobs`` or none of them; return them as stored, in order.

        The jobs come checked and resolved: no field is ``UNSET`` (``timeout`` and
        ``max_retries`` hold their values; the façade took them from the settings). A job
        with an ``UNSET`` field is a ``TypeError``, and nothing is inserted. ``run_at`` of
        ``None`` is the store's now plus ``delay`` (or now). Raises ``DuplicateJob`` naming
        the first id, in the order given, that already exists. Wakes idle workers.
        """

    async def get_job(self, job_id: str) -> Job:
        """The job with its output tails; ``JobNotFound`` if there is none."""

    async def list_jobs(
        self,
        *,
        state: JobState | Sequence[JobState] | None = None,
        queue: str | Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        """Jobs newest first (by ``created_at``), without output tails.

        ``state`` and ``queue`` each take one value or several (a job in any of them); none,
        or an empty sequence, is every one (``job_filter``).
        """

    async def count_matching(
        self, *, state: JobState | Sequence[JobState] | None = None, queue: str | Sequence[str] | None = None
    ) -> int:
        """How many jobs ``list_jobs`` with these filters would return without a limit (one count)."""

    async def count_jobs(self) -> dict[JobState, int]:
        """How many jobs are in each state (every state present, zeros too)."""

    async def earliest_run_at(self) -> datetime | None:
        """The earliest ``run_at`` of the pending and failed jobs (what ``status`` shows)."""

    async def next_run_at(self, queues: Sequence[str] | None = None) -> float | None:
        """Seconds from now to the earliest ``run_at`` of a pending or failed job (in these queues).

        Negative or zero when one is due; ``None`` when none waits.
        """

    # --- the claim and what follows it ------------------------------------------------

    async def claim(
        self, *, worker_id: str, queues: Sequence[str] | None, limit: int, lease: float
    ) -> list[Claim]:
        """Atomically take up to ``limit`` due jobs, best first.

        Order: priority descending, then ``run_at``, then ``created_at``. Each job
        becomes ``processing``, ``attempts`` grows by one, and the claim holds a
        lease of ``lease`` seconds. Two claimers never get the same job.
        """

    async def renew(self, *, worker_id: str, tokens: Sequence[str], lease: float) -> set[str]:
        """Extend the leases of these claims; return the tokens still held."""

    async def finish(self, claim: Claim, outcome: Outcome) -> bool:
        """Record how an attempt ended, if ``claim`` still holds the job.

        ``failed`` sets ``run_at`` to now + ``outcome.retry_in``. Returns ``False``
        (and writes nothing) when the claim was lost.
        """

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
        """``finish``, then ``claim`` up to ``limit`` jobs, in one round trip to the store.

        What a worker does each time a job ends, so it is one transaction: half the cost of
        the two calls. Returns what ``finish`` and ``claim`` would.
        """

    async def release(self, claim: Claim) -> bool:
        """Put a job back to ``pending`` without counting the attempt (shutdown)."""

    async def lapsed_claims(self) -> list[Claim]:
        """Processing jobs whose lease has expired (their worker was lost).

        Nothing is changed: the caller decides their fate and records it with
        ``finish``, which only one caller can win.
        """

    async def has_unfinished(self, queues: Sequence[str] | None) -> bool:
        """Whether any job is pending, failed or processing (in these queues)."""

    # --- the dead-letter queue --------------------------------------------------------

    async def retry_dead(self, job_ids: Sequence[str]) -> list[Job]:
        """Move these dead jobs back to ``pending``, due now, with ``attempts`` 0.

        All or nothing: ``JobNotFound`` or ``JobStateConflict`` for the first id
        that is missing or not dead.
        """

    async def retry_all_dead(self) -> list[Job]:
        """Move every dead job back to ``pending``; return them."""

    # --- settings ---------------------------------------------------------------------

    async def settings(self) -> Settings:
        """The stored settings, read now and parsed (``Settings.from_stored``: defaults for keys
        never set). Nothing is cached: callers that read often keep their own copy."""

    async def stored_settings(self) -> dict[str, str]:
        """The settings' texts as stored (as users gave them), by key; keys never set are absent."""

    async def set_setting(self, key: str, text: str) -> None:
        """Persist one setting's text, as given (``config.stored_text``), once the façade
        validated it, alone and with the others (``config.check_together``)."""

    # --- workers ----------------------------------------------------------------------

    async def register_worker(self, *, worker_id: str, host: str, pid: int) -> None:
        """Add a running worker process to the registry."""

    async def heartbeat(self, *, worker_id: str, running: int) -> bool:
        """Refresh a worker's registration; return ``True`` if it was asked to stop."""

    async def stop_requested(self, worker_id: str) -> bool:
        """Whether this worker was asked to stop (a read: it wakes nobody)."""

    async def unregister_worker(self, worker_id: str) -> None:
        """Remove a worker from the registry."""

    async def list_workers(self, *, stale_after: float) -> list[WorkerInfo]:
        """Workers whose last heartbeat is younger than ``stale_after`` seconds."""

    async def request_stop(self, *, stale_after: float) -> int:
        """Ask every live worker to stop; return how many were asked."""

    # --- wake-ups ---------------------------------------------------------------------

    async def wait_for_change(self, timeout: float) -> None:
        """Return when the jobs may have changed (any process), or after ``timeout`` s."""


def job_filter(
    state: JobState | Sequence[JobState] | None, queue: str | Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """The states and the queues a ``list_jobs`` filter names, as lists of text (empty: any)."""
    states = [state] if isinstance(state, JobState) else list(state or ())
    queues = [queue] if isinstance(queue, str) else list(queue or ())
    return [JobState(value).value for value in states], queues
