"""One job field at a time: the checks shared by JSON, ``enqueue --command`` options and ``NewJob``s.

``CHECKS`` is the table of them, a check per input field. Split from ``validation`` (strict
JSON, whole jobs and files) so that ``queuectl enqueue --command ...``, a short-lived process,
imports only this: no ``json``, no ``difflib``. Every refusal is an ``InvalidInput`` (exit 2)
whose message names the field and what would be right.
"""

from __future__ import annotations

import math
import os
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import MAXYEAR, MINYEAR, UTC, datetime, timedelta, timezone
from typing import Any

from queuectl.errors import InvalidInput
from queuectl.models import INPUT_FIELDS, NewJob
from queuectl.records import fields

#: Linux refuses one argv string of MAX_ARG_STRLEN (131072) bytes or more: the
#: limit counts the terminating NUL, so a longer command could never be started.
MAX_COMMAND_BYTES = 131071
MAX_NAME_CHARS = 200
PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1
MAX_RETRIES_MAX = 1_000_000
MAX_TIMEOUT = 1e9
MAX_DURATION = 100 * 365.25 * 86400  # 100 years: anything longer is surely a mistake
#: Linux's PATH_MAX counts the terminating NUL: no longer path can be a working directory.
MAX_CWD_BYTES = 4095
MAX_ENV_ENTRIES = 100
#: Each ``NAME=VALUE`` string of a process's environment is limited as one argv string is.
MAX_ENV_ENTRY_BYTES = MAX_COMMAND_BYTES
ENV_NAME_RULE = "letters, digits and _, not starting with a digit"

_GREGORIAN_CYCLE = timedelta(days=146_097)  # 400 years: a whole number of weeks
# Patterns, not compiled here: ``re`` compiles and caches each on its first use, so that
# ``enqueue --command CMD`` compiles none it does not use (a few tenths of a ms each).
_INT_PATTERN = r"[+-]?[0-9]+"
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
        raise InvalidInput(f"{field} must be {forms or _duration_forms()}, got {show(value)}")
    if isinstance(value, str):
        seconds = _duration_text(value, field, forms)
    elif isinstance(value, int) and abs(value) > MAX_DURATION:
        seconds = math.inf if value > 0 else -math.inf  # float() of a huge int would overflow
    else:
        seconds = float(value)
    if math.isnan(seconds):
        raise InvalidInput(f"{field} must be {forms or _duration_forms()}, got {show(value)}")
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
        raise InvalidInput(f"{field} must be {forms or _duration_forms()}, got {show(text)}") from None


def _duration_forms() -> str:
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
    return _to_utc(moment, f"{field} {show(text)}")


def _to_utc(moment: datetime, what: str) -> datetime:
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


# --- single fields ----------------------------------------------------------------------


def check_id(value: object) -> str:
    text = _name(value, "id")
    # ASCII that passed _name holds no control character: a space is the only whitespace left.
    if " " in text if text.isascii() else any(char.isspace() for char in text):
        raise InvalidInput(f"id must not contain whitespace, got {show(text)}")
    return text


def check_command(value: object) -> str:
    text = _string(value, "command")
    if not text.strip():
        raise InvalidInput("command must not be empty or only whitespace")
    if "\0" in text:
        raise InvalidInput("command must not contain a NUL character (\\u0000): no shell can receive one")
    # Every char is at least one byte, so a long string is refused without encoding it.
    size = len(text) if len(text) > MAX_COMMAND_BYTES else len(text.encode("utf-8"))
    if size > MAX_COMMAND_BYTES:
        raise InvalidInput(
            f"command is {size} bytes, at most {MAX_COMMAND_BYTES} bytes (UTF-8) are allowed: "
            "Linux's MAX_ARG_STRLEN; put a long script in a file and run that"
        )
    return text


def check_queue(value: object) -> str:
    text = _name(value, "queue")
    if text.isspace():
        raise InvalidInput("queue must not be only whitespace")
    return text


def check_priority(value: object) -> int:
    return _integer(value, "priority", PRIORITY_MIN, PRIORITY_MAX)


def check_max_retries(value: object) -> int:
    return _integer(value, "max_retries", 0, MAX_RETRIES_MAX)


def check_timeout(value: object) -> float | None:
    """Seconds > 0, as a number or a duration's text (``"5m"`` is 300.0); ``None`` for no timeout."""
    if value is None:
        return None  # explicitly no timeout, unlike an absent field (the store's default)
    rule = (
        "timeout must be a number of seconds > 0 and <= 1000000000 (or a duration: 90s, 5m, 1h30m),"
        " or null for none"
    )
    seconds = value
    if isinstance(value, str):
        from queuectl.durations import duration_seconds  # only when a timeout is text

        try:
            seconds = duration_seconds(value)
        except ValueError:
            raise InvalidInput(f"{rule}, got {show(value)}") from None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidInput(f"{rule}, got {show(value)}")
    if not 0 < seconds <= MAX_TIMEOUT:  # also refuses NaN
        raise InvalidInput(f"{rule}, got {show(value)}")
    return float(seconds)


