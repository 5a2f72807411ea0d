"""The ``queuectl`` command line: a thin click layer over the ``Queue`` façade.

``main()`` is the one error boundary: every failure becomes one line on stderr
and an exit code (2 bad usage or input, 1 anything else, 130 interrupted).
Commands never call ``sys.exit``. Heavy imports (asyncio, the store drivers,
the façade) happen inside commands, so ``queuectl --help`` starts fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from typing import NoReturn

import click

from queuectl.cli.dlq import dlq
from queuectl.cli.jobs import enqueue, enqueue_file, list_jobs, logs, show, status
from queuectl.cli.run import CliState
from queuectl.cli.settings import config
from queuectl.cli.workers import worker
from queuectl.config import DB_ENV
from queuectl.errors import QueueError

__all__ = ("cli", "main")

PROG = "queuectl"


class _StderrHandler(logging.Handler):
    """Writes log records to whatever ``sys.stderr`` is at the time (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def _configure_logging(verbose: int) -> None:
    """Only the CLI configures logging: warnings by default, -v info, -vv debug."""
    logger = logging.getLogger("queuectl")
    logger.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING)
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        formatter.converter = time.gmtime  # every timestamp queuectl prints is UTC
        handler = _StderrHandler()
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    if verbose < 2:
        # The PostgreSQL driver logs its reconnect attempts with tracebacks; queuectl says
        # what matters in its own words.
        logging.getLogger("asyncpg").addHandler(logging.NullHandler())
        logging.getLogger("asyncpg").propagate = False


@click.group(
    name=PROG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--db",
    "db",
    metavar="TARGET",
    envvar=DB_ENV,
    show_envvar=True,
    help="The job store: a path, sqlite:///path or postgresql://... "
    "[default: $XDG_DATA_HOME/queuectl/queue.db]",
)
@click.option("-v", "--verbose", count=True, help="More log output on stderr; -vv adds tracebacks.")
@click.version_option(package_name="queuectl", prog_name=PROG, message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, db: str | None, verbose: int) -> None:
    """Run shell commands as persistent background jobs.

    Enqueue jobs in one terminal and run `queuectl worker start` in another.
    Failed jobs are retried with exponential backoff and end in the dead-letter
    queue (`queuectl dlq`) when their retries run out.
    """
    state = ctx.ensure_object(CliState)
    state.db = db or None
    state.verbose = verbose
    _configure_logging(verbose)


for _command in (enqueue, enqueue_file, status, list_jobs, show, logs, dlq, config, worker):
    cli.add_command(_command)


def _one_line(text: str) -> str:
    """Messages are one stderr line: join any lines with '; '."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return "; ".join(lines) or "unknown error"


def _say(line: str) -> None:
    """One line on stderr; a closed stderr is no reason for a traceback."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"{line}\n")
        sys.stderr.flush()


def _error(message: str, exit_code: int) -> NoReturn:
    _say(f"{PROG}: error: {_one_line(message)}")
    sys.exit(exit_code)


def _usage_error(error: click.UsageError) -> NoReturn:
    if isinstance(error, click.exceptions.NoArgsIsHelpError):
        # Plain `queuectl` (or `queuectl dlq`) shows its help, as a mistake would.
        error.show()
        sys.exit(2)
    message = _one_line(error.format_message())
    ctx = error.ctx
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        message = f"{message} (try '{ctx.command_path} --help')"
    _error(message, 2)


def _quiet_broken_pipe() -> NoReturn:
    """The reader of stdout went away (`queuectl list | head`): exit without noise."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    sys.exit(1)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the command line and exit; the one place errors become exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    state = CliState()
    try:
        result = cli.main(args, prog_name=PROG, standalone_mode=False, obj=state)
        sys.stdout.flush()
    except click.UsageError as error:
        _usage_error(error)
    except click.ClickException as error:
        _error(error.format_message(), error.exit_code)
    except QueueError as error:
        if state.verbose >= 2:
            traceback.print_exc()
        _error(str(error), error.exit_code)
    except (click.Abort, KeyboardInterrupt):
        sys.exit(130)
    except BrokenPipeError:
        _quiet_broken_pipe()
    except Exception as error:
        if state.verbose >= 2:
            traceback.print_exc()
        detail = _one_line(f"{type(error).__name__}: {error}")
        if state.verbose < 2:
            detail += " (run with -vv for the traceback)"
        _say(f"{PROG}: internal error: {detail}")
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
