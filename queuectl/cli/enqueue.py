"""The commands that add jobs: enqueue and enqueue-file.

Input is validated before the store is opened, so a refused command writes
nothing (a new SQLite store is not even created). Both are short-lived processes
that users run in loops and scripts: this module imports only what they use.
"""

from __future__ import annotations

import sys

import click

from queuectl.cli.run import add_commands, add_jobs, json_option
from queuectl.errors import InvalidInput


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
        from queuectl import validation  # strict JSON: not needed by --command

        new_job = validation.parse_job_json(job_json)
    elif command is None:
        raise click.UsageError("give the job as a JSON argument or with --command")
    else:
        from queuectl import job_fields

        new_job = job_fields.job_from_options(
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
    from queuectl.plain_lines import plain_commands

    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as error:
            raise InvalidInput(f"cannot read {path}: {error.strerror or error}") from error
    text = validation.decode_input(data)
    # Only ids to print and every record a plain {"command": ...}: the bulk path, no object per job.
    commands = None if as_json else plain_commands(text)
    if commands is not None:
        from queuectl.job_ids import sorted_uuid4s

        ids = sorted_uuid4s(len(commands))
        add_commands(ids, commands)
        sys.stdout.write("\n".join(ids) + "\n")  # one write, not one per job
        return
    new_jobs = validation.parse_jobs_document(text)
    jobs = add_jobs(new_jobs) if new_jobs else []
    from queuectl.cli import render  # tables and JSON: only for commands that print them

    render.ids(jobs, as_json=as_json)
