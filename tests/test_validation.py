"""Untrusted input -> NewJob: strict JSON, every field rule, documents, options."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queuectl.errors import InvalidInput
from queuectl.models import UNSET, NewJob
from queuectl.validation import (
    MAX_COMMAND_BYTES,
    OUTPUT_FIELDS,
    decode_input,
    job_from_options,
    loads_strict,
    parse_duration,
    parse_job_json,
    parse_jobs_document,
    parse_timestamp,
    validate_job,
)

# Europe/Berlin's rules as a POSIX TZ string, so the tests need no tz database.
BERLIN = "CET-1CEST,M3.5.0,M10.5.0/3"


def refused(call: Callable[[], object], *fragments: str) -> str:
    """Run ``call``, expect a one-line InvalidInput (exit 2) holding every fragment."""
    with pytest.raises(InvalidInput) as info:
        call()
    error = info.value
    assert isinstance(error, InvalidInput)
    assert error.exit_code == 2
    message = str(error)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def job(**fields: Any) -> NewJob:
    return validate_job({"command": "echo hi", **fields})


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", BERLIN)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def utc_local(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC0")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# --- strict JSON ------------------------------------------------------------------------


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_constants_are_refused(constant: str) -> None:
    refused(lambda: loads_strict(f'{{"timeout": {constant}}}'), constant, "invalid JSON")


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1.5e999"])
def test_numbers_that_overflow_are_refused(number: str) -> None:
    refused(lambda: loads_strict(f"[{number}]"), number, "too large")


def test_integers_too_long_to_convert_are_refused() -> None:
    refused(lambda: loads_strict("9" * 5000), "too many digits")


def test_duplicate_keys_are_refused_at_any_depth() -> None:
    refused(lambda: loads_strict('{"command": "a", "command": "b"}'), "duplicate key 'command'")
    refused(lambda: loads_strict('[{"x": {"k": 1, "k": 1}}]'), "duplicate key 'k'")


def test_a_leading_bom_is_accepted() -> None:
    assert loads_strict('\ufeff{"command": "x"}') == {"command": "x"}


@pytest.mark.parametrize(
    "text", ["[" * 10_000 + "]" * 10_000, '{"a":' * 10_000 + "1" + "}" * 10_000, "[" * 10_000]
)
def test_deep_nesting_is_refused_without_crashing(text: str) -> None:
    refused(lambda: loads_strict(text), "nested too deeply")


def test_invalid_json_says_where() -> None:
    refused(lambda: loads_strict('{\n  "command": "x",\n}'), "invalid JSON", "line 3, column 1")


@pytest.mark.parametrize("text", ["", "   \n "])
def test_empty_json_is_refused(text: str) -> None:
    refused(lambda: loads_strict(text), "empty")


def test_ordinary_json_parses() -> None:
    assert loads_strict('{"a": [1, 2.5, null, true, "é"]}') == {"a": [1, 2.5, None, True, "é"]}


def test_decode_input_accepts_utf8_and_keeps_the_bom_for_loads() -> None:
    text = decode_input('\ufeff{"command": "café"}'.encode())
    assert loads_strict(text) == {"command": "café"}


def test_decode_input_refuses_invalid_utf8() -> None:
    refused(lambda: decode_input(b'{"command": "\xff"}'), "input is not valid UTF-8", "0xff", "offset 13")


# --- whole jobs: happy paths ------------------------------------------------------------


def test_defaults() -> None:
    new = validate_job({"command": "echo hi"})
    assert new.command == "echo hi"
    assert uuid.UUID(new.id).version == 4
    assert new.queue == "default"
    assert new.priority == 0
    assert new.timeout is UNSET
    assert new.max_retries is UNSET
    assert new.run_at is None
    assert new.delay is None


def test_generated_ids_differ() -> None:
    assert job().id != job().id


def test_every_field() -> None:
    new = job(
        id="build-42",
        queue="ci",
        priority=-7,
        timeout=2.5,
        max_retries=0,
        run_at="2030-01-02T03:04:05+02:00",
    )
    assert new == NewJob(
        id="build-42",
        command="echo hi",
        queue="ci",
        priority=-7,
        timeout=2.5,
        max_retries=0,
        run_at=datetime(2030, 1, 2, 1, 4, 5, tzinfo=UTC),
    )


def test_null_timeout_means_no_timeout_and_absent_means_the_setting() -> None:
    assert job(timeout=None).timeout is None
    assert job().timeout is UNSET


def test_integer_timeout_becomes_seconds_as_float() -> None:
    new = job(timeout=30)
    assert new.timeout == 30.0
    assert isinstance(new.timeout, float)


def test_delay_becomes_seconds() -> None:
    assert job(delay="5m").delay == 300.0
    assert job(delay=12).delay == 12.0


def test_embedders_may_pass_datetime_and_timedelta() -> None:
    moment = datetime(2030, 1, 1, 12, tzinfo=timezone(timedelta(hours=1)))
    assert job(run_at=moment).run_at == datetime(2030, 1, 1, 11, tzinfo=UTC)
    assert job(delay=timedelta(minutes=2)).delay == 120.0


def test_multiline_commands_are_allowed() -> None:
    assert job(command="set -e\n\tmake\n").command == "set -e\n\tmake\n"


# --- whole jobs: refusals ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"), [([], "an array"), ("echo", "a string"), (1, "a number"), (None, "null")]
)
def test_a_job_must_be_an_object(value: Any, kind: str) -> None:
    refused(lambda: validate_job(value), "must be a JSON object", kind)


def test_command_is_required() -> None:
    refused(lambda: validate_job({"queue": "x"}), "command is required")


def test_unknown_field_is_named_with_a_hint_and_the_valid_fields() -> None:
    refused(
        lambda: validate_job({"comand": "echo"}),
        "unknown field 'comand'",
        "did you mean 'command'?",
        "valid fields: id, command, queue",
    )


@pytest.mark.parametrize("field", sorted(OUTPUT_FIELDS))
def test_output_only_fields_are_refused(field: str) -> None:
    refused(lambda: job(**{field: None}), f"field {field!r} is output-only")


def test_run_at_and_delay_together_are_refused() -> None:
    refused(lambda: job(run_at="2030-01-01T00:00:00Z", delay="5m"), "run_at or delay, not both")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "1 to 200 characters"),
        ("x" * 201, "1 to 200 characters"),
        ("a b", "whitespace"),
        ("a\tb", "control characters"),
        ("a\u2028b", "whitespace"),
        ("a\x07b", "control characters"),
        ("a\u200bb", "control characters"),  # zero-width space: Cf
        (7, "id must be a string, got 7"),
        (None, "id must be a string, got null"),
        ("a\ud800", "lone surrogate"),
    ],
)
def test_id_rules(value: Any, fragment: str) -> None:
    refused(lambda: job(id=value), "id", fragment)


def test_id_of_200_chars_is_accepted() -> None:
    assert job(id="x" * 200).id == "x" * 200


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "empty or only whitespace"),
        (" \n\t", "empty or only whitespace"),
        ("echo a\x00b", "NUL"),
        (["echo"], "command must be a string, got an array"),
        (True, "command must be a string, got true"),
        ("echo \udcff", "lone surrogate"),
    ],
)
def test_command_rules(value: Any, fragment: str) -> None:
    refused(lambda: job(command=value), fragment)


def test_nul_in_command_from_json_is_refused() -> None:
    refused(lambda: parse_job_json('{"command": "echo \\u0000"}'), "NUL")


def test_ten_megabyte_command_is_refused() -> None:
    refused(lambda: job(command="x" * 10_000_000), "MAX_ARG_STRLEN", f"at most {MAX_COMMAND_BYTES} bytes")


def test_command_size_counts_utf8_bytes() -> None:
    assert len(job(command="x" * MAX_COMMAND_BYTES).command) == MAX_COMMAND_BYTES
    refused(lambda: job(command="x" * (MAX_COMMAND_BYTES + 1)), "MAX_ARG_STRLEN")
    two_byte = "é" * (MAX_COMMAND_BYTES // 2 + 1)  # fewer chars than the limit, more bytes
    refused(lambda: job(command=two_byte), f"command is {len(two_byte) * 2} bytes")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "1 to 200 characters"),
        ("q" * 201, "1 to 200 characters"),
        ("   ", "only whitespace"),
        ("a\nb", "control characters"),
        (1, "queue must be a string, got 1"),
    ],
)
def test_queue_rules(value: Any, fragment: str) -> None:
    refused(lambda: job(queue=value), "queue", fragment)


def test_queue_may_contain_inner_spaces() -> None:
    assert job(queue="night builds").queue == "night builds"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (True, "priority must be an integer, got true"),
        (1.5, "priority must be an integer, got 1.5"),
        (2.0, "priority must be an integer, got 2.0"),
        ("1", 'priority must be an integer, got "1"'),
        (None, "priority must be an integer, got null"),
        (2**31, "from -2147483648 to 2147483647, got 2147483648"),
        (-(2**31) - 1, "got -2147483649"),
        (10**400, "a very large integer"),
    ],
)
def test_priority_rules(value: Any, fragment: str) -> None:
    refused(lambda: job(priority=value), fragment)


@pytest.mark.parametrize("value", [-(2**31), 0, 2**31 - 1])
def test_priority_bounds_are_accepted(value: int) -> None:
    assert job(priority=value).priority == value


# "5m" moved to test_timeout_given_as_a_duration (SPEC, Durations: a job's timeout takes them too).
@pytest.mark.parametrize(
    "value", [0, -1, 0.0, 1e9 + 1, 10**400, True, [], float("nan"), "0s", "-5m", "soon", "5M", "1e3", "40y"]
)
def test_timeout_rules(value: Any) -> None:
    refused(lambda: job(timeout=value), "timeout must be a number of seconds > 0", "or null")


@pytest.mark.parametrize("value", [0.001, 1, 1e9])
def test_timeout_bounds_are_accepted(value: float) -> None:
    assert job(timeout=value).timeout == value


@pytest.mark.parametrize(
    ("value", "seconds"), [("5m", 300.0), ("1h30m", 5400.0), ("90", 90.0), (" 1.5 ", 1.5), ("1d", 86400.0)]
)
def test_timeout_given_as_a_duration(value: str, seconds: float) -> None:
    given = job(timeout=value).timeout
    assert given == seconds and isinstance(given, float)


def test_timeout_as_a_duration_names_the_forms() -> None:
    refused(lambda: job(timeout="soon"), 'got "soon"', "5m", "1h30m", "or null")


def test_a_duration_timeout_from_a_new_job_is_checked_too() -> None:
    from queuectl.enqueue import check

    assert check(NewJob(id="a", command="true", timeout="2m"))["timeout"] == 120.0  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (-1, "from 0 to 1000000, got -1"),
        (1_000_001, "got 1000001"),
        (False, "max_retries must be an integer, got false"),
        (3.0, "max_retries must be an integer, got 3.0"),
        ("3", 'got "3"'),
    ],
)
def test_max_retries_rules(value: Any, fragment: str) -> None:
    refused(lambda: job(max_retries=value), fragment)


@pytest.mark.parametrize("value", [0, 1_000_000])
def test_max_retries_bounds_are_accepted(value: int) -> None:
    assert job(max_retries=value).max_retries == value


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("2024-02-30T00:00:00Z", "day is out of range"),
        ("tomorrow", 'bad run_at "tomorrow"'),
        (1700000000, "run_at must be an ISO-8601 string"),
        (None, "run_at must be an ISO-8601 string, got null"),
    ],
)
def test_run_at_rules(value: Any, fragment: str) -> None:
    refused(lambda: job(run_at=value), fragment)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (True, "delay must be seconds"),
        ("-5s", "delay must not be negative"),
        (-1, "delay must not be negative"),
        ("5 minutes", "delay must be seconds"),
        (None, "got null"),
    ],
)
def test_delay_rules(value: Any, fragment: str) -> None:
    refused(lambda: job(delay=value), fragment)


# --- durations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30", 30.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("1h30m", 5400.0),
        ("1d2h3m4s", 93784.0),
        ("2m30.5s", 150.5),
        ("  10m \n", 600.0),
        ("0", 0.0),
        (45, 45.0),
        (0.25, 0.25),
    ],
)
def test_durations(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value",
    ["", "m", "5x", "5 m", "5M", "1e3", "1.5.2s", "5mm", "٣s", "+-5", "30m1h", "1m1m", "1h 30m", "1H30M"],
)
def test_bad_durations_name_the_accepted_forms(value: str) -> None:
    refused(lambda: parse_duration(value), "duration must be seconds (30, 1.5)", "30s, 5m")


@pytest.mark.parametrize("value", ["-1", -0.5, "-2h"])
def test_negative_durations_are_refused(value: str | float) -> None:
    refused(lambda: parse_duration(value), "must not be negative")


@pytest.mark.parametrize("value", ["36526d", "999999999999h", "9" * 400, 10**400, 1e300, float("inf")])
def test_durations_over_100_years_are_refused(value: str | float) -> None:
    refused(lambda: parse_duration(value), "at most 100 years")


@pytest.mark.parametrize("value", [True, float("nan"), None])
def test_non_numbers_are_not_durations(value: Any) -> None:
    refused(lambda: parse_duration(value), "duration must be")


# --- timestamps -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2030-05-01T12:00:00Z", datetime(2030, 5, 1, 12, tzinfo=UTC)),
        ("2030-05-01T12:00:00z", datetime(2030, 5, 1, 12, tzinfo=UTC)),
        ("2030-05-01T14:00:00+02:00", datetime(2030, 5, 1, 12, tzinfo=UTC)),
        ("2030-05-01 07:30:00.250-04:30", datetime(2030, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC)),
        (" 2030-05-01T12:00Z ", datetime(2030, 5, 1, 12, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_timestamps_with_an_offset(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamps_that_overflow_in_utc_are_refused(text: str) -> None:
    refused(lambda: parse_timestamp(text), "out of range once converted to UTC")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("2024-02-30T00:00:00", "day is out of range for month"),
        ("2023-02-29", "day is out of range for month"),
        ("2024-13-01T00:00:00Z", "month must be in 1..12"),
        ("", "ISO-8601"),
        ("now", "ISO-8601"),
        ("2024-05-01T12:00:00+01:00Z", "ISO-8601"),
        ("1714564800", "ISO-8601"),
    ],
)
def test_bad_timestamps(text: str, fragment: str) -> None:
    refused(lambda: parse_timestamp(text), "bad timestamp", fragment)


@pytest.mark.usefixtures("utc_local")
def test_naive_time_is_local_time_in_utc() -> None:
    assert parse_timestamp("2030-05-01T12:00:00") == datetime(2030, 5, 1, 12, tzinfo=UTC)
    assert parse_timestamp("2030-05-01") == datetime(2030, 5, 1, tzinfo=UTC)


@pytest.mark.usefixtures("berlin")
def test_naive_time_uses_the_local_zone_and_its_dst() -> None:
    assert parse_timestamp("2024-01-15T12:00:00") == datetime(2024, 1, 15, 11, tzinfo=UTC)
    assert parse_timestamp("2024-07-15T12:00:00") == datetime(2024, 7, 15, 10, tzinfo=UTC)
    # An explicit offset is not affected by the local zone.
    assert parse_timestamp("2024-07-15T12:00:00Z") == datetime(2024, 7, 15, 12, tzinfo=UTC)


@pytest.mark.usefixtures("berlin")
def test_naive_time_in_a_dst_overlap_is_the_earlier_instant() -> None:
    # 02:30 happens twice on 2024-10-27 in Berlin: first in CEST (+02:00), then in CET.
    assert parse_timestamp("2024-10-27T02:30:00") == datetime(2024, 10, 27, 0, 30, tzinfo=UTC)


@pytest.mark.usefixtures("berlin")
def test_naive_time_in_a_dst_gap_is_refused() -> None:
    # 02:30 never happens on 2024-03-31 in Berlin: clocks jump from 02:00 to 03:00.
    refused(lambda: parse_timestamp("2024-03-31T02:30:00"), "does not exist in local time", "offset")
    refused(lambda: job(run_at="2024-03-31T02:30:00"), "run_at", "does not exist in local time")
    assert parse_timestamp("2024-03-31T02:30:00+01:00") == datetime(2024, 3, 31, 1, 30, tzinfo=UTC)


# --- one JSON job -----------------------------------------------------------------------


def test_parse_job_json() -> None:
    new = parse_job_json('{"command": "sleep 1", "priority": 5, "max_retries": 2}')
    assert (new.command, new.priority, new.max_retries, new.timeout) == ("sleep 1", 5, 2, UNSET)


def test_parse_job_json_with_bom() -> None:
    assert parse_job_json('\ufeff{"command": "x"}').command == "x"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[{"command": "x"}]', "must be a JSON object, got an array"),
        ('"echo"', "got a string"),
        ('{"command": "x"', "invalid JSON at line 1"),
        ('{"command": "x", "priority": true}', "priority must be an integer, got true"),
        ('{"command": "x", "timeout": NaN}', "NaN"),
        ('{"command": "x", "timeout": 1e400}', "too large"),
        ('{"command": "x", "command": "y"}', "duplicate key"),
    ],
)
def test_parse_job_json_refusals(text: str, fragment: str) -> None:
    refused(lambda: parse_job_json(text), fragment)


# --- job documents ----------------------------------------------------------------------


def commands(jobs: list[NewJob]) -> list[str]:
    return [new.command for new in jobs]


def test_document_of_one_object() -> None:
    assert commands(parse_jobs_document('{\n  "command": "a",\n  "priority": 1\n}\n')) == ["a"]


def test_document_of_an_array() -> None:
    text = json.dumps([{"command": "a"}, {"command": "b", "queue": "q"}], indent=2)
    jobs = parse_jobs_document(text)
    assert commands(jobs) == ["a", "b"]
    assert jobs[1].queue == "q"


def test_document_of_json_lines() -> None:
    text = '\ufeff{"command": "a"}\r\n\n   \n{"command": "b"}\n{"command": "c\u2028d"}'
    assert commands(parse_jobs_document(text)) == ["a", "b", "c\u2028d"]


def test_empty_file_is_refused() -> None:
    refused(lambda: parse_jobs_document(""), "the file is empty")
    refused(lambda: parse_jobs_document("\ufeff"), "the file is empty")


@pytest.mark.parametrize("text", ["\n", "  \n\n\t\r\n", "[]", " [ ] \n"])
def test_empty_documents_enqueue_nothing(text: str) -> None:
    assert parse_jobs_document(text) == []


@pytest.mark.parametrize(("text", "kind"), [("5", "a number"), ('"x"', "a string"), ("null", "null")])
def test_document_of_a_scalar_is_refused(text: str, kind: str) -> None:
    refused(
        lambda: parse_jobs_document(text), "expected a JSON object, an array of objects, or JSON Lines", kind
    )


def test_every_bad_array_item_is_reported() -> None:
    text = json.dumps([{"command": "ok"}, {"command": "x", "priority": "x"}, 3, {"comand": "y"}])
    message = refused(
        lambda: parse_jobs_document(text),
        'item 1: priority must be an integer, got "x"',
        "item 2: a job must be a JSON object, got a number",
        "item 3: unknown field 'comand'",
    )
    assert message.startswith("3 bad records: item 1: ")


def test_every_bad_json_line_is_reported() -> None:
    text = '{"command": "a"}\n{"command": "b", "priority": "x"}\n\n[1]\n{"comand": "c"}\n{"command": \n'
    message = refused(
        lambda: parse_jobs_document(text),
        'line 2: priority must be an integer, got "x"',
        "line 4: a job must be a JSON object, got an array",
        "line 5: unknown field 'comand'",
        "line 6: invalid JSON at column 13",
    )
    assert message.startswith("4 bad records: line 2: ")


def test_one_bad_record_is_reported_without_a_count() -> None:
    message = refused(lambda: parse_jobs_document('{"command": "a"}\n{"command": ""}\n'), "line 2: command")
    assert not message.startswith("1 bad")


def test_strictness_applies_to_each_json_line() -> None:
    text = '{"command": "a"}\n{"command": "b", "timeout": NaN}\n{"command": "c", "command": "d"}\n'
    refused(
        lambda: parse_jobs_document(text), "line 2: invalid JSON: NaN", "line 3: invalid JSON: duplicate key"
    )


def test_deep_nesting_in_a_document_is_refused() -> None:
    refused(lambda: parse_jobs_document("[" * 10_000), "nested too deeply")
    text = '{"command": "a"}\n' + "[" * 10_000 + "]" * 10_000 + "\n"
    refused(lambda: parse_jobs_document(text), "line 2: invalid JSON: nested too deeply")


def test_broken_single_document_says_where() -> None:
    refused(lambda: parse_jobs_document('[\n  {"command": "a"},\n  {"command": }\n]'), "line 3, column 15")


def test_duplicate_ids_name_both_positions() -> None:
    array = json.dumps(
        [{"id": "a", "command": "x"}, {"id": "b", "command": "y"}, {"id": "a", "command": "z"}]
    )
    refused(lambda: parse_jobs_document(array), 'item 2: id "a" is already used by item 0')
    lines = '{"id": "a", "command": "x"}\n{"id": "a", "command": "y"}\n'
    refused(lambda: parse_jobs_document(lines), 'line 2: id "a" is already used by line 1')


def test_a_long_list_of_errors_is_capped() -> None:
    text = "\n".join('{"command": ""}' for _ in range(50))
    message = refused(lambda: parse_jobs_document(text), "50 bad records: line 1:", "and 30 more")
    assert "line 21:" not in message


# --- cwd and env --------------------------------------------------------------------------


def test_cwd_and_env_are_kept_as_given() -> None:
    new = job(cwd="/srv/app/../app", env={"STAGE": "prod", "_x1": "", "EQ": "a=b", "NL": "two\nlines"})
    assert new.cwd == "/srv/app/../app"  # a path is kept as written: the worker's host resolves it
    assert new.env == {"STAGE": "prod", "_x1": "", "EQ": "a=b", "NL": "two\nlines"}
    assert list(new.env) == ["STAGE", "_x1", "EQ", "NL"]


def test_cwd_and_env_default_to_none() -> None:
    new = job()
    assert (new.cwd, new.env) == (None, None)
    assert (job(cwd=None, env=None).cwd, job(env=None).env) == (None, None)
    assert job(env={}).env == {}


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("relative/dir", 'cwd must be an absolute path (starting with /), got "relative/dir"'),
        ("", "cwd must be an absolute path"),
        ("~/src", "cwd must be an absolute path"),
        ("/tmp/a\0b", "cwd must not contain a NUL character"),
        ("/\ud800", "lone surrogate"),
        (3, "cwd must be a string, got 3"),
        (["/tmp"], "cwd must be a string, got an array"),
        ("/" + "x" * 4095, "cwd is 4096 bytes, at most 4095"),
    ],
)
def test_cwd_rules(value: Any, fragment: str) -> None:
    refused(lambda: job(cwd=value), fragment)


def test_a_long_cwd_within_path_max_is_accepted() -> None:
    assert job(cwd="/" + "x" * 4094).cwd == "/" + "x" * 4094


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (["A=1"], "env must be an object of strings"),
        ("A=1", 'env must be an object of strings, e.g. {"NAME": "value"}, got "A=1"'),
        ({"1A": "x"}, 'env name "1A" is not valid: use letters, digits and _, not starting with a digit'),
        ({"": "x"}, 'env name "" is not valid'),
        ({"A-B": "x"}, 'env name "A-B"'),
        ({"A B": "x"}, 'env name "A B"'),
        ({"A=B": "x"}, 'env name "A=B"'),
        ({"ÄRGER": "x"}, "env name"),
        ({"A": 1}, "env A must be a string, got 1"),
        ({"A": None}, "env A must be a string, got null"),
        ({"A": True}, "env A must be a string, got true"),
        ({"A": "a\0b"}, "env A must not contain a NUL character"),
        ({"A": "\udc80"}, "lone surrogate"),
        ({"A": "x" * 131070}, "env A is 131072 bytes as NAME=VALUE, at most 131071"),
        ({f"V{n}": "x" for n in range(101)}, "env has 101 entries, at most 100 are allowed"),
    ],
)
def test_env_rules(value: Any, fragment: str) -> None:
    refused(lambda: job(env=value), fragment)


def test_env_of_100_entries_is_accepted() -> None:
    variables = {f"V{n}": str(n) for n in range(100)}
    assert job(env=variables).env == variables


def test_env_names_that_are_not_strings_are_refused_from_embedders() -> None:
    refused(lambda: validate_job({"command": "x", "env": {1: "x"}}), "env names must be strings, got 1")


def test_a_new_job_with_cwd_and_env_is_checked_as_json_is() -> None:
    from queuectl.enqueue import check

    refused(lambda: check(NewJob(id="n", command="x", cwd="rel")), "cwd must be an absolute path")
    refused(lambda: check(NewJob(id="n", command="x", env={"1": "x"})), 'env name "1"')
    given = {"A": "1"}
    fields = check(NewJob(id="n", command="x", cwd="/tmp", env=given))
    assert fields["cwd"] == "/tmp" and fields["env"] == {"A": "1"}
    assert fields["env"] is not given  # a copy: changing the caller's dict later changes nothing


def test_cwd_and_env_in_documents() -> None:
    text = '{"command": "a", "cwd": "/srv", "env": {"X": "1"}}\n{"command": "b", "env": {"2X": "1"}}\n'
    refused(lambda: parse_jobs_document(text), 'line 2: env name "2X" is not valid')
    (first,) = parse_jobs_document(text.splitlines()[0])
    assert (first.cwd, first.env) == ("/srv", {"X": "1"})


# --- command-line options ---------------------------------------------------------------


def test_options_defaults() -> None:
    new = job_from_options(command="make")
    assert new.command == "make"
    assert uuid.UUID(new.id).version == 4
    assert (new.queue, new.priority, new.timeout, new.max_retries) == ("default", 0, UNSET, UNSET)
    assert (new.run_at, new.delay) == (None, None)


def test_options_all() -> None:
    new = job_from_options(
        command="make",
        id="m1",
        queue="build",
        priority=" -3 ",
        timeout="5m",
        max_retries="4",
        run_at="2030-01-01T00:00:00Z",
    )
    assert new == NewJob(
        id="m1",
        command="make",
        queue="build",
        priority=-3,
        timeout=300.0,
        max_retries=4,
        run_at=datetime(2030, 1, 1, tzinfo=UTC),
    )
    assert job_from_options(command="x", delay="1.5h").delay == 5400.0


@pytest.mark.parametrize(("option", "field"), [("timeout", "timeout"), ("delay", "delay")])
def test_options_take_durations_with_several_units(option: str, field: str) -> None:
    given: dict[str, Any] = {option: "1h30m"}
    made = job_from_options(command="x", **given)
    assert getattr(made, field) == 5400.0


def test_json_delay_takes_durations_with_several_units() -> None:
    assert job(delay="1h30m").delay == 5400.0
    refused(lambda: job(delay="30m1h"), "delay must be seconds (30, 1.5)", "1h30m")


@pytest.mark.parametrize("text", ["none", "None", "null"])
def test_options_timeout_none(text: str) -> None:
    assert job_from_options(command="x", timeout=text).timeout is None


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"priority": "abc"}, 'priority must be a whole number (base 10), got "abc"'),
        ({"priority": "1.5"}, 'got "1.5"'),
        ({"priority": "0x10"}, "whole number"),
        ({"priority": "3000000000"}, "priority must be an integer from -2147483648"),
        ({"priority": "9" * 5000}, "whole number"),
        ({"max_retries": "-1"}, "max_retries must be an integer from 0 to 1000000"),
        ({"max_retries": "two"}, "max_retries must be a whole number"),
        ({"timeout": "0"}, "timeout must be a number of seconds > 0"),
        ({"timeout": "abc"}, "or none for no timeout"),
        ({"timeout": "100000d"}, "at most 100 years"),
        ({"delay": "soon"}, "delay must be seconds"),
        ({"run_at": "soon"}, 'bad run_at "soon"'),
        ({"run_at": "2030-01-01T00:00:00Z", "delay": "5m"}, "--run-at or --delay, not both"),
        ({"id": "has space"}, "id must not contain whitespace"),
        ({"queue": ""}, "queue must be 1 to 200 characters"),
    ],
)
def test_options_refusals(options: dict[str, Any], fragment: str) -> None:
    refused(lambda: job_from_options(command="x", **options), fragment)


def test_options_cwd_is_made_absolute_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert job_from_options(command="x", cwd="sub/dir").cwd == str(tmp_path / "sub" / "dir")
    assert job_from_options(command="x", cwd=".").cwd == str(tmp_path)
    assert job_from_options(command="x", cwd="/abs/../path").cwd == "/abs/../path"  # given absolute: as is
    refused(lambda: job_from_options(command="x", cwd=""), "cwd must be an absolute path")


def test_options_env() -> None:
    new = job_from_options(command="x", env=("A=1", "B=x=y", "EMPTY="))
    assert new.env == {"A": "1", "B": "x=y", "EMPTY": ""}
    assert job_from_options(command="x").env is None


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        (("A",), '--env takes NAME=VALUE, got "A"'),
        (("=x",), 'env name "" is not valid'),
        (("1A=x",), 'env name "1A" is not valid'),
        (("A=1", "A=2"), "--env A is given twice"),
        (("A=a\0b",), "env A must not contain a NUL character"),
        (tuple(f"V{n}=x" for n in range(101)), "env has 101 entries"),
    ],
)
def test_options_env_refusals(env: tuple[str, ...], fragment: str) -> None:
    refused(lambda: job_from_options(command="x", env=env), fragment)


def test_options_command_rules_match_json() -> None:
    from_options = refused(lambda: job_from_options(command=" "))
    from_json = refused(lambda: validate_job({"command": " "}))
    assert from_options == from_json


# --- properties -------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


def mostly(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a plausible value for a field, sometimes any JSON value at all."""
    # one_of() drops repeated strategies, so weight the choice explicitly.
    return st.integers(0, 4).flatmap(lambda n: json_values if n == 0 else plausible)


