"""Untrusted input -> ``NewJob``: strict JSON, whole jobs and job files.

Everything here is pure: no I/O, no store. Every refusal is an ``InvalidInput``
(exit 2) whose message is one line naming the field and what would be right.
The checks of single fields, durations and timestamps live in ``job_fields``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, NoReturn

from queuectl import models
from queuectl.errors import InvalidInput
from queuectl.job_fields import (
    MAX_COMMAND_BYTES,
    checked,
    clip,
    job_from_options,
    new_id,
    parse_duration,
    parse_timestamp,
    show,
)
from queuectl.models import NewJob

__all__ = [
    "INPUT_FIELDS",
    "MAX_COMMAND_BYTES",
    "OUTPUT_FIELDS",
    "checked_fields",
    "decode_input",
    "job_from_options",
    "loads_strict",
    "parse_duration",
    "parse_job_json",
    "parse_jobs_document",
    "parse_jobs_fields",
    "parse_timestamp",
    "validate_job",
]

#: The fields a job given as input may have, in order (from ``models``).
INPUT_FIELDS = models.INPUT_FIELDS
#: The fields only queuectl sets: named as output-only when given.
OUTPUT_FIELDS = frozenset(models.OUTPUT_ONLY_FIELDS)

_BOM = "\ufeff"
_JSON_SPACE = " \t\n\r"  # what JSON itself counts as whitespace
_MAX_LISTED_ERRORS = 20  # the CLI prints one line; keep it readable


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
        raise InvalidInput(f"invalid JSON: the number {clip(text)} is too large")
    return value


def _bounded_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # Python refuses to convert integers of more than 4300 digits
        raise InvalidInput(f"invalid JSON: the integer {clip(text)} has too many digits") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # The last value would silently win: refuse instead of guessing.
            raise InvalidInput(f"invalid JSON: duplicate key {clip(key)!r} in an object")
        result[key] = value
    return result


_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys,
    parse_constant=_refuse_constant,
    parse_float=_finite_float,
    parse_int=_bounded_int,
)


# --- whole jobs -------------------------------------------------------------------------


def validate_job(data: Mapping[str, Any]) -> NewJob:
    """A ``NewJob`` from an already-parsed JSON object (or any mapping)."""
    return NewJob(**checked_fields(data))


def checked_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """The checked fields of a job given as a JSON object (or any mapping), a new id if none.

    Fields not given are left out: ``NewJob`` defaults, or the façade fills them in.
    """
    if not isinstance(data, Mapping):
        raise InvalidInput(f"a job must be a JSON object, got {_kind(data)}")
    _check_keys(data)
    if "command" not in data:
        raise InvalidInput('command is required: the shell command to run, e.g. {"command": "echo hi"}')
    if "run_at" in data and "delay" in data:
        raise InvalidInput("give run_at or delay, not both")
    values = checked(data)
    if "id" not in values:
        values["id"] = new_id()
    return values


def _check_keys(data: Mapping[Any, Any]) -> None:
    valid = ", ".join(INPUT_FIELDS)
    for key in data:
        if key in INPUT_FIELDS:
            continue
        if not isinstance(key, str):
            raise InvalidInput(f"field names must be strings, got {show(key)}")
        if key in OUTPUT_FIELDS:
            raise InvalidInput(f"field {key!r} is output-only and cannot be set (input fields: {valid})")
        import difflib  # only to word a refusal: not worth its import on the good path

        close = difflib.get_close_matches(key, INPUT_FIELDS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise InvalidInput(f"unknown field {clip(key)!r} ({hint}valid fields: {valid})")


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
    return [NewJob(**values) for values in parse_jobs_fields(text)]


def parse_jobs_fields(text: str) -> list[dict[str, Any]]:
    """``parse_jobs_document``, each job as its ``checked_fields`` rather than a ``NewJob``."""
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


def _validate_all(records: list[_Record]) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    errors: list[str] = []
    first_seen: dict[str, str] = {}
    first_key: dict[str, str] = {}  # two records with one unique key: which one would run?
    for label, value, error in records:
        try:
            if error is not None:
                raise error
            job = checked_fields(value)
        except InvalidInput as problem:
            errors.append(f"{label}: {problem}" if label else str(problem))
            continue
        job_id = job["id"]
        if job_id in first_seen:
            errors.append(f"{label}: id {show(job_id)} is already used by {first_seen[job_id]}")
            continue
        key = job.get("unique_key")
        if key is not None:
            if key in first_key:
                errors.append(f"{label}: unique_key {show(key)} is already used by {first_key[key]}")
                continue
            first_key[key] = label
        first_seen[job_id] = label
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
