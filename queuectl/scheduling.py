"""Schedules: their checks, when they are due, and the job each due time enqueues.

Pure: no store, no clock of its own. The stores call ``Timing`` with their own now (PostgreSQL's
``now()``, so that hosts whose clocks disagree still agree on what is due) inside the transaction
that enqueues a due time's job and moves ``next_run_at`` on; the worker's upkeep hands them
``scheduled_job`` to turn a schedule's template into that job.

Cron expressions are read by ``cronsim`` (by the author of healthchecks.io): it is maintained,
typed, and follows Debian cron across daylight-saving changes, which is what cron users expect:
a time in the skipped hour runs once, just after the change, and a time in the repeated hour
runs once, at its first occurrence. ``cronsim`` has no ``@daily``-style nicknames: ``NICKNAMES``
maps them to five fields, as cron does.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple

from queuectl.errors import InvalidInput, ScheduleNotFound
from queuectl.field_values import check_duration, check_text, show
from queuectl.models import Job, NewJob, isoformat
from queuectl.records import Record, record

if TYPE_CHECKING:
    from queuectl.config import Settings

__all__ = (
    "MIN_EVERY",
    "NICKNAMES",
    "NewSchedule",
    "Schedule",
    "ScheduleNotFound",
    "ScheduleTick",
    "Timing",
    "check_cron",
    "check_every",
    "check_name",
    "check_tz",
    "due_job",
    "new_schedule",
    "scheduled_job",
)

#: The shortest ``every``: workers look for due schedules about once a second.
MIN_EVERY = 1.0
#: What cron's nicknames stand for.
NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: The input fields a schedule's job may not have: each run gets a new id and is due at its time,
#: and jobs to wait on (``after``) would be the same finished jobs at every run.
_NOT_SCHEDULED = {
    "id": "each run gets a new id",
    "run_at": "each run is due at its scheduled time",
    "delay": "each run is due at its scheduled time",
    "after": "a scheduled job cannot wait on other jobs",
}
#: Where a due time is put when a cron expression matches no time any more (never, in practice).
_NEVER = datetime(9999, 1, 1, tzinfo=UTC)
_MAX_NAME_CHARS = 200


# --- checks ---------------------------------------------------------------------------------


def check_name(value: object) -> str:
    """A schedule's name: 1-200 characters, nothing invisible."""
    text = check_text(value, "schedule name")
    if not 1 <= len(text) <= _MAX_NAME_CHARS or text.isspace():
        raise InvalidInput(f"a schedule name must be 1 to {_MAX_NAME_CHARS} characters, got {show(text)}")
    if any(unicodedata.category(char) in ("Cc", "Cf") for char in text):
        raise InvalidInput(f"a schedule name must not contain control characters, got {show(text)}")
    return text


def check_cron(value: object) -> str:
    """Five cron fields (names, ranges, steps, lists) or a nickname such as ``@daily``."""
    text = " ".join(check_text(value, "cron").split())
    fields = _five_fields(text)
    from cronsim import CronSim, CronSimError

    try:
        next(CronSim(fields, datetime.now(UTC)))
    except (CronSimError, StopIteration) as error:
        reason = str(error) or "it matches no time"
        reason = reason[:1].lower() + reason[1:]
        raise InvalidInput(f"invalid cron expression {show(text)}: {reason}") from None
    return text


def _five_fields(text: str) -> str:
    if text.startswith("@"):
        if text.lower() not in NICKNAMES:
            known = ", ".join(NICKNAMES)
            raise InvalidInput(f"invalid cron expression {show(text)}: the nicknames are {known}")
        return NICKNAMES[text.lower()]
    if len(text.split()) != 5:
        raise InvalidInput(
            f"invalid cron expression {show(text)}: give five fields (minute hour day-of-month"
            " month day-of-week) or a nickname such as @daily"
        )
    return text


def check_tz(value: object) -> str:
    """An IANA time zone name: ``UTC``, ``Europe/Berlin``."""
    text = check_text(value, "tz")
    try:
        _zone(text)
    except (ValueError, OSError, LookupError):  # ZoneInfoNotFoundError is a KeyError
        raise InvalidInput(
            f"unknown time zone {show(text)}: give an IANA name such as Europe/Berlin"
        ) from None
    return text


