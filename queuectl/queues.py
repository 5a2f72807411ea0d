"""Queues' flow settings: pauses, concurrency limits and rate limits, as records and as text.

A queue exists as soon as it has jobs or settings (``queue list``); its settings are a row of
the store's ``queues`` table, which the stores delete once nothing is set any more, so that
workers go back to the plain claim. Rates are written ``N/DURATION``: ``10/s``, ``100/m``,
``5/10s``, with a duration in any form ``queuectl.durations`` takes, or a bare unit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from queuectl.durations import DURATION_FORMS, duration_seconds
from queuectl.errors import InvalidInput
from queuectl.models import JobState
from queuectl.records import Record, record

__all__ = (
    "QueueInfo",
    "QueueSettings",
    "Rate",
    "check_concurrency",
    "check_queue_name",
    "parse_rate",
    "queue_infos",
    "settings_from_row",
)

RATE_FORMS = "N/DURATION with N >= 1, such as 10/s, 100/m, 5/10s or 1/1h30m"
#: The most a limit's N may be: what both stores keep in an integer column.
MAX_LIMIT = 2**31 - 1
#: A unit alone stands for one of it: ``10/s`` is ten a second.
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@record
class Rate(Record):
    """At most ``count`` starts in any window of ``seconds``."""

    count: int
    seconds: float

    def __str__(self) -> str:
        """The canonical text, which ``parse_rate`` reads back: ``10/s``, ``5/10s``, ``1/1m30s``."""
        return f"{self.count}/{_duration_text(self.seconds)}"


@record
class QueueSettings(Record):
    """One queue's flow settings; ``None`` limits mean none."""

    name: str
    paused: bool = False
    concurrency: int | None = None
    rate: Rate | None = None

    @property
    def limited(self) -> bool:
        return self.concurrency is not None or self.rate is not None

    @property
    def any(self) -> bool:
        """Whether anything is set: a claim must look at this queue."""
        return self.paused or self.limited


@record
class QueueInfo(Record):
    """What ``queue list`` shows of one queue: its jobs by state and its settings."""

    name: str
    jobs: dict[JobState, int]
    settings: QueueSettings

    def to_dict(self) -> dict[str, Any]:
        rate = self.settings.rate
        return {
            "name": self.name,
            "jobs": {state.value: self.jobs.get(state, 0) for state in JobState},
            "paused": self.settings.paused,
            "concurrency": self.settings.concurrency,
            "rate": None if rate is None else str(rate),
        }


def check_queue_name(name: object) -> str:
    """A queue name, checked as a job's ``queue`` field is (``InvalidInput``)."""
    from queuectl.job_fields import check_queue

    return check_queue(name)


def check_concurrency(value: object) -> int | None:
    """``N`` >= 1 (an int, or its text), or ``None``/``none`` for no limit (``InvalidInput``)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise InvalidInput(f"concurrency must be a whole number >= 1 or none, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise InvalidInput(f"concurrency must be a whole number >= 1 or none, got {value!r}")
    return value


def parse_rate(value: object) -> Rate | None:
    """A ``Rate`` from ``N/DURATION`` text (or a ``Rate``); ``None``/``none`` for no limit."""
    if value is None or isinstance(value, Rate):
        return value
    if not isinstance(value, str):
        raise InvalidInput(f"rate must be text such as 10/s, got {value!r}")
    text = value.strip()
    if text.lower() == "none":
        return None
    count_text, slash, duration = text.partition("/")
    if not slash:
        raise InvalidInput(f"rate {value!r} is not {RATE_FORMS}")
    try:
        count = int(count_text.strip())
    except ValueError:
        raise InvalidInput(f"rate {value!r} is not {RATE_FORMS}") from None
    if count < 1:
        raise InvalidInput(f"rate {value!r}: N must be at least 1 (to stop a queue, pause it)")
    if count > MAX_LIMIT:
        raise InvalidInput(f"rate {value!r}: N must be at most {MAX_LIMIT}")
    duration = duration.strip()
    try:
        seconds = _UNITS[duration] if duration in _UNITS else duration_seconds(duration)
    except ValueError:
        raise InvalidInput(f"rate {value!r}: the duration is {DURATION_FORMS}") from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise InvalidInput(f"rate {value!r}: the duration must be more than 0 seconds")
    return Rate(count=count, seconds=seconds)


def _duration_text(seconds: float) -> str:
    """``s``, ``m``, ``h``, ``d`` for one unit; else the largest units that add up (``1m30s``)."""
    for unit, size in _UNITS.items():
        if seconds == size:
            return unit
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds:g}s"
    parts = []
    for unit in ("d", "h", "m", "s"):
        size = int(_UNITS[unit])
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return "".join(parts)


def settings_from_row(
    name: str, paused: Any, concurrency: Any, rate_count: Any, rate_seconds: Any
) -> QueueSettings:
    """A ``queues`` row of either store as settings."""
    rate = None if rate_count is None else Rate(count=int(rate_count), seconds=float(rate_seconds))
    return QueueSettings(
        name=name,
        paused=bool(paused),
        concurrency=None if concurrency is None else int(concurrency),
        rate=rate,
    )


def queue_infos(counts: Iterable[tuple[str, str, int]], settings: Iterable[QueueSettings]) -> list[QueueInfo]:
    """Every queue of ``counts`` (``(queue, state, jobs)`` rows) or ``settings``, by name."""
    by_name: dict[str, dict[JobState, int]] = {}
    for queue, state, number in counts:
        by_name.setdefault(queue, dict.fromkeys(JobState, 0))[JobState(state)] = int(number)
    set_for = {item.name: item for item in settings}
    names = sorted(by_name.keys() | set_for.keys())
    return [
        QueueInfo(
            name=name,
            jobs=by_name.get(name) or dict.fromkeys(JobState, 0),
            settings=set_for.get(name) or QueueSettings(name=name),
        )
        for name in names
    ]
