"""Untrusted input -> ``NewJob``: strict JSON, job fields, durations and timestamps.

Everything here is pure: no I/O, no store. Every refusal is an ``InvalidInput``
(exit 2) whose message is one line naming the field and what would be right.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from datetime import MAXYEAR, MINYEAR, UTC, datetime, timedelta, timezone
from typing import Any, NoReturn, TypeVar

from queuectl.errors import InvalidInput
from queuectl.models import UNSET, NewJob

__all__ = [
    "INPUT_FIELDS",
    "MAX_COMMAND_BYTES",
    "OUTPUT_FIELDS",
    "decode_input",
    "job_from_options",
    "loads_strict",
    "parse_duration",
    "parse_job_json",
    "parse_jobs_document",
    "parse_timestamp",
    "validate_job",
]

INPUT_FIELDS = ("id", "command", "queue", "priority", "timeout", "max_retries", "run_at", "delay")
OUTPUT_FIELDS = frozenset(
    {
        "state",
        "attempts",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "exit_code",
        "last_error",
        "stdout",
        "stderr",
    }
)

#: Linux refuses one argv string of MAX_ARG_STRLEN (131072) bytes or more: the
#: limit counts the terminating NUL, so a longer command could never be started.
MAX_COMMAND_BYTES = 131071
MAX_NAME_CHARS = 200
PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1
MAX_RETRIES_MAX = 1_000_000
MAX_TIMEOUT = 1e9
MAX_DURATION = 100 * 365.25 * 86400  # 100 years: anything longer is surely a mistake

_GREGORIAN_CYCLE = timedelta(days=146_097)  # 400 years: a whole number of weeks
_BOM = "\ufeff"
_JSON_SPACE = " \t\n\r"  # what JSON itself counts as whitespace
_MAX_LISTED_ERRORS = 20  # the CLI prints one line; keep it readable
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"([+-]?)([0-9]+(?:\.[0-9]+)?|\.[0-9]+)([smhd]?)")
_INT_RE = re.compile(r"[+-]?[0-9]+")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_T = TypeVar("_T")
_D = TypeVar("_D")
_DURATION_FORMS = "seconds (30, 1.5) or a number with a unit s, m, h or d (30s, 5m, 1.5h, 1d)"
_TIMESTAMP_EXAMPLES = "e.g. 2024-05-01T12:00:00Z or 2024-05-01T14:00:00+02:00 (no offset = local time)"


# --- strict JSON ------------------------------------------------------------------------


def decode_input(data: bytes) -> str:
    """``data`` as UTF-8 text; a leading BOM is kept for ``loads_strict`` to drop."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        bad = data[error.start : error.start + 1].hex()
        raise InvalidInput(f"input is not valid UTF-8 (byte 0x{bad} at offset {error.start})") from None


def loads_strict(text: str) -> Any:
    """Parse one JSON document, refusing what ``json.loads`` would let through.

    NaN/Infinity, numbers that overflow, duplicate keys and nesting too deep for
    the parser are refused; errors say where (line and column). A leading BOM is
    dropped, as editors on some systems write one.
    """
    return _parse(text.removeprefix(_BOM), where_line=True)


def _parse(text: str, *, where_line: bool) -> Any:
    if not text.strip(_JSON_SPACE):
        raise InvalidInput("invalid JSON: the input is empty")
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(_json_error(error, where_line=where_line)) from None
    except RecursionError:
        raise InvalidInput("invalid JSON: nested too deeply") from None


def _json_error(error: json.JSONDecodeError, *, where_line: bool) -> str:
    where = f"line {error.lineno}, column {error.colno}" if where_line else f"column {error.colno}"
    reason = error.msg[:1].lower() + error.msg[1:]
    return f"invalid JSON at {where}: {reason}"


def _refuse_constant(name: str) -> NoReturn:
    raise InvalidInput(f"invalid JSON: {name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise InvalidInput(f"invalid JSON: the number {_clip(text)} is too large")
    return value


def _bounded_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # Python refuses to convert integers of more than 4300 digits
        raise InvalidInput(f"invalid JSON: the integer {_clip(text)} has too many digits") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # The last value would silently win: refuse instead of guessing.
            raise InvalidInput(f"invalid JSON: duplicate key {_clip(key)!r} in an object")
        result[key] = value
    return result


_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys,
    parse_constant=_refuse_constant,
    parse_float=_finite_float,
    parse_int=_bounded_int,
)


