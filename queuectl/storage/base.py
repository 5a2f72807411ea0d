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

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from queuectl.config import Settings
from queuectl.models import (
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

if TYPE_CHECKING:  # not at run time: `queuectl enqueue` needs neither (nor the json they import)
    from queuectl.queues import QueueInfo, QueueSettings, Rate
    from queuectl.scheduling import MakeJob, NewSchedule, Schedule, ScheduleTick

#: How many history entries a job keeps (the latest).
HISTORY_LIMIT = 100


class Store(Protocol):
    """A persistent job store. Open one with ``queuectl.storage.open_store``."""

    @property
    def clock(self) -> Callable[[], float]:
        """The store's wall clock (epoch seconds), which workers time attempts with: the database
        server's for PostgreSQL (estimated from their round trips), ``open_store``'s ``clock``
        for SQLite."""

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

        Flow control (``storage.flow``): a job whose ``unique_key`` a ``pending``,
        ``processing`` or ``failed`` job holds is not inserted, and that job is returned in its
        place (its id differs), however many processes insert the key at once. Each id in
        ``after`` names a stored job or an earlier one of ``jobs`` (an exact id, else a unique
        prefix of 6+ characters; it is stored in full): ``JobNotFound`` or ``AmbiguousId``
        otherwise, and nothing is inserted. A job waits (``waiting``) on its dependencies
        not yet ended; one already ``dead`` or ``cancelled`` makes it ``cancelled`` at once
        (``last_error`` ``dependency ID ended dead``). When a dependency ends, in the same
        transaction, its dependents wait on one job fewer or, if it ended dead or cancelled,
        the unfinished ones are cancelled, and theirs, down the chain.
        """

    async def get_job(self, job_id: str) -> Job:
        """The job with its history and latest output; ``JobNotFound`` if there is none."""

    async def ids_with_prefix(self, prefix: str, *, limit: int) -> list[str]:
        """Up to ``limit`` job ids that start with ``prefix`` (case-sensitive), in id order.

        An index range scan (``id >= prefix AND id < prefix + U+10FFFF``), never a full scan.
        """

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
        self,
        *,
        worker_id: str,
        queues: Sequence[str] | None,
        limit: int,
        lease: float,
        flow: bool = False,
    ) -> list[Claim]:
        """Atomically take up to ``limit`` due jobs, best first.

        Order: priority descending, then ``run_at``, then ``created_at``. Each job
        becomes ``processing``, ``attempts`` grows by one, and the claim holds a
        lease of ``lease`` seconds. Two claimers never get the same job.

        ``flow``: some queue is paused or limited (``queue_settings``), so the claim reads the
        queues' settings in its transaction: no job of a paused queue, and no more of a limited
        queue's jobs than its concurrency and rate allow at once, however many claimers race
        (the starts of rate-limited queues are recorded in the same transaction). Without it,
        the plain claim, which ignores the queues' settings.
        """

    async def renew(self, *, worker_id: str, tokens: Sequence[str], lease: float) -> set[str]:
        """Extend the leases of these claims; return the tokens still held."""

    async def finish(self, claim: Claim, outcome: Outcome) -> bool:
        """Record how an attempt ended, if ``claim`` still holds the job.

        ``failed`` sets ``run_at`` to now + ``outcome.retry_in``. Appends ``outcome.attempt`` to
        ``history`` (the latest ``HISTORY_LIMIT`` kept) and keeps ``outcome.stdout``/``stderr`` as
        that entry's output; the previous entry's output moves to the outputs of earlier
        attempts (``attempt_output``) in the same transaction, and only if it has some. When
        ``outcome.streamed``, drops the job's live output chunks. The job must be
        ``processing``; for a ``cancelled`` outcome it must be ``cancelled`` (still held by
        ``claim``): then only the history, the output, ``finished_at`` and the claim change.
        Returns ``False`` (and writes nothing) when the claim was lost.
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
        flow: bool = False,
    ) -> tuple[bool, list[Claim]]:
        """``finish``, then ``claim`` up to ``limit`` jobs, in one round trip to the store.

        What a worker does each time a job ends, so it is one transaction: half the cost of
        the two calls. Returns what ``finish`` and ``claim`` would.
        """

    async def release(self, claim: Claim, attempt: AttemptRecord) -> bool:
        """Put a job back to ``pending`` without counting the attempt (shutdown).

        ``attempt`` (outcome ``stopped``) joins the history. A job cancelled meanwhile stays
        ``cancelled`` and is freed the same way. Drops its live output chunks.
        """

    async def lapsed_claims(self) -> list[Claim]:
        """Held jobs whose lease has expired (their worker was lost): ``processing`` ones, and
        ``cancelled`` ones whose worker never recorded the cancelled attempt.

        Nothing is changed: the caller decides their fate and records it with
        ``finish``, which only one caller can win.
        """

    async def cancelled_claims(self, tokens: Sequence[str]) -> set[str]:
        """Of these claims' tokens, those whose job was cancelled (one indexed read)."""

    # --- live output ------------------------------------------------------------------

    async def append_output(
        self,
        claim: Claim,
        chunks: Sequence[tuple[int, int, bytes]],
        *,
        progress: str | None,
        keep: int,
        lease: float,
    ) -> bool:
        """Add a running attempt's new output, as ``(stream, offset, data)`` chunks, for followers.

        In one transaction, if ``claim`` still holds the job and it is ``processing``: insert
        the chunks (tagged with the attempt's entry number, ``entries + 1``), set ``progress``
        when it is not None, extend the lease by ``lease`` seconds (output is a sign of life),
        and drop this attempt's chunks that end more than ``keep`` bytes before the end of
        their stream. Wakes followers. Returns ``False`` (writing nothing) otherwise.
        """

    async def live_output(self, job_id: str, *, after: int) -> LiveOutput:
        """The job (summary), how many history entries it has had, and the chunks of its
        running attempt with ``seq`` > ``after``. ``JobNotFound`` if there is none."""

    async def attempt_output(self, job_id: str, entry: int) -> tuple[bytes, bytes]:
        """stdout and stderr kept for the job's history entry number ``entry`` (1 = the first
        it ever had; with ``entries`` in all, the latest ``HISTORY_LIMIT`` are kept).
        ``JobNotFound`` for no job; ``(b"", b"")`` for an entry with no output kept."""

    # --- operating jobs ---------------------------------------------------------------

    async def cancel_job(self, job_id: str) -> Job:
        """Cancel one unfinished job in one conditional write; return it (summary).

        ``pending``/``failed``: ``cancelled`` at once, unheld. ``processing``: ``cancelled``,
        still held by its claim, so its worker sees it (``cancelled_claims``), kills the
        command and records the attempt (``finish`` with a ``cancelled`` outcome). Sets
        ``last_error`` to ``cancelled``. Wakes workers and waiters (NOTIFY on PostgreSQL).
        ``JobNotFound``; ``JobStateConflict`` naming the state of a job already final.
        """

    async def cancel_matching(self, *, state: Sequence[JobState], queue: Sequence[str]) -> list[Job]:
        """Cancel every unfinished job in these states (empty: all unfinished ones) and queues
        (empty: any), as ``cancel_job`` does each; return them. Non-final states only."""

    async def retry_job(self, job_id: str) -> Job:
        """A ``completed``, ``dead`` or ``cancelled`` job back to ``pending``, due now,
        ``attempts`` 0, history kept. ``JobNotFound``; ``JobStateConflict`` for another state."""

    async def retry_matching(self, *, state: Sequence[JobState], queue: Sequence[str]) -> list[Job]:
        """``retry_job`` for every job in these final states and queues (empty: any); return them."""

    async def purge_batch(
        self,
        *,
        state: Sequence[JobState],
        queue: Sequence[str],
        finished_before: datetime | None,
        limit: int,
    ) -> int:
        """Delete up to ``limit`` final jobs in these states (and queues; empty: any) whose
        ``finished_at`` (else ``updated_at``) is before ``finished_before`` (None: any age),
        with their outputs and chunks, in one short transaction; return how many.

        ``queuectl.purging.purge`` calls it until it deletes fewer than ``limit``, so that no
        transaction holds the write lock long.
        """

    async def has_unfinished(self, queues: Sequence[str] | None) -> bool:
        """Whether any job is pending, failed or processing (in these queues), paused queues'
        jobs aside (``worker start --drain`` does not wait for them)."""

    # --- the dead-letter queue --------------------------------------------------------

    async def retry_dead(self, job_ids: Sequence[str]) -> list[Job]:
        """Move these dead jobs back to ``pending``, due now, with ``attempts`` 0.

        All or nothing: ``JobNotFound`` or ``JobStateConflict`` for the first id
        that is missing or not dead.
        """

    async def retry_all_dead(self) -> list[Job]:
        """Move every dead job back to ``pending``; return them."""

    # --- schedules (``queuectl.scheduling``) ------------------------------------------

    async def add_schedule(self, schedule: NewSchedule) -> Schedule:
        """Create the schedule, or replace the one of that name; return it as stored.

        ``next_run_at`` is its first due time after the store's now (``Timing.first_after``).
        A replaced schedule keeps ``created_at``, ``paused`` and ``last_job`` (so that
        ``no_overlap`` still sees the job its previous form enqueued).
        """

    async def list_schedules(self) -> list[Schedule]:
        """Every schedule, by name."""

    async def remove_schedule(self, name: str) -> Schedule:
        """Delete the schedule (its jobs stay); return it. ``ScheduleNotFound``."""

    async def pause_schedule(self, name: str) -> Schedule:
        """Stop the schedule enqueueing anything until resumed; return it. ``ScheduleNotFound``."""

    async def resume_schedule(self, name: str) -> Schedule:
        """Resume a paused schedule from now: ``next_run_at`` is its first due time after now,
        due times missed while it was paused are not enqueued. A schedule that is not paused
        is left as it is. ``ScheduleNotFound``."""

    async def enqueue_due_schedules(self, make_job: MakeJob) -> ScheduleTick:
        """For each active schedule whose ``next_run_at`` is due by the store's now: one job
        for its latest due time (``Timing.latest_due``: missed ones are not replayed), made by
        ``make_job(job, due)`` and inserted as ``add_jobs`` does, with ``schedule`` set to the
        schedule's name; then ``next_run_at`` moves to the first due time after now and
        ``last_job`` to the job. A schedule with ``no_overlap`` whose ``last_job`` is not final,
        or whose job's unique key is taken, skips the due time (moves on, enqueues nothing).

        Each due time makes one job however many workers call this at once: the insert and
        the move happen in one transaction that only one caller can make for a due time. When
        nothing is due, one indexed read and no write. Returns the jobs and the seconds to the
        next due time.
        """

    # --- settings ---------------------------------------------------------------------

    async def settings(self) -> Settings:
        """The stored settings, read now and parsed (``Settings.from_stored``: defaults for keys
        never set). Nothing is cached: callers that read often keep their own copy."""

    async def stored_settings(self) -> dict[str, str]:
        """The settings' texts as stored (as users gave them), by key; keys never set are absent."""

    async def set_setting(self, key: str, text: str) -> None:
        """Persist one setting's text, as given (``config.stored_text``), once the façade
        validated it, alone and with the others (``config.check_together``)."""

    # --- queues: pauses and limits -----------------------------------------------------

    async def list_queues(self) -> list[QueueInfo]:
        """Every queue that has jobs or settings, by name: its jobs counted by state (zeros
        too) and its settings."""

    async def queue_settings(self) -> list[QueueSettings]:
        """The queues that have a setting (paused, or a limit): one read of a small table, what
        a worker reads each poll interval to choose between the plain and the ``flow`` claim."""

    async def pause_queues(self, names: Sequence[str], *, paused: bool) -> None:
        """Pause (or resume) these queues, whether they have jobs or not, in one transaction.
        Resuming wakes idle workers."""

    async def limit_queue(
        self,
        name: str,
        *,
        concurrency: int | Unset | None = UNSET,
        rate: Rate | Unset | None = UNSET,
    ) -> QueueSettings:
        """Set or clear (``None``) a queue's limits (``UNSET``: left as they are); return its
        settings. A queue left with no setting loses its row; a rate cleared, its recorded
        starts. Wakes idle workers."""

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
        """Ask every registered worker to stop, also one whose heartbeats are late (it hears as it
        comes back); return how many of them are live."""

    # --- wake-ups ---------------------------------------------------------------------

    async def wait_for_change(self, timeout: float) -> None:
        """Return when the jobs may have changed (any process), or after ``timeout`` s."""

    async def wait_for_cancel(self, timeout: float) -> None:
        """Return when a job may have been cancelled (a notification, where the store has them:
        a hint, which may be lost), or after ``timeout`` s."""

    async def watch(self, job_ids: Sequence[str]) -> None:
        """Someone waits for these jobs to end: ``wait_for_change`` must then return soon after
        each ends. (PostgreSQL announces only such ends; SQLite wakes waiters on any write.)"""

    # --- the dashboard (``queuectl dashboard``, ``/metrics``) --------------------------

    async def search_jobs(
        self,
        *,
        state: Sequence[JobState] = (),
        queue: Sequence[str] = (),
        text: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """A page of at most ``limit`` jobs (without output tails), newest first (``created_at``,
        then ``seq``), older than ``cursor`` (the ``next_cursor`` of the previous page; ``None``:
        from the newest). ``state``, ``queue``: any of them (empty: any). ``text``: an id that
        starts with it, or a command that contains it (case-sensitive; ``None`` or empty: any).

        The jobs are read walking an index newest first, never sorting them all: the state's
        index for one state, else the index of ``created_at``. Filters the index does not serve
        (queues, several states, ``text``) look at no more than ``SEARCH_SCAN_ROWS`` rows of
        that walk per call, so that a rare match answers as fast as a common one: the page may
        then hold fewer than ``limit`` jobs, even none, with a ``next_cursor`` that goes on from
        where this call stopped. Across the pages, every matching job comes exactly once.
        ``next_cursor`` is ``None`` once the walk has reached the oldest job. A cursor that is
        not one of this store's: ``InvalidInput``.
        """

    async def add_finished(self, counts: Mapping[tuple[datetime, str], int]) -> None:
        """Add to the attempts ended per minute: ``(minute, state) -> n``, ``state`` one of
        ``completed``, ``failed``, ``dead``, ``minute`` any moment of it (aware; its minute's
        start, UTC, is kept). In the same transaction, minutes older than
        ``FINISHED_KEPT_SECONDS`` are deleted. ``ValueError`` for another state or a negative n.

        Not idempotent: on PostgreSQL, a call retried after a lost reply may count twice.
        """

    async def finished_per_minute(self, minutes: int = 60) -> list[MinuteCount]:
        """One ``MinuteCount`` per minute of the ``minutes`` ending with the store's current one
        (PostgreSQL: the server's clock; SQLite: the store's), oldest first, zeros included."""

    async def oldest_due(self) -> dict[str, float]:
        """Per queue with jobs due and unclaimed (``pending`` or ``failed``, waiting on no
        dependency, ``run_at`` now or past): seconds since the ``run_at`` of its oldest one.

        SQLite: a few steps of its ``jobs_queue_due`` index per queue, however many jobs wait.
        PostgreSQL: one pass over the due jobs (no index of its own: every claim would pay).
        """


def job_filter(
    state: JobState | Sequence[JobState] | None, queue: str | Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """The states and the queues a ``list_jobs`` filter names, as lists of text (empty: any)."""
    states = [state] if isinstance(state, JobState) else list(state or ())
    queues = [queue] if isinstance(queue, str) else list(queue or ())
    return [JobState(value).value for value in states], queues


# --- the dashboard's reads ----------------------------------------------------------------

#: The most rows of its index walk one ``search_jobs`` call looks at for the filters the index
#: does not serve (about 0.2 s of SQLite at 1,000,000 jobs): the next page goes on from there.
SEARCH_SCAN_ROWS = 200_000
#: The largest page ``search_jobs`` returns.
SEARCH_MAX_LIMIT = 1_000
#: How long the counts of attempts ended per minute are kept (``add_finished`` prunes).
FINISHED_KEPT_SECONDS = 2 * 86400
#: The longest window ``finished_per_minute`` gives: what is kept.
FINISHED_MAX_MINUTES = FINISHED_KEPT_SECONDS // 60
#: The states counted per minute.
FINISHED_STATES = ("completed", "failed", "dead")


def search_terms(
    *, state: Sequence[JobState], queue: Sequence[str], text: str | None, limit: int
) -> tuple[tuple[str, ...], tuple[str, ...], str | None, int]:
    """A ``search_jobs`` call's filters, checked (``InvalidInput`` for a bad limit) and without
    repeats: the states as text, the queues, the text (None for none), the limit."""
    from queuectl.errors import InvalidInput

    if not 1 <= limit <= SEARCH_MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {SEARCH_MAX_LIMIT}, not {limit}")
    states = tuple(dict.fromkeys(JobState(value).value for value in state))
    return states, tuple(dict.fromkeys(queue)), text or None, limit