names = st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cf", "Zs"]), min_size=1, max_size=201)
offsets = st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)).map(timezone)
timestamps = st.datetimes(timezones=st.none() | st.just(UTC) | offsets).map(datetime.isoformat)
durations = st.builds(
    lambda n, unit: f"{n}{unit}", st.integers(-5, 10**6), st.sampled_from(["", "s", "m", "h", "d"])
)
job_objects = st.fixed_dictionaries(
    {"command": mostly(st.text(min_size=1, max_size=20))},
    optional={
        "id": mostly(names),
        "queue": mostly(names),
        "priority": mostly(st.integers(-(2**32), 2**32)),
        "timeout": mostly(st.none() | st.floats(-1, 2e9) | st.integers(-1, 2 * 10**9)),
        "max_retries": mostly(st.integers(-1, 2_000_000)),
        "cwd": mostly(st.none() | st.text(max_size=12).map(lambda text: "/" + text) | st.text(max_size=12)),
        "env": mostly(
            st.none()
            | st.dictionaries(
                st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True) | st.text(max_size=6),
                st.text(max_size=8) | json_scalars,
                max_size=4,
            )
        ),
        # run_at and delay exclude each other: offer one of them most of the time.
        "schedule": st.one_of(
            st.fixed_dictionaries({"run_at": mostly(timestamps)}),
            st.fixed_dictionaries({"delay": mostly(durations | st.floats(-1, 1e10))}),
            st.fixed_dictionaries({"run_at": timestamps, "delay": durations}),
        ),
    },
).map(lambda fields: {**{k: v for k, v in fields.items() if k != "schedule"}, **fields.get("schedule", {})})
jobs_with_extras = st.builds(
    lambda fields, extra: {**fields, **extra},
    job_objects,
    st.just({}) | st.just({}) | st.dictionaries(st.text(max_size=8), json_values, max_size=1),
)


