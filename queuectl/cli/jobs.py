"""Job commands: enqueue, enqueue-file, status, list, show, logs.

Input is validated before the store is opened, so a refused command writes
nothing (a new SQLite store is not even created).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from queuectl.cli.run import add_jobs, with_queue
from queuectl.errors import InvalidInput
from queuectl.models import JobState

DEFAULT_LIMIT = 100


limit_option = click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="Show at most this many jobs; 0 shows all.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
STATE_CHOICE = click.Choice([state.value for state in JobState])


@click.command("enqueue")
@click.argument("job_json", metavar="[JSON]", required=False)
@click.option("-c", "--command", help="The shell command to run (instead of a JSON job).")
@click.option("--id", "job_id", metavar="ID", help="Job id [default: a new UUID].")
@click.option("--queue", metavar="NAME", help="Named queue [default: default].")
@click.option("--priority", metavar="INT", help="Higher runs first [default: 0].")
@click.option("--timeout", metavar="SECONDS", help="Kill the command after this long [default: config].")
@click.option("--max-retries", metavar="INT", help="Retries after the first attempt [default: config].")
@click.option("--run-at", metavar="TIME", help="ISO-8601 time not to run before (naive = local time).")
@click.option("--delay", metavar="DURATION", help="Run after a delay: 30, 30s, 5m, 2h, 1d.")
@json_option
def enqueue(
    job_json: str | None,
    command: str | None,
    job_id: str | None,
    queue: str | None,
    priority: str | None,
    timeout: str | None,
    max_retries: str | None,
    run_at: str | None,
    delay: str | None,
    as_json: bool,
) -> None:
    """Enqueue one job and print its id.

    Give the job as a JSON object, e.g.
    `queuectl enqueue '{"command": "make test", "priority": 5}'`,
    or with options: `queuectl enqueue --command 'make test' --priority 5`.
    """
    from queuectl import validation

    options = {
        "--id": job_id,
        "--queue": queue,
        "--priority": priority,
        "--timeout": timeout,
        "--max-retries": max_retries,
        "--run-at": run_at,
        "--delay": delay,
    }
    given = [name for name, value in options.items() if value is not None]
    if job_json is not None:
        if command is not None or given:
            extra = ", ".join(["--command", *given] if command is not None else given)
            raise click.UsageError(f"give the job as JSON or with --command, not both (got JSON and {extra})")
        new_job = validation.parse_job_json(job_json)
    elif command is None:
        raise click.UsageError("give the job as a JSON argument or with --command")
    else:
        new_job = validation.job_from_options(
            command=command,
            id=job_id,
            queue=queue,
            priority=priority,
            timeout=timeout,
            max_retries=max_retries,
            run_at=run_at,
            delay=delay,
        )
    (job,) = add_jobs([new_job])
    if as_json:
        from queuectl.cli import render  # tables and JSON: only for commands that print them

        render.print_json(job.to_dict())
    else:
        click.echo(job.id)


@click.command("enqueue-file")
@click.argument("path", metavar="PATH")
@json_option
def enqueue_file(path: str, as_json: bool) -> None:
    """Enqueue every job in a file, or none; print their ids.

    PATH is a file, or `-` for stdin. It holds one JSON object, a JSON array of objects, or JSON Lines (one
    object per line). An empty array enqueues nothing; an empty file is an error.
    """
    from queuectl import validation

    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise InvalidInput(f"cannot read {path}: {error.strerror or error}") from error
    new_jobs = validation.parse_jobs_document(validation.decode_input(data))
    jobs = add_jobs(new_jobs) if new_jobs else []
    from queuectl.cli import render  # tables and JSON: only for commands that print them

    render.ids(jobs, as_json=as_json)


@click.command("status")
@json_option
def status(as_json: bool) -> None:
    """Job counts per state, live workers, next run."""
    from queuectl.cli import render  # tables and JSON: only for commands that print them

    render.status(with_queue(lambda q: q.status()), as_json=as_json)


@click.command("list")
@click.option("--state", type=STATE_CHOICE, help="Only jobs in this state.")
@click.option("--queue", metavar="NAME", help="Only jobs of this queue.")
@limit_option
@json_option
def list_jobs(state: str | None, queue: str | None, limit: int, as_json: bool) -> None:
    """Jobs, newest first."""
    job_state = JobState(state) if state is not None else None
    jobs = with_queue(lambda q: q.list_jobs(state=job_state, queue=queue, limit=limit or None))
    from queuectl.cli import render  # tables and JSON: only for commands that print them

    render.jobs(jobs, as_json=as_json)


@click.command("show")
@click.argument("job_id", metavar="ID")
@json_option
def show(job_id: str, as_json: bool) -> None:
    """One job: every field, and its latest attempt's output."""
    from queuectl.cli import render  # tables and JSON: only for commands that print them

    render.job_details(with_queue(lambda q: q.get(job_id)), as_json=as_json)


@click.command("logs")
@click.argument("job_id", metavar="ID")
@json_option
def logs(job_id: str, as_json: bool) -> None:
    """Print a job's output: stdout to stdout, stderr to stderr.

    The output of the latest attempt, byte for byte. Only the tail is kept
    (config `output_limit`, 64 KiB by default). With --json, prints
    {"id", "stdout", "stderr"} as text, undecodable bytes replaced.
    """
    job = with_queue(lambda q: q.get(job_id))
    if as_json:
        from queuectl.cli import render  # tables and JSON: only for commands that print them

        render.print_json(
            {
                "id": job.id,
                "stdout": job.stdout.decode("utf-8", errors="replace"),
                "stderr": job.stderr.decode("utf-8", errors="replace"),
            }
        )
        return
    for stream, data in ((sys.stdout, job.stdout), (sys.stderr, job.stderr)):
        stream.flush()
        stream.buffer.write(data)
        stream.buffer.flush()
