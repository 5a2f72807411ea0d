"""The one way jobs go into a store: check every field, fill in the defaults, insert.

``Queue.enqueue`` and ``Queue.enqueue_many`` (async) and the functions here (sync: for the command
line and scripts) follow the same rules, written once, here:

- every job is checked by the rules of ``job_fields``, whether it comes as a mapping, JSON or a
  ``NewJob`` (``check``);
- a field left unset takes its setting (``models.SETTING_DEFAULTS``: ``timeout`` from
  ``default_timeout``, ``max_retries`` from ``max_retries``) before any store sees the job
  (``resolve``): a store only writes what it is given.

On SQLite the functions here insert with plain ``sqlite3`` in one fsynced transaction, the same
transaction and durability as ``SqliteStore.add_jobs``, with no event loop: ``queuectl enqueue``
is a short-lived process that users run in loops, and starting asyncio and aiosqlite would cost
more than the rest of it. On PostgreSQL they run the async ``Queue``. Nothing heavy is imported
here until it is needed: not asyncio, not ``json`` (``enqueue --command`` has no JSON), no driver.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from queuectl.config import default_target, is_postgres_target, sqlite_path
from queuectl.job_fields import new_job_fields
from queuectl.models import SETTING_DEFAULTS, Job, NewJob

if TYPE_CHECKING:
    from pathlib import Path

    from queuectl.config import Settings

__all__ = (
    "JobInput",
    "check",
    "enqueue",
    "enqueue_document",
    "enqueue_document_ids",
    "enqueue_many",
    "resolve",
    "unresolved",
)

#: A job as callers give it: a ``NewJob``, or its fields as a mapping (JSON's rules apply).
JobInput = NewJob | Mapping[str, Any]

_SETTING_FIELDS = frozenset(SETTING_DEFAULTS)


# --- the rules ----------------------------------------------------------------------------


def check(job: JobInput) -> dict[str, Any]:
    """The checked fields of one job given in any form; ``InvalidInput`` says what is wrong.

    Fields not given are left out (``unresolved``, ``resolve``). A mapping gets a new id if
    it has none.
    """
    if isinstance(job, NewJob):
        return new_job_fields(job)
    return _mapping_checks()(job)


@cache
def _mapping_checks() -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """``validation.checked_fields``, imported once it is needed: ``validation`` brings ``json``."""
    from queuectl.validation import checked_fields

    return checked_fields


def unresolved(fields: Mapping[str, Any]) -> bool:
    """Whether a setting must fill in one of ``fields`` (see ``resolve``)."""
    return not fields.keys() >= _SETTING_FIELDS


def resolve(fields: dict[str, Any], settings: Settings | None) -> NewJob:
    """The ``NewJob`` a store receives: checked ``fields``, the missing ones from ``settings``.

    ``settings`` may be ``None`` only when nothing is ``unresolved``. ``fields`` is the caller's
    own dict (``check`` makes a new one) and is completed in place.
    """
    if settings is not None:
        for name, key in SETTING_DEFAULTS.items():
            if name not in fields:
                fields[name] = getattr(settings, key)
    return NewJob(**fields)


# --- the synchronous path -------------------------------------------------------------------


def enqueue(target: str | None, job: JobInput | None = None, /, **fields: Any) -> Job:
    """Enqueue one job into the store at ``target`` and return it as stored.

    ``enqueue("jobs.db", command="make test", priority=5)``, or with a ``NewJob`` or a mapping.
    ``target`` ``None`` is ``$QUEUECTL_DB`` or the default SQLite file.
    """
    if job is None:
        job = fields
    elif fields:
        raise TypeError("give a job or keyword fields, not both")
    (stored,) = _add(target, [check(job)])
    return stored


def enqueue_many(target: str | None, jobs: Sequence[JobInput], *, make_parent: bool = False) -> list[Job]:
    """Enqueue all of ``jobs`` in one transaction, or none of them; return them as stored.

    Every job is checked before the store is opened: refused input writes nothing, not even
    a new store file. ``make_parent``: create the SQLite file's directory if it is missing
    (the command line's default store).
    """
    return _add(target, [check(job) for job in jobs], make_parent=make_parent)


def enqueue_document(
    target: str | None, text: str, *, make_parent: bool = False, held: Callable[[Job], None] | None = None
) -> list[Job]:
    """Enqueue the jobs of a JSON document (``validation.parse_jobs_document``): all or none.

    A record whose ``unique_key`` an unfinished job holds adds nothing: that job is returned in
    its place, and ``held`` (if given) is called with it.
    """
    from queuectl.validation import parse_jobs_fields

    checked = parse_jobs_fields(text)
    stored = _add(target, checked, make_parent=make_parent)
    if held is not None:
        for fields, job in zip(checked, stored, strict=True):
            if job.id != fields["id"]:
                held(job)
    return stored


def enqueue_document_ids(
    target: str | None, text: str, *, make_parent: bool = False, held: Callable[[Job], None] | None = None
) -> list[str]:
    """``enqueue_document``, returning only the ids: what ``enqueue-file`` prints.

    JSON Lines whose every record is a plain ``{"command": "..."}`` (``plain_lines``) take the
    bulk path: new UUID4 ids, and on SQLite one statement with no ``NewJob`` or ``Job`` per
    record (at 100,000 jobs those would cost more than the insert).
    """
    from queuectl.plain_lines import plain_commands

    commands = plain_commands(text)
    if commands is None:
        return [job.id for job in enqueue_document(target, text, make_parent=make_parent, held=held)]
    from queuectl.job_ids import sorted_uuid4s

    ids = sorted_uuid4s(len(commands))
    target = target or default_target()
    if is_postgres_target(target):
        _on_postgres(
            target,
            [{"id": job_id, "command": command} for job_id, command in zip(ids, commands, strict=True)],
        )
        return ids
    from queuectl.storage.sqlite.direct import transaction

    shared = {"id": "", "command": ""}  # the fields every job has alike; its id and command unused
    with transaction(_sqlite_file(target, make_parent)) as writer:
        writer.add_commands(ids, commands, resolve(shared, writer.settings()))
    return ids


def _add(target: str | None, checked: list[dict[str, Any]], *, make_parent: bool = False) -> list[Job]:
    """Insert jobs whose fields are ``check``ed, their defaults filled in from the store's settings."""
    if not checked:
        return []
    target = target or default_target()
    if is_postgres_target(target):
        return _on_postgres(target, checked)
    from queuectl.storage.sqlite.direct import transaction

    with transaction(_sqlite_file(target, make_parent)) as writer:
        settings = writer.settings() if any(map(unresolved, checked)) else None
        return writer.add_jobs([resolve(fields, settings) for fields in checked])


def _sqlite_file(target: str, make_parent: bool) -> Path:
    path = sqlite_path(target)
    if make_parent:
        with contextlib.suppress(OSError):  # opening the store reports the real problem
            path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _on_postgres(target: str, checked: list[dict[str, Any]]) -> list[Job]:
    import asyncio

    from queuectl.queue import Queue

    async def add() -> list[Job]:
        async with await Queue.open(target) as queue:
            return await queue._add_checked(checked)  # checked here, as Queue.enqueue does

    return asyncio.run(add())