# --- durations and timestamps -----------------------------------------------------------


def parse_duration(value: str | int | float) -> float:
    """Seconds from ``30``, ``30s``, ``5m``, ``1.5h``, ``1d`` or a number; 0 to 100 years."""
    return _duration(value, "duration")


def _duration(value: object, field: str, forms: str = _DURATION_FORMS) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput(f"{field} must be {forms}, got {_show(value)}")
    if isinstance(value, str):
        seconds = _duration_text(value, field, forms)
    elif isinstance(value, int) and abs(value) > MAX_DURATION:
        seconds = math.inf if value > 0 else -math.inf  # float() of a huge int would overflow
    else:
        seconds = float(value)
    if math.isnan(seconds):
        raise InvalidInput(f"{field} must be {forms}, got {_show(value)}")
    if seconds < 0:
        raise InvalidInput(f"{field} must not be negative, got {_show(value)}")
    if seconds > MAX_DURATION:
        raise InvalidInput(f"{field} must be at most 100 years, got {_show(value)}")
    return seconds


def _duration_text(text: str, field: str, forms: str) -> float:
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise InvalidInput(f"{field} must be {forms}, got {_show(text)}")
    sign, number, unit = match.groups()
    seconds = float(number) * _DURATION_UNITS[unit]  # may be inf: refused by the range check
    return -seconds if sign == "-" else seconds


def parse_timestamp(text: str) -> datetime:
    """An aware UTC datetime from ISO-8601 text; a naive time is this machine's local time."""
    return _timestamp(text, "timestamp")


def _timestamp(text: str, field: str) -> datetime:
    cleaned = text.strip()
    if cleaned[-1:] in ("Z", "z"):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError as error:
        reason = str(error)
        detail = "" if reason.startswith("Invalid isoformat") else f"{reason}; "
        raise InvalidInput(
            f"bad {field} {_show(text)}: {detail}use ISO-8601, {_TIMESTAMP_EXAMPLES}"
        ) from None
    return _to_utc(moment, f"{field} {_show(text)}")


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


def _check_id(value: object) -> str:
    text = _name(value, "id")
    if any(char.isspace() for char in text):
        raise InvalidInput(f"id must not contain whitespace, got {_show(text)}")
    return text


def _check_command(value: object) -> str:
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


def _check_queue(value: object) -> str:
    text = _name(value, "queue")
    if text.isspace():
        raise InvalidInput("queue must not be only whitespace")
    return text


def _check_priority(value: object) -> int:
    return _integer(value, "priority", PRIORITY_MIN, PRIORITY_MAX)


def _check_max_retries(value: object) -> int:
    return _integer(value, "max_retries", 0, MAX_RETRIES_MAX)


def _check_timeout(value: object) -> float | None:
    if value is None:
        return None  # explicitly no timeout, unlike an absent field (the store's default)
    rule = "timeout must be a number of seconds > 0 and <= 1000000000, or null for none"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{rule}, got {_show(value)}")
    if not 0 < value <= MAX_TIMEOUT:  # also refuses NaN
        raise InvalidInput(f"{rule}, got {_show(value)}")
    return float(value)


def _check_run_at(value: object) -> datetime:
    if isinstance(value, datetime):  # embedders may pass one directly
        return _to_utc(value, f"run_at {value.isoformat()}")
    if not isinstance(value, str):
        raise InvalidInput(f"run_at must be an ISO-8601 string, got {_show(value)} ({_TIMESTAMP_EXAMPLES})")
    return _timestamp(value, "run_at")


def _check_delay(value: object) -> float:
    if isinstance(value, timedelta):  # embedders may pass one directly
        value = value.total_seconds()
    return _duration(value, "delay")


