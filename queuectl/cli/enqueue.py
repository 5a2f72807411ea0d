"""The commands that add jobs: enqueue and enqueue-file, through ``queuectl.enqueue``.

Input is checked before the store is opened, so a refused command writes nothing (a new
SQLite store is not even created). Both are short-lived processes that users run in loops
and scripts: this module imports only what they use (``enqueue --command`` no JSON parser).
"""

from __future__ import annotations

import sys

import click

from queuectl.cli.run import enqueue_target, examples, json_option
from queuectl.errors import InvalidInput
from queuectl.models import Job, JobState, NewJob

#: The most characters of a refused argument that the hint to use ``-c`` repeats.
HINT_WIDTH = 60


@click.command(
    "enqueue",
    epilog=examples(
        "queuectl enqueue -c 'make test' --priority 5",
        "queuectl enqueue -c backup.sh --queue nightly --timeout 1h --delay 10m",
        "queuectl enqueue -c 'make deploy' --cwd ~/src/app --env STAGE=prod",
        "queuectl enqueue -c export.sh --unique-key nightly-export",
        "queuectl enqueue -c 'make upload' --after 3f2a9c --no-retry-exit-code 2",
        """queuectl enqueue '{"command": "make test", "priority": 5}'""",
    ),
)
@click.argument("job_json", metavar="[JSON]", required=False)
@click.option("-c", "--command", help="The shell command to run (instead of a JSON job).")
@click.option("--id", "job_id", metavar="ID", help="Job id [default: a new UUID].")
@click.option("--queue", metavar="NAME", help="Named queue [default: default].")
@click.option("--priority", metavar="INT", help="Higher runs first [default: 0].")
@click.option(
    "--timeout",
    metavar="DURATION",
    help="Kill the command after this long: 90, 30s, 5m, 1h30m, or none [default: config].",
)
@click.option("--max-retries", metavar="INT", help="Retries after the first attempt [default: config].")
@click.option("--run-at", metavar="TIME", help="ISO-8601 time not to run before (naive = local time).")
@click.option("--delay", metavar="DURATION", help="Run after a delay: 30, 30s, 5m, 2h, 1d, 1h30m.")
@click.option(
    "--cwd",
    metavar="DIR",
    help="Directory to run the command in; a relative DIR is taken from the current directory"
    " [default: the worker's]. Checked when the job runs (another host may have it).",
)
@click.option(
    "--env",
    "env",
    metavar="NAME=VALUE",
    multiple=True,
    help="Add a variable to the command's environment (over the worker's); repeatable.",
)
@click.option(
    "--unique-key",
    metavar="KEY",
    help="Add nothing while a pending, processing or failed job has this key: print that job's id.",
)
@click.option(
    "--after",
    metavar="ID",
    multiple=True,
    help="Run only once job ID has completed (a unique prefix of 6+ characters will do); repeatable."
    " If it ends dead or cancelled, this job is cancelled.",
)
@click.option(
    "--no-retry-exit-code",
    "no_retry_exit_codes",
    metavar="N",
    multiple=True,
    help="Exiting with code N (1-255) makes the job dead at once, whatever retries are left; repeatable.",
)
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
    cwd: str | None,
    env: tuple[str, ...],
    unique_key: str | None,
    after: tuple[str, ...],
    no_retry_exit_codes: tuple[str, ...],
    as_json: bool,
) -> None:
    """Enqueue one job and print its id.

    Give the shell command with -c/--command and options, or the whole job
    as one JSON object (the fields of `queuectl enqueue-file`).
    """
    options = {
        "--id": job_id,
        "--queue": queue,
        "--priority": priority,
        "--timeout": timeout,
        "--max-retries": max_retries,
        "--run-at": run_at,
        "--delay": delay,
        "--cwd": cwd,
        "--env": env or None,
        "--unique-key": unique_key,
        "--after": after or None,
        "--no-retry-exit-code": no_retry_exit_codes or None,
    }
    given = [name for name, value in options.items() if value is not None]
    if job_json is not None:
        if command is not None or given:
            extra = ", ".join(["--command", *given] if command is not None else given)
            raise click.UsageError(f"give the job as JSON or with --command, not both (got JSON and {extra})")
        from queuectl import job_fields, validation  # strict JSON: not needed by --command

        try:
            job = validation.loads_strict(job_json)  # its fields are checked by enqueue_many
            if not isinstance(job, dict):
                validation.checked_fields(job)  # refuses it: a job is an object
            # Its id fixed here: a job returned in its place (its unique key's holder) is told apart.
            job.setdefault("id", job_fields.new_id())
        except InvalidInput as error:
            raise _with_command_hint(error, job_json) from None
    elif command is None:
        raise click.UsageError("give the job as a JSON argument or with --command")
    else:
        from queuectl import job_fields

        job = job_fields.job_from_options(
            command=command,
            id=job_id,
            queue=queue,
            priority=priority,
            timeout=timeout,
            max_retries=max_retries,
            run_at=run_at,
            delay=delay,
            cwd=cwd,
            env=env,
            unique_key=unique_key,
            after=after,
            no_retry_exit_codes=no_retry_exit_codes,
        )
    from queuectl.enqueue import enqueue_many

    target, make_parent = enqueue_target()
    (stored,) = enqueue_many(target, [job], make_parent=make_parent)
    if stored.id != (job.id if isinstance(job, NewJob) else job["id"]):
        note_held(stored)
    elif stored.state is JobState.CANCELLED:  # a job in its after had already ended dead or cancelled
        click.echo(f"queuectl: job {stored.id} is cancelled at once: {stored.last_error}", err=True)
    if as_json:
        from queuectl.cli import render  # tables and JSON: only for commands that print them

        render.print_json(stored.to_dict())
    else:
        click.echo(stored.id)


