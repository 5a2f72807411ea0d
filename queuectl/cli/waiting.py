"""``wait`` (block until jobs are final) and ``run`` (enqueue one job, follow it, exit as it did).

Both exit as a script wants: 0 when every job completed; otherwise, for the first job (in the
order given) that did not, its command's exit code when it exited non-zero, else 1; 124 when
``--timeout`` came first (as ``timeout(1)``). ``run`` is ``enqueue`` + ``logs -f`` + ``wait``.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from queuectl.cli.run import examples, json_option, with_queue
from queuectl.cli.worker_start import Duration
from queuectl.models import FINAL_STATES, JobState

if TYPE_CHECKING:
    from queuectl.cli.follow import Printer
    from queuectl.models import Job, NewJob
    from queuectl.queue import Queue

#: The longest between two reads of the jobs: ``wait`` returns within 1 s of the last one's end.
POLL_SECONDS = 0.25
#: The shortest between two reads: a busy store wakes waiters for every job's change.
MIN_POLL_GAP = 0.05
#: Exit code of a ``--timeout`` reached (as ``timeout(1)``), and of a detached ``run`` (Ctrl-C).
TIMED_OUT = 124
INTERRUPTED = 130
#: How many running jobs' progress the status line shows.
PROGRESS_SHOWN = 2


def exit_status(jobs: Sequence[Job]) -> int:
    """0 if every job completed; else for the first that did not, its command's exit code if it
    exited non-zero, else 1."""
    for job in jobs:
        if job.state is not JobState.COMPLETED:
            code = job.exit_code
            return code if code is not None and 0 < code < 256 else 1
    return 0


# --- wait ---------------------------------------------------------------------------------


@click.command(
    "wait",
    short_help="Wait until jobs are final.",
    epilog=examples(
        "queuectl wait ID",
        "queuectl wait ID1 ID2 ID3 --timeout 10m && echo all done",
        "queuectl wait $(queuectl enqueue -c 'make test') --json",
    ),
)
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@click.option(
    "--timeout",
    type=Duration(),
    metavar="DURATION",
    help="Give up after DURATION (90, 30s, 5m, 1h30m): exit 124, naming the unfinished jobs.",
)
@json_option
def wait(job_ids: tuple[str, ...], timeout: float | None, as_json: bool) -> int:
    """Wait until every job is final (completed, dead or cancelled).

    Exits 0 if all completed; otherwise, for the first job (in the order
    given) that did not: its command's exit code if it exited non-zero, else 1.
    --timeout reached first: exit 124, naming the unfinished jobs. On a
    terminal a status line on stderr shows how the jobs are doing.
    """
    line = StatusLine(enabled=_stderr_is_terminal())
    try:
        jobs, finished = with_queue(lambda q: wait_for_jobs(q, job_ids, timeout=timeout, line=line))
    except KeyboardInterrupt:
        return INTERRUPTED  # quietly: the jobs go on
    if as_json:
        from queuectl.cli import render  # JSON: only for commands that print it

        render.print_json([job.to_dict() for job in jobs])
    if not finished:
        from queuectl.display import in_words

        unfinished = ", ".join(
            f"{job.id} ({job.state.value})" for job in jobs if job.state not in FINAL_STATES
        )
        assert timeout is not None
        waited = in_words(timeout) if timeout >= 1 else f"{timeout:g} seconds"
        click.echo(f"queuectl: error: timed out after {waited}; not final: {unfinished}", err=True)
        return TIMED_OUT
    return exit_status(jobs)


async def wait_for_jobs(
    queue: Queue, texts: Sequence[str], *, timeout: float | None, line: StatusLine
) -> tuple[list[Job], bool]:
    """The jobs ``texts`` name once each is final, and True; or as they are at ``timeout``, and False.

    Any unknown id is an error at once, before any waiting.
    """
    ids = list(dict.fromkeys(await queue.resolve_ids(texts)))
    await queue.store.watch(ids)  # before the first read: an end after it wakes us
    deadline = None if timeout is None else time.monotonic() + timeout
    jobs = {job_id: await queue.get(job_id) for job_id in ids}
    try:
        while True:
            line.show(list(jobs.values()))
            if all(job.state in FINAL_STATES for job in jobs.values()):
                return list(jobs.values()), True
            started = time.monotonic()
            if deadline is not None and started >= deadline:
                return list(jobs.values()), False
            pause = POLL_SECONDS if deadline is None else min(POLL_SECONDS, deadline - started)
            await queue.store.wait_for_change(pause)
            rest = min(MIN_POLL_GAP, pause) - (time.monotonic() - started)
            if rest > 0:
                import anyio

                await anyio.sleep(rest)
            for job_id, job in jobs.items():
                if job.state not in FINAL_STATES:
                    jobs[job_id] = await queue.get(job_id)
    finally:
        line.close()


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class StatusLine:
    """One line on a terminal's stderr, rewritten in place as the jobs change; nothing on a pipe."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.shown = ""

    def show(self, jobs: Sequence[Job]) -> None:
        if not self.enabled:
            return
        text = status_text(jobs)
        width = shutil.get_terminal_size().columns - 1
        if len(text) > width > 3:
            text = text[: width - 3] + "..."
        if text != self.shown:
            self.shown = text
            sys.stderr.write(f"\r\x1b[K{text}")
            sys.stderr.flush()

    def close(self) -> None:
        """Leave the last line as it is, and the cursor on the next one."""
        if self.enabled and self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.shown = ""