def _string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string, got {_show(value)}")
    # Lone surrogates come from \ud800 escapes or undecodable argv bytes; they cannot be stored.
    surrogate = _SURROGATE_RE.search(value)
    if surrogate is not None:
        raise InvalidInput(f"{field} contains {surrogate[0]!r}, a lone surrogate that is not valid Unicode")
    return value


def _name(value: object, field: str) -> str:
    """An id or queue name: 1-200 chars and nothing invisible that would make it hard to type."""
    text = _string(value, field)
    if not 1 <= len(text) <= MAX_NAME_CHARS:
        raise InvalidInput(f"{field} must be 1 to {MAX_NAME_CHARS} characters, got {len(text)}")
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cf"):
            raise InvalidInput(f"{field} must not contain control characters, got {_show(text)}")
    return text


def _integer(value: object, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{field} must be an integer, got {_show(value)}")
    if not low <= value <= high:
        raise InvalidInput(f"{field} must be an integer from {low} to {high}, got {_show(value)}")
    return value


def _show(value: object) -> str:
    """A short, one-line, printable rendering of a bad value, JSON-style where possible."""
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return "a very large integer"
    if value is None or isinstance(value, bool | int | float | str):
        shown = json.dumps(value, ensure_ascii=False)
    else:
        shown = repr(value)
    # Escape lone surrogates so that printing the message cannot fail.
    return _clip(shown).encode("utf-8", "backslashreplace").decode("utf-8")


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- whole jobs -------------------------------------------------------------------------


def validate_job(data: Mapping[str, Any]) -> NewJob:
    """A ``NewJob`` from an already-parsed JSON object (or any mapping)."""
    if not isinstance(data, Mapping):
        raise InvalidInput(f"a job must be a JSON object, got {_kind(data)}")
    _check_keys(data)
    if "command" not in data:
        raise InvalidInput('command is required: the shell command to run, e.g. {"command": "echo hi"}')
    if "run_at" in data and "delay" in data:
        raise InvalidInput("give run_at or delay, not both")
    return NewJob(
        id=_check_id(data["id"]) if "id" in data else str(uuid.uuid4()),
        command=_check_command(data["command"]),
        queue=_check_queue(data["queue"]) if "queue" in data else "default",
        priority=_check_priority(data["priority"]) if "priority" in data else 0,
        timeout=_check_timeout(data["timeout"]) if "timeout" in data else UNSET,
        max_retries=_check_max_retries(data["max_retries"]) if "max_retries" in data else UNSET,
        run_at=_check_run_at(data["run_at"]) if "run_at" in data else None,
        delay=_check_delay(data["delay"]) if "delay" in data else None,
    )


def _check_keys(data: Mapping[Any, Any]) -> None:
    valid = ", ".join(INPUT_FIELDS)
    for key in data:
        if key in INPUT_FIELDS:
            continue
        if not isinstance(key, str):
            raise InvalidInput(f"field names must be strings, got {_show(key)}")
        if key in OUTPUT_FIELDS:
            raise InvalidInput(f"field {key!r} is output-only and cannot be set (input fields: {valid})")
        close = difflib.get_close_matches(key, INPUT_FIELDS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise InvalidInput(f"unknown field {_clip(key)!r} ({hint}valid fields: {valid})")


def _kind(value: object) -> str:
    kinds: list[tuple[type | tuple[type, ...], str]] = [
        (list, "an array"),
        (str, "a string"),
        (bool, "a boolean"),
        ((int, float), "a number"),
        (type(None), "null"),
    ]
    for types, name in kinds:
        if isinstance(value, types):
            return name
    return type(value).__name__


def parse_job_json(text: str) -> NewJob:
    """One job from the JSON object given to ``queuectl enqueue JSON``."""
    return validate_job(loads_strict(text))


def parse_jobs_document(text: str) -> list[NewJob]:
    """The jobs of an ``enqueue-file``: one object, an array of objects, or JSON Lines.

    All or nothing: every bad record is collected and reported in one ``InvalidInput``.
    """
    text = text.removeprefix(_BOM)
    if not text:
        raise InvalidInput("the file is empty")
    if not text.strip(_JSON_SPACE):
        return []  # an empty JSON Lines file: nothing to enqueue
    records = _json_lines(text) if _is_json_lines(text) else _json_document(loads_strict(text))
    return _validate_all(records)


#: A record to validate: its label (``item 3``, ``line 4``, or "" for a lone object)
#: and either its parsed value or the error that already stopped it.
_Record = tuple[str, Any, InvalidInput | None]


def _is_json_lines(text: str) -> bool:
    """Whether the first JSON value is followed by more, as in JSON Lines.

    A plain parse only decides the format; the strict parse comes after, so that its
    errors can name the line they are on.
    """
    start = len(text) - len(text.lstrip(_JSON_SPACE))
    try:
        _, end = json.JSONDecoder().raw_decode(text, start)
    except (ValueError, RecursionError):
        return False  # not valid JSON at all: the strict parse reports where
    return bool(text[end:].strip(_JSON_SPACE))


def _json_lines(text: str) -> list[_Record]:
    records: list[_Record] = []
    # Split on "\n" only: JSON strings may hold a raw U+2028, which splitlines() would cut.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip(_JSON_SPACE):
            continue
        try:
            records.append((f"line {number}", _parse(line, where_line=False), None))
        except InvalidInput as error:
            records.append((f"line {number}", None, error))
    return records


def _json_document(value: Any) -> list[_Record]:
    if isinstance(value, dict):
        return [("", value, None)]
    if isinstance(value, list):
        return [(f"item {index}", item, None) for index, item in enumerate(value)]
    raise InvalidInput(f"expected a JSON object, an array of objects, or JSON Lines; got {_kind(value)}")


def _validate_all(records: list[_Record]) -> list[NewJob]:
    jobs: list[NewJob] = []
    errors: list[str] = []
    first_seen: dict[str, str] = {}
    for label, value, error in records:
        try:
            if error is not None:
                raise error
            job = validate_job(value)
        except InvalidInput as problem:
            errors.append(f"{label}: {problem}" if label else str(problem))
            continue
        if job.id in first_seen:
            errors.append(f"{label}: id {_show(job.id)} is already used by {first_seen[job.id]}")
            continue
        first_seen[job.id] = label
        jobs.append(job)
    if errors:
        raise InvalidInput(_summary(errors))
    return jobs


def _summary(errors: list[str]) -> str:
    if len(errors) == 1:
        return errors[0]
    listed = "; ".join(errors[:_MAX_LISTED_ERRORS])
    more = len(errors) - _MAX_LISTED_ERRORS
    tail = f"; and {more} more" if more > 0 else ""
    return f"{len(errors)} bad records: {listed}{tail}"


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
) -> NewJob:
    """A ``NewJob`` from ``enqueue --command ... --priority ...`` option strings.

    The strings are converted here, then checked by the same rules as JSON input.
    """
    if run_at is not None and delay is not None:
        raise InvalidInput("give --run-at or --delay, not both")
    return NewJob(
        id=_check_id(id) if id is not None else str(uuid.uuid4()),
        command=_check_command(command),
        queue=_check_queue(queue) if queue is not None else "default",
        priority=_option(priority, "priority", _whole, _check_priority, 0),
        timeout=_option(timeout, "timeout", _timeout_text, _check_timeout, UNSET),
        max_retries=_option(max_retries, "max_retries", _whole, _check_max_retries, UNSET),
        run_at=_timestamp(run_at, "run_at") if run_at is not None else None,
        delay=_duration(delay, "delay") if delay is not None else None,
    )


def _option(
    text: str | None,
    field: str,
    convert: Callable[[str, str], object],
    check: Callable[[object], _T],
    default: _D,
) -> _T | _D:
    if text is None:
        return default
    return check(convert(text, field))


def _whole(text: str, field: str) -> int:
    stripped = text.strip()
    if _INT_RE.fullmatch(stripped):
        try:
            return int(stripped, 10)
        except ValueError:  # more digits than Python converts; certainly out of range
            pass
    raise InvalidInput(f"{field} must be a whole number (base 10), got {_show(text)}")


def _timeout_text(text: str, field: str) -> float | None:
    if text.strip().lower() in ("none", "null"):
        return None
    return _duration(text, field, f"{_DURATION_FORMS}, or none for no timeout")
