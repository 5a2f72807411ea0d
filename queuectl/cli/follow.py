"""``logs``: a job's output, kept (``logs ID``, ``logs ID --attempt N``) or as it is written (``-f``).

Followed output goes out as it arrives, each piece flushed at once, so that ``queuectl logs -f ID |
grep`` sees lines live. ``queuectl run`` prints a job's output through the same ``Printer``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING

import click

from queuectl.cli.run import examples, json_option, with_queue
from queuectl.models import JobState

if TYPE_CHECKING:
    from queuectl.follow import FollowEvent
    from queuectl.models import Job
    from queuectl.queue import Queue

#: Exit code after Ctrl-C.
INTERRUPTED = 130
#: Short ids are at least this long (a UUID's first group), longer where two followed ids share it.
SHORT_ID = 8


@click.command(
    "logs",
    epilog=examples(
        "queuectl logs ID",
        "queuectl logs ID > out.txt 2> err.txt",
        "queuectl logs -f ID | grep -i error",
        "queuectl logs -f ID1 ID2 ID3",
        "queuectl logs ID --attempt 1",
    ),
)
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@click.option(
    "-f", "--follow", is_flag=True, help="Print the output as it is written, until the job is final."
)
@click.option(
    "--attempt",
    type=click.IntRange(min=1),
    metavar="N",
    help="The output of the Nth entry of the job's history (1 = the first).",
)
@json_option
def logs(job_ids: tuple[str, ...], follow: bool, attempt: int | None, as_json: bool) -> int:
    """Print a job's output: stdout to stdout, stderr to stderr.

    The output of the latest attempt, byte for byte. Of each stream the head
    and the tail are kept (config `output_limit`); a line between them says
    how many bytes were left out, and a note on stderr says so too. With
    --json, prints {"id", "stdout", "stderr"} as text, undecodable bytes
    replaced. A job that has not run yet, or is running, prints nothing on
    stdout and says so on stderr.

    With -f, prints what the running (or latest) attempt has written so far,
    then its output as the command writes it, across retries, and exits 0
    once the job is final. Several IDs with -f: each line starts with its
    job's short id. Earlier attempts: --attempt N.
    """
    if follow and attempt is not None:
        raise click.UsageError("--attempt shows an attempt's kept output: it does not go with --follow")
    if follow and as_json:
        raise click.UsageError("--json does not go with --follow: it prints one document at the end")
    if len(job_ids) > 1 and not follow:
        raise click.UsageError("give one job id, or several with --follow")
    if follow:
        try:
            return with_queue(lambda q: follow_jobs(q, list(dict.fromkeys(job_ids))))
        except KeyboardInterrupt:
            return INTERRUPTED  # quietly: the job goes on, nothing went wrong
    (text,) = job_ids
    if attempt is not None:
        job, stdout, stderr = with_queue(lambda q: _attempt_output(q, text, attempt))
        notice = None
    else:
        job = with_queue(lambda q: _latest(q, text))
        stdout, stderr = job.stdout, job.stderr
        notice = logs_notice(job)
    if as_json:
        from queuectl.cli import render  # JSON: only for commands that print it

        render.print_json(
            {
                "id": job.id,
                "stdout": stdout.decode("utf-8", errors="replace"),
                "stderr": stderr.decode("utf-8", errors="replace"),
            }
        )
    else:
        for stream, data in ((sys.stdout, stdout), (sys.stderr, stderr)):
            write(stream, data)
    for line in cut_notes(stdout, stderr):
        click.echo(f"queuectl: {line}", err=True)
    if notice is not None:
        click.echo(f"queuectl: {notice}", err=True)
    return 0


async def _latest(queue: Queue, text: str) -> Job:
    return await queue.get(await queue.resolve_id(text))


async def _attempt_output(queue: Queue, text: str, number: int) -> tuple[Job, bytes, bytes]:
    from queuectl.errors import JobNotFound

    job = await queue.get(await queue.resolve_id(text))
    try:
        stdout, stderr = await queue.attempt_output(job.id, number)
    except IndexError:
        entries = len(job.history)
        if not entries:
            raise JobNotFound(f"job {job.id} has not run yet: its history is empty") from None
        has = f"it has {_attempts(entries)} (1 to {entries})"
        raise JobNotFound(f"job {job.id} has no attempt {number} in its history: {has}") from None
    return job, stdout, stderr


def _attempts(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"


def logs_notice(job: Job) -> str | None:
    """Why ``logs`` shows no output, or not the running attempt's; None when it shows that."""
    ran = job.finished_at is not None  # an attempt ended and its output was kept
    if job.state is JobState.PROCESSING:
        shown = " (shown: its previous attempt's)" if ran else ""
        return f"job {job.id} is running; its output appears when the attempt ends{shown}"
    if not ran:
        return f"job {job.id} has not run yet ({job.state.value})"
    return None