def check_run_at(value: object) -> datetime:
    if isinstance(value, datetime):  # embedders may pass one directly
        return _to_utc(value, f"run_at {value.isoformat()}")
    if not isinstance(value, str):
        raise InvalidInput(f"run_at must be an ISO-8601 string, got {show(value)} ({TIMESTAMP_EXAMPLES})")
    return check_timestamp(value, "run_at")


def check_delay(value: object) -> float:
    if isinstance(value, timedelta):  # embedders may pass one directly
        value = value.total_seconds()
    return check_duration(value, "delay")


def check_cwd(value: object) -> str | None:
    """An absolute directory path, kept as given (whether it exists is for the worker to find out:
    another host may have it); ``None`` for the worker's own working directory."""
    if value is None:
        return None
    text = _string(value, "cwd")
    if "\0" in text:
        raise InvalidInput("cwd must not contain a NUL character (\\u0000): no path can hold one")
    if not text.startswith("/"):
        raise InvalidInput(f"cwd must be an absolute path (starting with /), got {show(text)}")
    size = len(text) if len(text) > MAX_CWD_BYTES else len(text.encode("utf-8"))
    if size > MAX_CWD_BYTES:
        raise InvalidInput(
            f"cwd is {size} bytes, at most {MAX_CWD_BYTES} bytes (Linux's PATH_MAX) are allowed"
        )
    return text


def check_env(value: object) -> dict[str, str] | None:
    """Variables added to the command's environment: an object of up to ``MAX_ENV_ENTRIES``
    strings by name; ``None`` for none. A new dict, in the order given."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInput(f'env must be an object of strings, e.g. {{"NAME": "value"}}, got {show(value)}')
    if len(value) > MAX_ENV_ENTRIES:
        raise InvalidInput(f"env has {len(value)} entries, at most {MAX_ENV_ENTRIES} are allowed")
    variables: dict[str, str] = {}
    for name, text in value.items():
        check_env_name(name)
        label = f"env {clip(name)}"
        if not isinstance(text, str):
            raise InvalidInput(f"{label} must be a string, got {show(text)}")
        _string(text, label)
        if "\0" in text:
            raise InvalidInput(f"{label} must not contain a NUL character (\\u0000)")
        size = len(name) + 1 + (len(text) if len(text) > MAX_ENV_ENTRY_BYTES else len(text.encode("utf-8")))
        if size > MAX_ENV_ENTRY_BYTES:
            raise InvalidInput(
                f"{label} is {size} bytes as NAME=VALUE, at most {MAX_ENV_ENTRY_BYTES} bytes are allowed"
                " (Linux's MAX_ARG_STRLEN); put a long value in a file"
            )
        variables[name] = text
    return variables


def check_env_name(name: object) -> str:
    """A variable name: ``[A-Za-z_][A-Za-z0-9_]*``, what every shell can use."""
    if not isinstance(name, str):
        raise InvalidInput(f"env names must be strings, got {show(name)}")
    # ASCII letters, digits and _ without ``re``: isalnum() alone would take other scripts' letters.
    valid = name.isascii() and name.replace("_", "a").isalnum() and not name[0].isdigit()
    if not valid:
        raise InvalidInput(f"env name {show(name)} is not valid: use {ENV_NAME_RULE}")
    return name


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string, got {show(value)}")
    # Lone surrogates come from \ud800 escapes or undecodable argv bytes; they cannot be stored.
    surrogate = None if value.isascii() else re.search(_SURROGATE_PATTERN, value)
    if surrogate is not None:
        raise InvalidInput(f"{field} contains {surrogate[0]!r}, a lone surrogate that is not valid Unicode")
    return value


def _name(value: object, field: str) -> str:
    """An id or queue name: 1-200 chars and nothing invisible that would make it hard to type."""
    text = _string(value, field)
    if not 1 <= len(text) <= MAX_NAME_CHARS:
        raise InvalidInput(f"{field} must be 1 to {MAX_NAME_CHARS} characters, got {len(text)}")
    if text.isascii() and text.isprintable():  # ASCII has no Cf, and its Cc are the unprintable
        return text
    import unicodedata  # only for ids and queue names: `enqueue --command CMD` has neither

    for char in text:
        if unicodedata.category(char) in ("Cc", "Cf"):
            raise InvalidInput(f"{field} must not contain control characters, got {show(text)}")
    return text


def _integer(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{field} must be an integer, got {show(value)}")
    if not low <= value <= high:
        raise InvalidInput(f"{field} must be an integer from {low} to {high}, got {show(value)}")
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


# --- whole jobs -------------------------------------------------------------------------

#: Each input field's check, in ``NewJob``'s order: an untrusted value in, the field's value out
#: (or ``InvalidInput``). JSON, options and ``NewJob``s given to the façade all go through it.
CHECKS: dict[str, Callable[[Any], Any]] = {
    "id": check_id,
    "command": check_command,
    "queue": check_queue,
    "priority": check_priority,
    "timeout": check_timeout,
    "max_retries": check_max_retries,
    "run_at": check_run_at,
    "delay": check_delay,
    "cwd": check_cwd,
    "env": check_env,
}
if tuple(CHECKS) != INPUT_FIELDS:  # a new input field needs its check here
    raise RuntimeError(f"job_fields.CHECKS {tuple(CHECKS)} do not match NewJob's fields {INPUT_FIELDS}")

#: ``NewJob``'s fields with their defaults; a field left at its default (the very object) needs no check.
_DEFAULTS = tuple((info.name, info.default) for info in fields(NewJob))


def new_id() -> str:
    """The id of a job given without one: a new random UUID4."""
    return str(uuid.uuid4())


def checked(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (input fields by name, all known) run through ``CHECKS``, in ``NewJob``'s order."""
    return {name: check(values[name]) for name, check in CHECKS.items() if name in values}


