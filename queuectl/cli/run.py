"""Shared command plumbing: the state the group passes down, shared options, running one async call."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from queuectl.models import Job, NewJob
    from queuectl.queue import Queue

T = TypeVar("T")

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


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

    async def run() -> T:
        async with await Queue.open(target) as queue:
            return await action(queue)

    return asyncio.run(run())


def add_jobs(new_jobs: Sequence[NewJob]) -> list[Job]:
    """Enqueue all of ``new_jobs`` or none.

    On SQLite the insert runs without an event loop (``sqlite_direct``): the
    same transaction as the façade's, at a fraction of the process start-up.
    """
    from queuectl.config import is_postgres_target, sqlite_path

    state = cli_state()
    target = state.target
    if is_postgres_target(target):
        return with_queue(lambda queue: queue.enqueue_many(new_jobs))
    if state.uses_default_target:
        make_data_dir(target)
    from queuectl.storage.sqlite.direct import add_jobs_now

    return add_jobs_now(sqlite_path(target), new_jobs)


def add_commands(ids: Sequence[str], commands: Sequence[str]) -> None:
    """Enqueue a job per command with these ids, every other field at its default; all or none.

    ``enqueue-file``'s bulk path: on SQLite no ``NewJob`` or ``Job`` is built per row.
    """
    from queuectl.config import is_postgres_target, sqlite_path

    state = cli_state()
    target = state.target
    if is_postgres_target(target):
        from queuectl.models import NewJob

        new_jobs = [NewJob(id=job_id, command=command) for job_id, command in zip(ids, commands, strict=True)]
        with_queue(lambda queue: queue.enqueue_many(new_jobs))
        return
    if state.uses_default_target:
        make_data_dir(target)
    from queuectl.storage.sqlite.direct import add_commands_now

    add_commands_now(sqlite_path(target), ids, commands)
