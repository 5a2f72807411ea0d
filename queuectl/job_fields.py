"""One job field at a time: the checks shared by JSON, ``enqueue --command`` options and ``NewJob``s.

``CHECKS`` is the table of them, a check per input field. Split from ``validation`` (strict
JSON, whole jobs and files) so that ``queuectl enqueue --command ...``, a short-lived process,
imports only this and what it builds on: ``field_values`` (text, durations, timestamps, the
words of a refusal) and ``job_env`` (the ``cwd`` and ``env`` checks), all re-exported here; no
``json``, no ``difflib``. Every refusal is an ``InvalidInput`` (exit 2) whose message names the
field and what would be right.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from queuectl.errors import InvalidInput
from queuectl.field_values import (
    MAX_COMMAND_BYTES,
    MAX_DURATION,
    TIMESTAMP_EXAMPLES,
    check_duration,
    check_text,
    check_timestamp,
    clip,
    duration_forms,
    parse_duration,
    parse_timestamp,
    show,
    to_utc,
)
from queuectl.job_env import (
    ENV_NAME_RULE,
    MAX_CWD_BYTES,
    MAX_ENV_ENTRIES,
    MAX_ENV_ENTRY_BYTES,
    absolute_cwd,
    check_cwd,
    check_env,
    check_env_name,
    env_from_options,
)
from queuectl.models import INPUT_FIELDS, NewJob
from queuectl.records import fields

__all__ = (
    "CHECKS",
    "MAX_AFTER",
    "MAX_NAME_CHARS",
    "MAX_RETRIES_MAX",
    "MAX_TIMEOUT",
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "check_command",
    "check_after",
    "check_delay",
    "check_id",
    "check_max_retries",
    "check_no_retry_exit_codes",
    "check_priority",
    "check_queue",
    "check_run_at",
    "check_timeout",
    "check_unique_key",
    "checked",
    "job_from_options",
    "new_id",
    "new_job_fields",
    # values, durations and timestamps (``field_values``)
    "MAX_COMMAND_BYTES",
    "MAX_DURATION",
    "TIMESTAMP_EXAMPLES",
    "check_duration",
    "check_text",
    "check_timestamp",
    "clip",
    "parse_duration",
    "parse_timestamp",
    "show",
    # cwd and env (``job_env``)
    "ENV_NAME_RULE",
    "MAX_CWD_BYTES",
    "MAX_ENV_ENTRIES",
    "MAX_ENV_ENTRY_BYTES",
    "check_cwd",
    "check_env",
    "check_env_name",
    "env_from_options",
)

MAX_NAME_CHARS = 200
PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1
MAX_RETRIES_MAX = 1_000_000
MAX_TIMEOUT = 1e9
# A pattern, not compiled here: ``re`` compiles and caches it on its first use (``_whole``).
_INT_PATTERN = r"[+-]?[0-9]+"


# --- single fields ----------------------------------------------------------------------


def check_id(value: object) -> str:
    text = _name(value, "id")
    # ASCII that passed _name holds no control character: a space is the only whitespace left.
    if " " in text if text.isascii() else any(char.isspace() for char in text):
        raise InvalidInput(f"id must not contain whitespace, got {show(text)}")
    return text


def check_command(value: object) -> str:
    text = check_text(value, "command")
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
        return to_utc(value, f"run_at {value.isoformat()}")
    if not isinstance(value, str):
        raise InvalidInput(f"run_at must be an ISO-8601 string, got {show(value)} ({TIMESTAMP_EXAMPLES})")
    return check_timestamp(value, "run_at")


def check_delay(value: object) -> float:
    if isinstance(value, timedelta):  # embedders may pass one directly
        value = value.total_seconds()
    return check_duration(value, "delay")


def check_unique_key(value: object) -> str | None:
    """1-200 characters, nothing invisible; ``None``: no key."""
    return None if value is None else _name(value, "unique_key")


#: Most jobs one job may wait on (``after``).
MAX_AFTER = 100


def check_after(value: object) -> tuple[str, ...]:
    """The ids of jobs to wait on: a list of ids, each once (an empty list: none)."""
    if isinstance(value, tuple):  # embedders may pass one
        value = list(value)
    if not isinstance(value, list):
        raise InvalidInput(f"after must be an array of job ids, got {show(value)}")
    if len(value) > MAX_AFTER:
        raise InvalidInput(f"after names {len(value)} jobs, at most {MAX_AFTER} are allowed")
    ids = tuple(_name(item, "after") for item in value)
    if len(set(ids)) != len(ids):
        raise InvalidInput("after must name each job once")
    return ids


def check_no_retry_exit_codes(value: object) -> tuple[int, ...]:
    """Exit codes (1-255) that make a job ``dead`` at once, each once."""
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise InvalidInput(f"no_retry_exit_codes must be an array of integers 1 to 255, got {show(value)}")
    codes = tuple(_integer(item, "no_retry_exit_codes", 1, 255) for item in value)
    return tuple(sorted(set(codes)))


def _name(value: object, field: str) -> str:
    """An id or queue name: 1-200 chars and nothing invisible that would make it hard to type."""
    text = check_text(value, field)
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
    "unique_key": check_unique_key,
    "after": check_after,
    "no_retry_exit_codes": check_no_retry_exit_codes,
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
    unique_key: str | None = None,
    after: tuple[str, ...] = (),
    no_retry_exit_codes: tuple[str, ...] = (),
) -> NewJob:
    """A ``NewJob`` from ``enqueue --command ... --priority ...`` option strings.

    The strings are converted here (``_FROM_TEXT``), then checked by the same rules as JSON input.
    A relative ``cwd`` is taken from the current directory; ``env`` is the ``NAME=VALUE`` texts
    of ``--env`` (or one such text), each name at most once; ``after`` the ids of ``--after``,
    ``no_retry_exit_codes`` the texts of ``--no-retry-exit-code``.
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
        "unique_key": unique_key,
    }
    values: dict[str, Any] = {}
    for name, text in texts.items():  # in NewJob's order, as JSON input is checked
        if text is not None:
            values[name] = CHECKS[name](_FROM_TEXT[name](text, name) if name in _FROM_TEXT else text)
    if env:
        values["env"] = check_env(env_from_options((env,) if isinstance(env, str) else env))
    if after:
        values["after"] = check_after(list(after))
    if no_retry_exit_codes:
        codes = [_whole(text, "--no-retry-exit-code") for text in no_retry_exit_codes]
        values["no_retry_exit_codes"] = check_no_retry_exit_codes(codes)
    values.setdefault("id", new_id())
    return NewJob(**values)


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
    return check_duration(text, field, f"{duration_forms()}, or none for no timeout")


#: Options whose text is not the field's value as it is: how it becomes one (then checked).
_FROM_TEXT: dict[str, Callable[[str, str], object]] = {
    "priority": _whole,
    "timeout": _timeout_text,
    "max_retries": _whole,
    "cwd": absolute_cwd,
}