def note_held(job: Job) -> None:
    """Say on stderr that ``job``, returned in place of the job asked for, holds its unique key."""
    click.echo(
        f"queuectl: unique key {job.unique_key!r} is already enqueued (job {job.id}, {job.state.value});"
        " nothing added",
        err=True,
    )


def _with_command_hint(error: InvalidInput, text: str) -> InvalidInput:
    """``queuectl enqueue 'echo hello'``, the likeliest first try, is a shell command, not JSON."""
    if text.lstrip().startswith(("{", "[")):
        return error
    import shlex

    from queuectl.display import one_line

    command = shlex.quote(one_line(text.strip(), HINT_WIDTH))
    return InvalidInput(f"{error}; to enqueue a shell command, use: queuectl enqueue -c {command}")


@click.command(
    "enqueue-file",
    epilog=examples("queuectl enqueue-file jobs.jsonl", "cat jobs.json | queuectl enqueue-file - --json"),
)
@click.argument("path", metavar="PATH")
@json_option
def enqueue_file(path: str, as_json: bool) -> None:
    """Enqueue every job in a file, or none; print their ids.

    PATH is a file, or `-` for stdin. It holds one JSON object, a JSON array of objects, or JSON Lines (one
    object per line). An empty array enqueues nothing; an empty file is an error.
    """
    from queuectl import validation
    from queuectl.enqueue import enqueue_document, enqueue_document_ids

    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as error:
            raise InvalidInput(f"cannot read {path}: {error.strerror or error}") from error
    text = validation.decode_input(data)
    target, make_parent = enqueue_target()
    if as_json:
        from queuectl.cli import render  # tables and JSON: only for commands that print them

        render.ids(enqueue_document(target, text, make_parent=make_parent, held=note_held), as_json=True)
        return
    # Only the ids to print: plain {"command": ...} records take the bulk path, no object per job.
    ids = enqueue_document_ids(target, text, make_parent=make_parent, held=note_held)
    if ids:
        sys.stdout.write("\n".join(ids) + "\n")  # one write, not one per job
