"""Following a job's output from a browser: ``GET /api/jobs/ID/output?after=SEQ``.

A browser cannot hold ``Queue.follow``'s generator between two polls, so each poll is one read
of the store (``Store.live_output``, what ``follow`` reads too): the chunks of the running
attempt after the ``seq`` the page has, the job's state, and whether an attempt runs. When an
attempt ends its chunks are dropped and its head and tail kept: the page then reads the kept
output once (``GET /api/jobs/ID``) and shows that instead of what it had gathered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from queuectl.models import JobState

if TYPE_CHECKING:
    from queuectl.models import Job
    from queuectl.queue import Queue

__all__ = ("STREAMS", "job_output", "kept_text", "live_text")

STREAMS = {1: "stdout", 2: "stderr"}


async def job_output(queue: Queue, job_id: str, *, after: int) -> dict[str, Any]:
    """``{"state", "running", "chunks": [{"seq", "stream", "text"}], "after"}``; pass ``after``
    back on the next poll. ``JobNotFound`` if there is no such job."""
    live = await queue.store.live_output(job_id, after=after)
    chunks = [
        {"seq": chunk.seq, "stream": STREAMS.get(chunk.stream, "stdout"), "text": _text(chunk.data)}
        for chunk in live.chunks
    ]
    last = max((chunk.seq for chunk in live.chunks), default=after)
    running = live.job.state is JobState.PROCESSING or bool(live.chunks)
    return {"state": live.job.state.value, "running": running, "chunks": chunks, "after": last}


async def live_text(queue: Queue, job_id: str) -> tuple[str, int]:
    """The running attempt's output so far, both streams in the order written, and its last seq."""
    found = await job_output(queue, job_id, after=-1)
    return "".join(chunk["text"] for chunk in found["chunks"]), found["after"]


def kept_text(job: Job) -> str:
    """The latest attempt's kept output as the job page shows it: stdout, then stderr."""
    stdout, stderr = _text(job.stdout), _text(job.stderr)
    if stdout and stderr:
        return f"{stdout}{'' if stdout.endswith(chr(10)) else chr(10)}--- stderr ---\n{stderr}"
    return stdout or stderr


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