def check_every(value: object) -> float:
    """An interval: seconds, or a duration's text (``30s``, ``5m``, ``1h``), at least ``MIN_EVERY``."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    seconds = check_duration(value, "every")
    if not seconds >= MIN_EVERY:
        raise InvalidInput(f"every must be at least {MIN_EVERY:g} second, got {show(value)}")
    return seconds


@cache
def _zone(name: str) -> tzinfo:
    if name == "UTC":
        return UTC  # cronsim skips its daylight-saving handling for this one
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


# --- due times ---------------------------------------------------------------------------------


@record
class Timing(Record):
    """When a schedule is due: a cron expression in a zone, or every so many seconds."""

    cron: str | None = None
    every: float | None = None
    tz: str = "UTC"

    def first_after(self, now: datetime) -> datetime:
        """The first due time of a schedule made (or resumed) at ``now``: an interval from now on."""
        if self.every is not None:
            return now + timedelta(seconds=self.every)
        return self.next_after(now)

    def next_after(self, moment: datetime) -> datetime:
        """The first due time strictly after ``moment`` (aware, UTC)."""
        if self.every is not None:
            return moment + timedelta(seconds=self.every)
        from cronsim import CronSim

        assert self.cron is not None
        # A time in a repeated hour comes back as its first occurrence (fold 0), which may be
        # before ``moment``: it ran then, so it is skipped, and the time runs once.
        for candidate in CronSim(_five_fields(self.cron), moment.astimezone(_zone(self.tz))):
            due = candidate.astimezone(UTC)
            if due > moment:
                return due
        return _NEVER

    def latest_due(self, next_run_at: datetime, now: datetime) -> datetime:
        """The latest due time at or before ``now``, ``next_run_at`` at the earliest.

        What a schedule enqueues when it is due: missed due times are not replayed one by one.
        """
        if self.every is not None:
            missed = math.floor((now - next_run_at).total_seconds() / self.every)
            return next_run_at + timedelta(seconds=max(missed, 0) * self.every)
        from cronsim import CronSim

        assert self.cron is not None
        since = (now + timedelta(seconds=1)).astimezone(_zone(self.tz))
        latest = next(iter(CronSim(_five_fields(self.cron), since, reverse=True)), None)
        if latest is None:
            return next_run_at
        latest = latest.astimezone(UTC)
        return latest if next_run_at < latest <= now else next_run_at

    def after_due(self, due: datetime, now: datetime) -> datetime:
        """The ``next_run_at`` once ``due`` is enqueued (or skipped): the first due time after now."""
        following = self.next_after(due)
        if self.every is not None:
            while following <= now:  # an interval keeps its grid
                following += timedelta(seconds=self.every)
        elif following <= now:
            following = self.next_after(now)
        return following


# --- records ---------------------------------------------------------------------------------


@record
class NewSchedule(Record):
    """A schedule checked by ``new_schedule``, on its way into the store. ``job`` is the JSON text of
    the job's input fields (no id, no run_at)."""

    name: str
    timing: Timing
    job: str
    no_overlap: bool = False


@record
class Schedule(Record):
    """A schedule as stored. ``job`` holds the input fields of the job each due time enqueues."""

    name: str
    cron: str | None
    every: float | None
    tz: str
    job: dict[str, Any]
    no_overlap: bool
    paused: bool
    next_run_at: datetime
    last_job: str | None
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """The schedule as ``schedule list --json`` prints it."""
        return {
            "name": self.name,
            "cron": self.cron,
            "every": self.every,
            "tz": self.tz,
            "next_run_at": isoformat(self.next_run_at),
            "last_job": self.last_job,
            "paused": self.paused,
            "overlap": "skip" if self.no_overlap else "allow",
            "job": self.job,
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
        }


def due_job(make_job: MakeJob, template: str, due: datetime) -> NewJob | None:
    """A due time's job (``make_job``); None, and the due time is skipped, if the checks refuse it now."""
    try:
        return make_job(template, due)
    except InvalidInput:
        return None


class ScheduleTick(NamedTuple):
    """What one look for due schedules did: the jobs it enqueued, and how many seconds until the
    next due time of an active schedule (None: there is none)."""

    enqueued: list[Job]
    next_due_in: float | None


#: Turns a schedule's job (its JSON text) and a due time into the job to insert.
MakeJob = Callable[[str, datetime], NewJob]


# --- the façade's part -------------------------------------------------------------------------


def new_schedule(
    name: object,
    *,
    cron: object = None,
    every: object = None,
    tz: object = None,
    no_overlap: bool = False,
    job: NewJob | Mapping[str, Any],
) -> NewSchedule:
    """Check everything a schedule is given; ``InvalidInput`` says what is wrong."""
    checked_name = check_name(name)
    if (cron is None) == (every is None):
        raise InvalidInput("give a schedule a cron expression or an interval (every), one of them")
    if every is not None and tz is not None:
        raise InvalidInput("a time zone (tz) is for cron expressions; an interval needs none")
    if cron is not None:
        timing = Timing(cron=check_cron(cron), tz=check_tz("UTC" if tz is None else tz))
    else:
        timing = Timing(every=check_every(every))
    return NewSchedule(name=checked_name, timing=timing, job=_template(job), no_overlap=bool(no_overlap))


def _template(job: NewJob | Mapping[str, Any]) -> str:
    """The JSON text of a scheduled job's checked input fields."""
    from queuectl.enqueue import check

    if isinstance(job, NewJob):
        fields = check(job)
        fields.pop("id")  # a NewJob needs one; each run gets its own
    else:
        if not isinstance(job, Mapping):
            raise InvalidInput(f"a scheduled job must be a JSON object, got {show(job)}")
        fields = check(job)
        fields.pop("id", None)
        if "id" in job:
            raise InvalidInput(f"a scheduled job has no id: {_NOT_SCHEDULED['id']}")
    for name, why in _NOT_SCHEDULED.items():
        if fields.get(name):
            raise InvalidInput(f"a scheduled job has no {name}: {why}")
    return json.dumps(
        {name: list(value) if isinstance(value, tuple) else value for name, value in fields.items()},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def scheduled_job(template: str, due: datetime, settings: Settings) -> NewJob:
    """The job a schedule enqueues for ``due``: a new id, ``run_at`` the due time, and the
    fields left out of the template from ``settings``, as they are now (as any enqueue)."""
    from queuectl.enqueue import check, resolve

    fields = check({**json.loads(template), "run_at": due})
    return resolve(fields, settings)


def template_fields(text: str) -> dict[str, Any]:
    """A stored template read back for people (``Schedule.job``)."""
    value: dict[str, Any] = json.loads(text)
    return value
