"""Following a job's output as it is written, from any process sharing the store.

While an attempt runs, its worker adds the new output as chunks (``Store.append_output``), each
tagged with the byte offset where it starts in its stream. When the attempt ends, the worker keeps
the head and the tail of each stream (``queuectl.output``) and drops the chunks. So a follower
reads chunks while the attempt runs, counting the bytes of each stream it has shown; once the
job's history has grown past that attempt, it reads the kept output and shows what it still lacks
(``Kept.after``). An attempt that ends before its first flush is shown from its kept output
alone, and one the follower missed entirely (it ran between two polls) likewise.

Attempts are numbered as their ``history`` entries (1 = the first the job ever had), which is the
number ``logs --attempt`` takes while the job has had at most ``HISTORY_LIMIT`` of them.
"""

from __future__ import annotations

import enum
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import anyio

from queuectl import output
from queuectl.display import in_words
from queuectl.models import (
    FINAL_STATES,
    AttemptOutcome,
    AttemptRecord,
    Job,
    JobState,
    LiveOutput,
    OutputChunk,
)
from queuectl.records import Record, record
from queuectl.storage.base import HISTORY_LIMIT, Store

__all__ = ("FollowEvent", "FollowKind", "follow")

#: The longest between two reads of the store: output shows well within a second of its flush.
POLL_SECONDS = 0.25
#: The shortest between two reads: a busy store wakes waiters for every job's change.
MIN_POLL_GAP = 0.05
#: How long a follower waits for the worker of a job cancelled while it ran to record the
#: attempt (kill the command, TERM then KILL 2 s later, within a poll interval) before it ends.
CANCEL_GRACE = 10.0

STDOUT, STDERR = 1, 2


class FollowKind(str, enum.Enum):
    """What a ``FollowEvent`` carries."""

    OUTPUT = "output"  # ``data`` the command wrote to ``stream``
    LEFT_OUT = "left out"  # ``count`` bytes of ``stream`` that were not kept (the follower lacks them)
    NOTE = "note"  # ``text`` for people, between attempts: "attempt 2 started"
    PROGRESS = "progress"  # ``text``: the latest progress the running attempt reported
    END = "end"  # the job is final and its last attempt shown: ``job``

    def __str__(self) -> str:
        return self.value


@record
class FollowEvent(Record):
    """One thing a follower of ``job_id`` learned, in order; ``attempt`` is the history entry it
    belongs to (1 = the first; 0 for none). ``stream`` is 1 (stdout) or 2 (stderr)."""

    kind: FollowKind
    job_id: str
    attempt: int = 0
    stream: int = 0
    data: bytes = b""
    count: int = 0
    text: str = ""
    job: Job | None = None


async def follow(store: Store, job_id: str, *, poll: float = POLL_SECONDS) -> AsyncIterator[FollowEvent]:
    """The output of job ``job_id`` as it is written, across attempts, until the job is final.

    First what the current attempt has written so far (or, when none runs, the latest attempt's
    kept output), then each new piece within ``poll`` seconds of its flush; the last event is
    ``END``. ``JobNotFound`` if there is no such job (or it is deleted meanwhile).
    """
    follower = _Follower(store, job_id)
    await store.watch([job_id])  # before the first read: an end after it wakes us
    live = await store.live_output(job_id, after=-1)
    if not _runs(live) and live.entries:
        follower.entry = live.entries  # ended: its kept output is all there is to show
    else:
        follower.entry = live.entries + 1
    for event in await follower.step(live):
        yield event
    final_since: float | None = None
    while True:
        if live.job.state in FINAL_STATES:
            # A job cancelled while it ran is final before its worker records the attempt.
            now = time.monotonic()
            final_since = now if final_since is None else final_since
            if not follower.running or now - final_since > CANCEL_GRACE:
                attempt = follower.entry if follower.running else live.entries
                yield FollowEvent(kind=FollowKind.END, job_id=job_id, attempt=attempt, job=live.job)
                return
        started = time.monotonic()
        await store.wait_for_change(poll)
        rest = MIN_POLL_GAP - (time.monotonic() - started)
        if rest > 0:
            await anyio.sleep(rest)
        live = await store.live_output(job_id, after=follower.last_seq)
        for event in await follower.step(live):
            yield event


def _runs(live: LiveOutput) -> bool:
    """Whether an attempt of the job runs (a cancelled one still has its chunks until recorded)."""
    return live.job.state is JobState.PROCESSING or bool(live.chunks)