#: How the status line names each state (``failed`` jobs wait for their retry).
_STATE_WORDS = {
    JobState.COMPLETED: "completed",
    JobState.DEAD: "dead",
    JobState.CANCELLED: "cancelled",
    JobState.PROCESSING: "running",
    JobState.FAILED: "waiting to retry",
    JobState.PENDING: "pending",
}


def status_text(jobs: Sequence[Job]) -> str:
    """``queuectl: 2/4 final: 1 completed, 1 dead, 1 running (3f2a9c1e 50%), 1 pending``."""
    from queuectl.display import printable

    final = sum(job.state in FINAL_STATES for job in jobs)
    parts = []
    for state, word in _STATE_WORDS.items():
        count = sum(job.state is state for job in jobs)
        if not count:
            continue
        part = f"{count} {word}"
        if state is JobState.PROCESSING:
            progress = [f"{job.id[:8]} {job.progress}" for job in jobs if job.state is state and job.progress]
            if progress:
                more = ", ..." if len(progress) > PROGRESS_SHOWN else ""
                part += f" ({', '.join(progress[:PROGRESS_SHOWN])}{more})"
        parts.append(part)
    return printable(f"queuectl: {final}/{len(jobs)} final: {', '.join(parts)}")


# --- run ----------------------------------------------------------------------------------


@click.command(
    "run",
    short_help="Run a command as a job and follow it.",
    context_settings={"allow_interspersed_args": False},
    epilog=examples(
        "queuectl run make test",
        "queuectl run --queue build --timeout 30m -- make -j4 release",
        "queuectl run --max-retries 0 'pg_dump prod > dump.sql' && echo saved",
    ),
)
@click.argument("words", metavar="COMMAND...", nargs=-1, required=True)
def run(words: tuple[str, ...], **options: Any) -> int:
    """Run COMMAND as a job: enqueue it, print its output as it runs, exit as it did.

    The words of COMMAND are joined by spaces into one shell command; quote
    it, or put it after `--`, when it has options or shell syntax of its own.
    A worker runs it (`queuectl worker start`, here or on another host).
    Only the job's stdout goes to stdout and its stderr to stderr; queuectl's
    notes and the job's id go to stderr, after `queuectl: `. Exits as `wait`
    does. Ctrl-C detaches: the job keeps going, and its id is printed.
    """
    from queuectl import job_fields

    job_id = options.pop("job_id", None)
    job = job_fields.job_from_options(command=" ".join(words), id=job_id, **options)
    from queuectl.cli.follow import Printer

    printer = Printer()
    started: list[str] = []  # the job's id, once it is enqueued
    try:
        return with_queue(lambda q: run_job(q, job, printer, started))
    except KeyboardInterrupt:
        if not started:
            raise
        job_id = started[0]
        printer.note(f"detached from job {job_id}; it keeps going (queuectl logs -f {job_id})")
        return INTERRUPTED


def _enqueue_options() -> list[click.Parameter]:
    """The options of ``enqueue`` that describe a job: all but ``-c``, its JSON and ``--json``."""
    from queuectl.cli.enqueue import enqueue

    return [
        param for param in enqueue.params if isinstance(param, click.Option) and param.name not in _NOT_RUN
    ]


#: Options of ``enqueue`` that ``run`` does not take: the words are the command; no JSON.
_NOT_RUN = frozenset({"command", "as_json"})
run.params[:0] = _enqueue_options()


async def run_job(queue: Queue, job: NewJob, printer: Printer, started: list[str]) -> int:
    """Enqueue ``job``, print its output as ``logs -f`` does until it is final; exit as ``wait``."""
    from queuectl.follow import FollowKind

    stored = await queue.enqueue(job)
    started.append(stored.id)
    if stored.id != job.id:
        printer.note(f"job {stored.id} with this unique key is already waiting: following it")
    else:
        printer.note(f"job {stored.id} enqueued")
    if not await queue.workers():
        printer.note(
            f"no live worker serves queue {stored.queue!r}; the job waits for one (queuectl worker start)"
        )
    ended: Job | None = None
    async for event in queue.follow(stored.id):
        printer.show(event)
        if event.kind is FollowKind.END:
            ended = event.job
    printer.close()
    assert ended is not None
    return exit_status([ended])
