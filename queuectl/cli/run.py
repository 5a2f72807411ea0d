"""Shared command plumbing: the state the group passes down, shared options, the store to use."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from pathlib import Path

    from queuectl.queue import Queue

T = TypeVar("T")

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")

#: The commands that only read. Opening a SQLite store that does not exist creates it, empty:
#: these say so, or ``queuectl --db typo.db status`` would look like an empty queue.
READ_ONLY_COMMANDS = frozenset(
    {
        "status",
        "list",
        "show",
        "logs",
        "dlq list",
        "config show",
        "config get",
        "worker list",
        "queue list",
        "schedule list",
    }
)


def examples(*lines: str) -> str:
    """A command's ``epilog``: example command lines, shown as written (click rewraps no ``\\b`` block)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


class CliState:
    """Options of the ``queuectl`` group that every command needs."""

    def __init__(self, db: str | None = None, verbose: int = 0) -> None:
        self.db = db
        self.verbose = verbose

    @property
    def target(self) -> str:
        """``--db``, else ``$QUEUECTL_DB``, else the default SQLite file (resolved now)."""
        from queuectl.config import default_target

        return self.db or default_target()

    @property
    def uses_default_target(self) -> bool:
        """Neither ``--db`` nor ``$QUEUECTL_DB`` chose the store."""
        from queuectl.config import DB_ENV

        return not self.db and not os.environ.get(DB_ENV)


def make_data_dir(target: str) -> None:
    """Create the directory of the default store (``~/.local/share/queuectl``) on first use.

    An explicit ``--db`` path is used as given: a missing directory there is more
    likely a typo than a wish.
    """
    from queuectl.config import is_postgres_target, sqlite_path

    if is_postgres_target(target):
        return
    with contextlib.suppress(OSError):  # opening the store reports the real problem
        sqlite_path(target).parent.mkdir(parents=True, exist_ok=True)


def cli_state() -> CliState:
    """The state of the running ``queuectl`` invocation."""
    return click.get_current_context().ensure_object(CliState)


def with_queue(action: Callable[[Queue], Coroutine[Any, Any, T]]) -> T:
    """Open the chosen store, run ``action(queue)`` in a fresh event loop, close the store.

    Call it only after the input is validated: opening a SQLite store creates its file.
    """
    import asyncio

    from queuectl.cli.logging_setup import configure_logging
    from queuectl.queue import Queue

    state = cli_state()
    configure_logging(state.verbose)
    target = state.target
    if state.uses_default_target:
        make_data_dir(target)
    missing = _missing_sqlite_file(target) if _command_name() in READ_ONLY_COMMANDS else None

    async def run() -> T:
        async with await Queue.open(target) as queue:
            return await action(queue)

    result = asyncio.run(run())
    if missing is not None and missing.exists():
        # Only once the command succeeded: an error stays the one line on stderr.
        click.echo(f"queuectl: created a new empty store at {missing}", err=True)
    return result


def store_exists() -> bool:
    """Whether the chosen store is there already (a server store always counts as there)."""
    state = cli_state()
    target = state.target
    if state.uses_default_target:
        make_data_dir(target)
    return _missing_sqlite_file(target) is None


def _command_name() -> str:
    """The running command as typed after ``queuectl``: ``status``, ``dlq list``."""
    ctx: click.Context | None = click.get_current_context()
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


def _missing_sqlite_file(target: str) -> Path | None:
    """The file of a SQLite ``target`` that does not exist yet; None for any other target."""
    from queuectl.config import is_postgres_target, sqlite_path
    from queuectl.errors import InvalidInput

    try:
        if is_postgres_target(target):
            return None
        path = sqlite_path(target)
    except InvalidInput:
        return None  # opening the store refuses the target, in its own words
    return None if os.path.lexists(path) else path


def enqueue_target() -> tuple[str, bool]:
    """The store for ``queuectl.enqueue`` and whether to create its directory (the default store's).

    Enqueues on SQLite run no event loop and log nothing; on PostgreSQL they run the ``Queue``,
    so logging is set up as ``with_queue`` does.
    """
    from queuectl.config import is_postgres_target
    from queuectl.errors import InvalidInput

    state = cli_state()
    target = state.target
    with contextlib.suppress(InvalidInput):  # a malformed target is refused after the input is checked
        if is_postgres_target(target):
            from queuectl.cli.logging_setup import configure_logging

            configure_logging(state.verbose)
    return target, state.uses_default_target