class _Follower:
    """What a follower knows: the attempt it follows and the bytes of each stream it has shown."""

    def __init__(self, store: Store, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self.entry = 1  # the history entry followed: ``entries + 1`` while it runs
        self.shown = {STDOUT: 0, STDERR: 0}  # bytes of each of its streams shown (or said left out)
        self.running = False  # it was seen running and has not been shown to its end yet
        self.last_seq = -1
        self.progress: str | None = None
        self.any_shown = False  # an earlier attempt was shown: a new one gets a note

    async def step(self, live: LiveOutput) -> list[FollowEvent]:
        """The events one read of the store gives."""
        events: list[FollowEvent] = []
        if live.entries >= self.entry:  # the followed attempt ended (and maybe more after it)
            events += await self._ended(live)
        if _runs(live):
            if not self.running:
                self.running = True
                if self.any_shown:
                    events.append(self._note(f"attempt {self.entry} started"))
            events += self._chunks(live.chunks)
            progress = live.job.progress
            if progress is not None and progress != self.progress:
                self.progress = progress
                events.append(self._event(FollowKind.PROGRESS, text=progress))
        return events

    def _chunks(self, chunks: tuple[OutputChunk, ...]) -> list[FollowEvent]:
        events: list[FollowEvent] = []
        for chunk in chunks:
            self.last_seq = max(self.last_seq, chunk.seq)
            shown = self.shown.get(chunk.stream)
            if shown is None:
                continue
            end = chunk.offset + len(chunk.data)
            if end <= shown:
                continue  # shown already
            if chunk.offset > shown:  # dropped before this follower read it
                events.append(
                    self._event(FollowKind.LEFT_OUT, stream=chunk.stream, count=chunk.offset - shown)
                )
                shown = chunk.offset
            events.append(
                self._event(FollowKind.OUTPUT, stream=chunk.stream, data=chunk.data[shown - chunk.offset :])
            )
            self.shown[chunk.stream] = end
        return events

    async def _ended(self, live: LiveOutput) -> list[FollowEvent]:
        """Show the attempts from the followed one to the latest ended one, from their kept output."""
        job = await self.store.get_job(self.job_id)  # for the history entries (how each ended)
        events: list[FollowEvent] = []
        for entry in range(self.entry, live.entries + 1):
            followed = entry == self.entry and self.running
            if not followed:
                self.shown = {STDOUT: 0, STDERR: 0}
                if self.any_shown:
                    events.append(self._note(f"attempt {entry} started", entry))
            stdout, stderr = await self.store.attempt_output(self.job_id, entry)
            for stream, data in ((STDOUT, stdout), (STDERR, stderr)):
                rest, left_out, tail = output.parse(data).after(self.shown[stream])
                if rest:
                    events.append(self._event(FollowKind.OUTPUT, entry, stream=stream, data=rest))
                if left_out:
                    events.append(self._event(FollowKind.LEFT_OUT, entry, stream=stream, count=left_out))
                if tail:
                    events.append(self._event(FollowKind.OUTPUT, entry, stream=stream, data=tail))
            attempt = _history_entry(job, entry, live.entries)
            latest = job if entry == _entries(job, live.entries) else None
            note = None if attempt is None else ended_note(entry, attempt, latest)
            if note is not None:
                events.append(self._note(note, entry))
            self.any_shown = True
        self.entry = live.entries + 1
        self.shown = {STDOUT: 0, STDERR: 0}
        self.running = False
        self.progress = None
        return events

    def _event(
        self,
        kind: FollowKind,
        attempt: int | None = None,
        *,
        stream: int = 0,
        data: bytes = b"",
        count: int = 0,
        text: str = "",
    ) -> FollowEvent:
        attempt = self.entry if attempt is None else attempt
        return FollowEvent(
            kind=kind, job_id=self.job_id, attempt=attempt, stream=stream, data=data, count=count, text=text
        )

    def _note(self, text: str, attempt: int | None = None) -> FollowEvent:
        return self._event(FollowKind.NOTE, attempt, text=text)


def _entries(job: Job, entries: int) -> int:
    """How many history entries ``job`` has had, read after a ``live_output`` that said ``entries``
    (more, when attempts ended in between)."""
    return len(job.history) if len(job.history) < HISTORY_LIMIT else entries


def _history_entry(job: Job, entry: int, entries: int) -> AttemptRecord | None:
    """History entry number ``entry`` of ``job``, which has had ``entries`` (None if not kept)."""
    kept = len(job.history)
    index = entry - 1 if kept < HISTORY_LIMIT else entry - (entries - kept) - 1
    return job.history[index] if 0 <= index < kept else None


def ended_note(
    entry: int, attempt: AttemptRecord, job: Job | None, now: datetime | None = None
) -> str | None:
    """The note about attempt ``entry`` that ended as ``attempt`` says; None for a success.

    ``job`` is the job now when the attempt is its latest (None when later ones followed): it
    tells what comes next, a retry or nothing.
    """
    outcome = attempt.outcome
    if outcome is AttemptOutcome.COMPLETED:
        return None
    if outcome is AttemptOutcome.STOPPED:
        return f"attempt {entry} stopped: its worker was shut down; the job waits for another"
    if outcome is AttemptOutcome.CANCELLED:
        return f"attempt {entry} ended: cancelled"
    what = "its worker was lost" if outcome is AttemptOutcome.LOST else attempt.error or outcome.value
    text = f"attempt {entry} ended: {what}"
    if job is None or job.state in (JobState.PROCESSING, JobState.PENDING, JobState.COMPLETED):
        return f"{text}, retried"
    if job.state is JobState.FAILED:
        wait = (job.run_at - (now or datetime.now(UTC))).total_seconds()
        return f"{text}, retry in {in_words(wait)}" if wait > 0 else f"{text}, retry now"
    if job.state is JobState.DEAD:
        return f"{text}; no retries left: the job is dead"
    if job.state is JobState.CANCELLED:
        return f"{text}; the job was cancelled"
    return text
