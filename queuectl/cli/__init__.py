"""The ``queuectl`` command line: a thin click layer over the ``Queue`` façade.

``main()`` is the one error boundary: every failure becomes one line on stderr
and an exit code (2 bad usage or input, 1 anything else, 130 interrupted).
Commands never call ``sys.exit``. Heavy imports (asyncio, the store drivers,
the façade) happen inside commands, so ``queuectl --help`` starts fast.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from queuectl.cli.run import CliState
from queuectl.config import DB_ENV
from queuectl.errors import QueueError

__all__ = ("cli", "main")

PROG = "queuectl"


#: Each command's module is imported only when that command runs: `queuectl enqueue`
#: is a short-lived process, and importing every command would double its start-up.
_COMMANDS = {
    "cancel": ("queuectl.cli.operate", "cancel"),
    "completion": ("queuectl.cli.completion", "completion"),
    "config": ("queuectl.cli.settings", "config"),
    "dashboard": ("queuectl.cli.dashboard", "dashboard"),
    "dlq": ("queuectl.cli.dlq", "dlq"),
    "enqueue": ("queuectl.cli.enqueue", "enqueue"),
    "enqueue-file": ("queuectl.cli.enqueue", "enqueue_file"),
    "list": ("queuectl.cli.jobs", "list_jobs"),
    "logs": ("queuectl.cli.follow", "logs"),
    "purge": ("queuectl.cli.operate", "purge"),
    "queue": ("queuectl.cli.queues", "queue"),
    "retry": ("queuectl.cli.operate", "retry"),
    "run": ("queuectl.cli.waiting", "run"),
    "schedule": ("queuectl.cli.schedules", "schedule"),
    "show": ("queuectl.cli.jobs", "show"),
    "status": ("queuectl.cli.jobs", "status"),
    "store": ("queuectl.cli.store", "store"),
    "wait": ("queuectl.cli.waiting", "wait"),
    "worker": ("queuectl.cli.workers", "worker"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # click suggests close names from the commands it has loaded: none, here.
        if not args[0].startswith("-") and args[0] not in _COMMANDS:
            raise click.exceptions.NoSuchCommand(args[0], possibilities=list(_COMMANDS), ctx=ctx)
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = _COMMANDS.get(cmd_name)
        if found is None:
            return None
        command: click.Command = getattr(importlib.import_module(found[0]), found[1])
        return command


@click.group(
    cls=_LazyGroup,
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
    if isinstance(error, click.NoSuchOption) and error.option_name in _GLOBAL_OPTIONS:
        message += f" ({error.option_name} goes before the command: queuectl {error.option_name} ... COMMAND)"
    ctx = error.ctx
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        message = f"{message} (try '{ctx.command_path} --help')"
    _error(message, 2)


#: Options of the ``queuectl`` group itself, which a command after them does not take.
_GLOBAL_OPTIONS = ("--db", "-v", "--verbose")


def _not_utf8(args: Sequence[str]) -> str | None:
    """The first argument that is not valid UTF-8 (Python keeps such bytes as lone surrogates)."""
    for arg in args:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            # As the bytes were (\xff) where they came from the command line, else the escape.
            raw = arg.encode("utf-8", "surrogateescape" if _from_bytes(arg) else "backslashreplace")
            return repr(raw)[2:-1]
    return None


#: Errors of writing our output: every other failure to write reaches here as a ``StoreError``.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})


def _from_bytes(text: str) -> bool:
    """Whether every lone surrogate is one Python made of an undecodable byte."""
    return all("\udc80" <= char <= "\udcff" for char in text if "\ud800" <= char <= "\udfff")


def _output_failed(error: OSError) -> NoReturn:
    """stdout could not be written (a full disk, `> /dev/full`): one line, exit 1, no second try."""
    _silence_stdout()
    reason = (error.strerror or str(error)).lower()
    _error(f"cannot write output: {reason}", 1)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the exit's own flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _quiet_broken_pipe() -> NoReturn:
    """The reader of stdout went away (`queuectl list | head`): exit without noise."""
    _silence_stdout()
    sys.exit(1)


def _print_traceback() -> None:
    import traceback

    traceback.print_exc()


def _internal_error(error: Exception, verbose: int) -> NoReturn:
    if verbose >= 2:
        _print_traceback()
    detail = _one_line(f"{type(error).__name__}: {error}")
    if verbose < 2:
        detail += " (run with -vv for the traceback)"
    _say(f"{PROG}: internal error: {detail}")
    sys.exit(1)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the command line and exit; the one place errors become exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    state = CliState()
    bad = _not_utf8(args)
    if bad is not None:
        _error(f"the argument '{bad}' is not valid UTF-8; queuectl takes UTF-8 text", 2)
    try:
        result = cli.main(args, prog_name=PROG, standalone_mode=False, obj=state)
        sys.stdout.flush()
    except click.UsageError as error:
        _usage_error(error)
    except click.ClickException as error:
        _error(error.format_message(), error.exit_code)
    except QueueError as error:
        if state.verbose >= 2:
            _print_traceback()
        _error(str(error), error.exit_code)
    except (click.Abort, KeyboardInterrupt):
        sys.exit(130)
    except BrokenPipeError:
        _quiet_broken_pipe()
    except OSError as error:
        if error.errno in _WRITE_ERRNOS:
            _output_failed(error)
        _internal_error(error, state.verbose)
    except Exception as error:
        _internal_error(error, state.verbose)
    sys.exit(result if isinstance(result, int) else 0)