def new_job_fields(job: NewJob) -> dict[str, Any]:
    """The fields of a ``NewJob`` checked as any input is: those not left at their default.

    What the façade does with a ``NewJob`` it is given: building one checks nothing.
    """
    if job.run_at is not None and job.delay is not None:
        raise InvalidInput("give run_at or delay, not both")
    values = {}
    for name, default in _DEFAULTS:
        value = getattr(job, name)
        if value is not default:
            values[name] = CHECKS[name](value)
    return values


# --- command-line options ---------------------------------------------------------------


def job_from_options(
    *,
    command: str,
    id: str | None = None,
    queue: str | None = None,
    priority: str | None = None,
    timeout: str | None = None,
    max_retries: str | None = None,
    run_at: str | None = None,
    delay: str | None = None,
    cwd: str | None = None,
    env: tuple[str, ...] | str | None = None,
) -> NewJob:
    """A ``NewJob`` from ``enqueue --command ... --priority ...`` option strings.

    The strings are converted here (``_FROM_TEXT``), then checked by the same rules as JSON input.
    A relative ``cwd`` is taken from the current directory; ``env`` is the ``NAME=VALUE`` texts
    of ``--env`` (or one such text), each name at most once.
    """
    if run_at is not None and delay is not None:
        raise InvalidInput("give --run-at or --delay, not both")
    texts = {
        "id": id,
        "command": command,
        "queue": queue,
        "priority": priority,
        "timeout": timeout,
        "max_retries": max_retries,
        "run_at": run_at,
        "delay": delay,
        "cwd": cwd,
    }
    values: dict[str, Any] = {}
    for name, text in texts.items():  # in NewJob's order, as JSON input is checked
        if text is not None:
            values[name] = CHECKS[name](_FROM_TEXT[name](text, name) if name in _FROM_TEXT else text)
    if env:
        values["env"] = check_env(env_from_options((env,) if isinstance(env, str) else env))
    values.setdefault("id", new_id())
    return NewJob(**values)


def env_from_options(texts: Sequence[str]) -> dict[str, str]:
    """``{"NAME": "VALUE"}`` from ``--env NAME=VALUE`` texts (the value may hold ``=``)."""
    variables: dict[str, str] = {}
    for text in texts:
        name, equals, value = text.partition("=")
        if not equals:
            raise InvalidInput(f"--env takes NAME=VALUE, got {show(text)}")
        check_env_name(name)
        if name in variables:
            raise InvalidInput(f"--env {clip(name)} is given twice")
        variables[name] = value
    return variables


def _absolute(text: str, field: str) -> str:
    """A directory given on the command line, relative to the current one (as a shell takes it)."""
    if not text or text.startswith("/") or "\0" in text:
        return text  # the check refuses an empty path and a NUL in its own words
    try:
        return os.path.abspath(text)
    except OSError as error:  # the current directory was deleted
        raise InvalidInput(
            f"cannot make --cwd {show(text)} absolute: {error.strerror}; give an absolute path"
        ) from None


def _whole(text: str, field: str) -> int:
    stripped = text.strip()
    if re.fullmatch(_INT_PATTERN, stripped):
        try:
            return int(stripped, 10)
        except ValueError:  # more digits than Python converts; certainly out of range
            pass
    raise InvalidInput(f"{field} must be a whole number (base 10), got {show(text)}")


def _timeout_text(text: str, field: str) -> float | None:
    if text.strip().lower() in ("none", "null"):
        return None
    return check_duration(text, field, f"{_duration_forms()}, or none for no timeout")


#: Options whose text is not the field's value as it is: how it becomes one (then checked).
_FROM_TEXT: dict[str, Callable[[str, str], object]] = {
    "priority": _whole,
    "timeout": _timeout_text,
    "max_retries": _whole,
    "cwd": _absolute,
}