def cut_notes(stdout: bytes, stderr: bytes) -> list[str]:
    """A note for each stream whose middle was left out (kept: its head and its tail)."""
    from queuectl import output

    notes = []
    for name, data in (("stdout", stdout), ("stderr", stderr)):
        left_out = output.parse(data).left_out
        if left_out:
            notes.append(f"{name}: {left_out} bytes left out in the middle (config output_limit)")
    return notes


def write(stream: IO[str], data: bytes) -> None:
    """``data`` to ``stream`` as it is, at once (what was written as text before goes first)."""
    stream.flush()
    stream.buffer.write(data)  # type: ignore[attr-defined]
    stream.buffer.flush()  # type: ignore[attr-defined]


# --- following ------------------------------------------------------------------------------


async def follow_jobs(queue: Queue, texts: Sequence[str]) -> int:
    """``logs -f``: follow the jobs ``texts`` name until each is final; 0."""
    ids = list(dict.fromkeys(await queue.resolve_ids(texts)))
    if len(ids) == 1:
        printer = Printer()
        async for event in queue.follow(ids[0]):
            printer.show(event)
        printer.close()
        return 0
    printer = Printer(prefixes=short_ids(ids))
    import anyio

    async def one(job_id: str) -> None:
        async for event in queue.follow(job_id):
            printer.show(event)

    try:
        async with anyio.create_task_group() as group:
            for job_id in ids:
                group.start_soon(one, job_id)
    except ExceptionGroup as errors:  # one job deleted meanwhile: its error, as for one job
        raise errors.exceptions[0] from None
    printer.close()
    return 0


def short_ids(ids: Sequence[str]) -> dict[str, str]:
    """Each id's prefix that tells it from the others (at least ``SHORT_ID`` characters),
    padded to one width."""
    width = SHORT_ID
    while len({job_id[:width] for job_id in ids}) < len(ids) and width < max(map(len, ids)):
        width += 1
    shown = {job_id: job_id[:width] for job_id in ids}
    pad = max(map(len, shown.values()))
    return {job_id: short.ljust(pad) for job_id, short in shown.items()}


class Printer:
    """Writes follow events: output to stdout and stderr as it comes, notes on stderr.

    With ``prefixes`` (several jobs), each line starts with its job's short id, and a line is
    written once it is whole (or its job has ended), so lines of two jobs never mix. Notes then
    name the job.
    """

    def __init__(self, prefixes: dict[str, str] | None = None) -> None:
        self.prefixes = prefixes
        self.partial: dict[tuple[str, int], bytes] = {}  # (job, stream) -> a line not yet ended
        self.at_line_start = {1: True, 2: True}  # on each of our streams (notes start a line)

    def show(self, event: FollowEvent) -> None:
        from queuectl.follow import FollowKind

        kind = event.kind
        if kind is FollowKind.OUTPUT:
            self._output(event.job_id, event.stream, event.data)
        elif kind is FollowKind.LEFT_OUT:
            self._left_out(event.job_id, event.stream, event.count)
        elif kind is FollowKind.NOTE:
            self.note(event.text, event.job_id)
        elif kind is FollowKind.PROGRESS:
            self.note(f"progress {event.text}", event.job_id)
        elif kind is FollowKind.END:
            self._flush_job(event.job_id)

    def note(self, text: str, job_id: str | None = None) -> None:
        """A line on stderr for people, on a line of its own."""
        if self.prefixes is not None and job_id is not None:
            text = f"job {job_id}: {text}"
        self._write(2, ("" if self.at_line_start[2] else "\n") + f"queuectl: {text}\n")

    def close(self) -> None:
        for job_id, _ in list(self.partial):
            self._flush_job(job_id)

    def _output(self, job_id: str, stream: int, data: bytes) -> None:
        if self.prefixes is None:
            self._write(stream, data)
            return
        pending = self.partial.pop((job_id, stream), b"") + data
        whole, newline, rest = pending.rpartition(b"\n")
        if newline:
            prefix = self._prefix(job_id)
            self._write(stream, b"".join(prefix + line + b"\n" for line in whole.split(b"\n")))
        if rest:
            self.partial[(job_id, stream)] = rest

    def _left_out(self, job_id: str, stream: int, count: int) -> None:
        from queuectl import output

        line = output.left_out_line(count)
        if self.prefixes is None:
            self._write(stream, line)
            return
        self._flush_line(job_id, stream)
        self._write(stream, self._prefix(job_id) + line.strip(b"\n") + b"\n")

    def _flush_job(self, job_id: str) -> None:
        for stream in (1, 2):
            self._flush_line(job_id, stream)

    def _flush_line(self, job_id: str, stream: int) -> None:
        rest = self.partial.pop((job_id, stream), b"")
        if rest:
            self._write(stream, self._prefix(job_id) + rest + b"\n")

    def _prefix(self, job_id: str) -> bytes:
        assert self.prefixes is not None
        return f"{self.prefixes[job_id]} | ".encode()

    def _write(self, stream: int, data: bytes | str) -> None:
        if not data:
            return
        raw = data.encode() if isinstance(data, str) else data
        write(sys.stdout if stream == 1 else sys.stderr, raw)
        self.at_line_start[stream] = raw.endswith(b"\n")
