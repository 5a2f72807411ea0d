"""Untrusted values before they are a job's fields: text, durations, timestamps; and refusals' words.

A text value must be a string of valid Unicode (``check_text``); one a process is given (a
command, an environment entry) is at most ``MAX_COMMAND_BYTES`` long. Durations are seconds,
0 to 100 years, from a number or text (``queuectl.durations``); timestamps are ISO-8601, turned
into aware UTC datetimes. ``show`` and ``clip`` word a bad value in a refusal (``InvalidInput``).
The checks of each field build on these: ``job_fields``, and ``job_env`` for ``cwd`` and ``env``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import MAXYEAR, MINYEAR, UTC, datetime, timedelta, timezone

from queuectl.errors import InvalidInput

__all__ = (
    "MAX_COMMAND_BYTES",
    "MAX_DURATION",
    "TIMESTAMP_EXAMPLES",
    "check_duration",
    "check_text",
    "check_timestamp",
    "clip",
    "duration_forms",
    "parse_duration",
    "parse_timestamp",
    "show",
    "to_utc",
)

#: Linux refuses one argv string of MAX_ARG_STRLEN (131072) bytes or more: the
#: limit counts the terminating NUL, so a longer command could never be started.
MAX_COMMAND_BYTES = 131071
MAX_DURATION = 100 * 365.25 * 86400  # 100 years: anything longer is surely a mistake

_GREGORIAN_CYCLE = timedelta(days=146_097)  # 400 years: a whole number of weeks
# A pattern, not compiled here: ``re`` compiles and caches it on its first use, so that
# ``enqueue --command CMD`` with ASCII text does not compile it (a few tenths of a ms).
_SURROGATE_PATTERN = "[\ud800-\udfff]"
TIMESTAMP_EXAMPLES = "e.g. 2024-05-01T12:00:00Z or 2024-05-01T14:00:00+02:00 (no offset = local time)"


# --- durations and timestamps -----------------------------------------------------------


def parse_duration(value: str | int | float) -> float:
    """Seconds from ``30``, ``30s``, ``5m``, ``1.5h``, ``1d``, ``1h30m`` or a number; 0 to 100 years."""
    return check_duration(value, "duration")


def check_duration(value: object, field: str, forms: str | None = None) -> float:
    """Seconds from a number or a duration's text (``queuectl.durations``); 0 to 100 years.

    ``forms`` words the accepted forms in a refusal (default: ``durations.DURATION_FORMS``).
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput(f"{field} must be {forms or duration_forms()}, got {show(value)}")
    if isinstance(value, str):
        seconds = _duration_text(value, field, forms)
    elif isinstance(value, int) and abs(value) > MAX_DURATION:
        seconds = math.inf if value > 0 else -math.inf  # float() of a huge int would overflow
    else:
        seconds = float(value)
    if math.isnan(seconds):
        raise InvalidInput(f"{field} must be {forms or duration_forms()}, got {show(value)}")
    if seconds < 0:
        raise InvalidInput(f"{field} must not be negative, got {show(value)}")
    if seconds > MAX_DURATION:
        raise InvalidInput(f"{field} must be at most 100 years, got {show(value)}")
    return seconds


def _duration_text(text: str, field: str, forms: str | None) -> float:
    # Not imported at the top: `enqueue --command CMD` without a duration does without it.
    from queuectl.durations import duration_seconds

    try:
        return duration_seconds(text)  # may be inf: refused by the range check
    except ValueError:
        raise InvalidInput(f"{field} must be {forms or duration_forms()}, got {show(text)}") from None


def duration_forms() -> str:
    from queuectl.durations import DURATION_FORMS

    return DURATION_FORMS


def parse_timestamp(text: str) -> datetime:
    """An aware UTC datetime from ISO-8601 text; a naive time is this machine's local time."""
    return check_timestamp(text, "timestamp")


def check_timestamp(text: str, field: str) -> datetime:
    cleaned = text.strip()
    if cleaned[-1:] in ("Z", "z"):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError as error:
        reason = str(error)
        detail = "" if reason.startswith("Invalid isoformat") else f"{reason}; "
        raise InvalidInput(f"bad {field} {show(text)}: {detail}use ISO-8601, {TIMESTAMP_EXAMPLES}") from None
    return to_utc(moment, f"{field} {show(text)}")


def to_utc(moment: datetime, what: str) -> datetime:
    try:
        if moment.utcoffset() is None:
            moment = _from_local(moment.replace(tzinfo=None, fold=0), what)
        return moment.astimezone(UTC)
    except InvalidInput:
        raise
    except (OverflowError, OSError, ValueError):
        raise InvalidInput(f"{what} is out of range once converted to UTC") from None


def _from_local(naive: datetime, what: str) -> datetime:
    # astimezone() looks a day either side of a naive time, which overflows on the first and
    # last day of the calendar (9999-12-31T23:00 in Berlin is a fine 22:00Z). 400 years nearer
    # the middle, weekdays and leap days repeat, and so do a zone's rules: ask there instead.
    shift = {MINYEAR: _GREGORIAN_CYCLE, MAXYEAR: -_GREGORIAN_CYCLE}.get(naive.year, timedelta(0))
    probe = naive + shift
    # fold=0: in a DST overlap the earlier of the two instants is meant.
    aware = probe.astimezone()
    # A time skipped by a DST change comes back as another wall-clock time.
    if aware.astimezone().replace(tzinfo=None) != probe:
        raise InvalidInput(
            f"{what} does not exist in local time (skipped by a daylight-saving change); "
            "give an offset, e.g. +01:00, or Z"
        )
    offset = aware.utcoffset()
    assert offset is not None  # astimezone() always gives an aware time
    return naive.replace(tzinfo=timezone(offset))


# --- text -----------------------------------------------------------------------------------


def check_text(value: object, field: str) -> str:
    """``value`` if it is a string of valid Unicode (no lone surrogate), else ``InvalidInput``."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string, got {show(value)}")
    # Lone surrogates come from \ud800 escapes or undecodable argv bytes; they cannot be stored.
    surrogate = None if value.isascii() else re.search(_SURROGATE_PATTERN, value)
    if surrogate is not None:
        raise InvalidInput(f"{field} contains {surrogate[0]!r}, a lone surrogate that is not valid Unicode")
    return value


def show(value: object) -> str:
    """A short, one-line, printable rendering of a bad value, JSON-style where possible."""
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return "a very large integer"
    if value is None or isinstance(value, bool | int | float | str):
        import json  # only to word a refusal: not worth its import on the good path

        shown = json.dumps(value, ensure_ascii=False)
    else:
        shown = repr(value)
    # Escape lone surrogates so that printing the message cannot fail.
    return clip(shown).encode("utf-8", "backslashreplace").decode("utf-8")


def clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