def validated_or_refused(data: Any) -> NewJob | None:
    try:
        return validate_job(data)
    except InvalidInput as error:
        assert error.exit_code == 2
        return None


def assert_matches(data: dict[str, Any], new: NewJob) -> None:
    assert new.command == data["command"]
    if "id" in data:
        assert new.id == data["id"]
    else:
        assert uuid.UUID(new.id).version == 4
    assert new.queue == data.get("queue", "default")
    assert new.priority == data.get("priority", 0)
    assert new.timeout == data.get("timeout", UNSET)
    assert new.max_retries == data.get("max_retries", UNSET)
    if "run_at" in data:
        assert new.run_at == parse_timestamp(data["run_at"])
        assert new.run_at.utcoffset() == timedelta(0)
    else:
        assert new.run_at is None
    assert new.delay == (parse_duration(data["delay"]) if "delay" in data else None)
    assert new.cwd == data.get("cwd")
    assert new.env == data.get("env")


@settings(database=None, deadline=None, max_examples=150)
@given(json_values)
def test_any_json_value_is_a_job_or_invalid_input(data: Any) -> None:
    new = validated_or_refused(data)
    if new is not None:
        assert_matches(data, new)


@settings(database=None, deadline=None, max_examples=300)
@given(jobs_with_extras)
def test_job_shaped_objects_are_jobs_with_the_same_fields_or_invalid_input(data: dict[str, Any]) -> None:
    new = validated_or_refused(data)
    if new is not None:
        assert_matches(data, new)
