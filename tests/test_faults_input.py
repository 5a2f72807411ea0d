"""Hostile input through the command line: every input is enqueued exactly as asked, or refused
with exit 2 and one stderr line, and a refusal writes nothing.

``test_validation.py`` proves the rules on the parsed values; here the same kinds of input go
through ``main()`` (argument parsing, the error boundary, the store and back out through
``show --json``), plus the input classes that only a whole program sees: bytes that are not
UTF-8, a 10 MB document, a time zone given by the environment, ten processes racing for one id.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import DEADLINE, Result, invoke, queuectl_env, wait_until
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from queuectl.errors import InvalidInput
from queuectl.models import isoformat
from queuectl.validation import (
    MAX_COMMAND_BYTES,
    job_from_options,
    parse_duration,
    parse_job_json,
    parse_jobs_document,
    parse_timestamp,
)

# Europe/Berlin's and New York's rules as POSIX TZ strings: no tz database needed.
BERLIN = "CET-1CEST,M3.5.0,M10.5.0/3"
NEW_YORK = "EST5EDT,M3.2.0,M11.1.0"
DEFAULT_MAX_RETRIES = 3  # the config default of a fresh store


def precision(moment: datetime) -> timedelta:
    """How close SQLite, which keeps times as float epoch seconds, brings ``moment`` back.

    A float's spacing: under a microsecond (so exact) from 1697 to 2242; 8 µs in year 1
    and 31 µs in year 9999.
    """
    return timedelta(seconds=math.ulp(moment.timestamp()))


# --- running the CLI in-process -------------------------------------------------------------


def error_line(result: Result, code: int, *words: str) -> str:
    """Exit ``code``, nothing on stdout, exactly one ``queuectl: error:`` line holding ``words``."""
    assert result.code == code, (result.code, result.err)
    assert result.out == b"", result.out
    lines = result.err.decode("utf-8", "backslashreplace").splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("queuectl: error: "), lines[0]
    assert "Traceback" not in lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def succeeded(result: Result) -> Result:
    assert result.code == 0, (result.code, result.err)
    assert b"Traceback" not in result.err
    return result


def row_count(db: Path) -> int:
    if not db.exists():
        return 0
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (count,) = connection.execute("SELECT count(*) FROM jobs").fetchone()
    finally:
        connection.close()
    return int(count)


def shown(db: Path, job_id: str) -> dict[str, Any]:
    # "--": an id may begin with "-".
    data: dict[str, Any] = succeeded(invoke("--db", str(db), "show", "--json", "--", job_id)).json()
    return data


def stored_ids(db: Path) -> set[str]:
    if not db.exists():
        return set()
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {row[0] for row in connection.execute("SELECT id FROM jobs")}
    finally:
        connection.close()


# --- what "exactly as asked" means -----------------------------------------------------------


@dataclass(frozen=True)
class Asked:
    """The fields a user asked for, already converted from their input form."""

    command: str
    id: str | None = None
    queue: str = "default"
    priority: int = 0
    timeout: float | None = None  # the config default of a fresh store: none
    max_retries: int = DEFAULT_MAX_RETRIES
    run_at: datetime | None = None
    delay: float | None = None


def assert_stored(data: Mapping[str, Any], asked: Asked, before: float, after: float) -> None:
    """``data`` (a job object printed by the CLI) holds what was asked, as a new pending job."""
    assert data["command"] == asked.command
    if asked.id is None:
        assert uuid.UUID(data["id"]).version == 4
    else:
        assert data["id"] == asked.id
    assert data["queue"] == asked.queue
    assert data["priority"] == asked.priority and type(data["priority"]) is int
    assert data["timeout"] == asked.timeout
    assert data["max_retries"] == asked.max_retries
    assert (data["state"], data["attempts"]) == ("pending", 0)
    run_at = datetime.fromisoformat(data["run_at"])
    if asked.run_at is not None:
        expected = asked.run_at
        assert abs(run_at - expected) <= precision(expected), (data["run_at"], isoformat(expected))
    else:
        delay = asked.delay or 0.0
        # A float of epoch seconds (SQLite) is within a microsecond either way.
        low = datetime.fromtimestamp(before, UTC) + timedelta(seconds=delay) - timedelta(milliseconds=1)
        high = datetime.fromtimestamp(after, UTC) + timedelta(seconds=delay) + timedelta(milliseconds=1)
        assert low <= run_at <= high, (data["run_at"], delay)


def asked_from_json(data: Mapping[str, Any]) -> Asked:
    """What a JSON job asks for, read straight from the object (the validator already agreed)."""
    return Asked(
        command=data["command"],
        id=data.get("id"),
        queue=data.get("queue", "default"),
        priority=data.get("priority", 0),
        timeout=data.get("timeout"),
        max_retries=data.get("max_retries", DEFAULT_MAX_RETRIES),
        run_at=parse_timestamp(data["run_at"]) if "run_at" in data else None,
        delay=parse_duration(data["delay"]) if "delay" in data else None,
    )


def asked_from_options(command: str, options: Mapping[str, str]) -> Asked:
    """What ``--command ... --priority ...`` option strings ask for."""
    timeout = options.get("timeout")
    no_timeout = timeout is None or timeout.strip().lower() in ("none", "null")
    return Asked(
        command=command,
        id=options.get("id"),
        queue=options.get("queue", "default"),
        priority=int(options["priority"]) if "priority" in options else 0,
        timeout=None if no_timeout else parse_duration(timeout or ""),
        max_retries=int(options["max_retries"]) if "max_retries" in options else DEFAULT_MAX_RETRIES,
        run_at=parse_timestamp(options["run_at"]) if "run_at" in options else None,
        delay=parse_duration(options["delay"]) if "delay" in options else None,
    )


# --- strategies ---------------------------------------------------------------------------------

#: Input that has broken parsers before: edges of every rule, and characters that are not text.
NASTY = [
    "",
    " ",
    "\t",
    "\n",
    "\x00",
    "\x1b[31m",
    "\udcff",  # what Python makes of an undecodable argv byte
    "\ud800",
    "\u2028",
    "\ufeff",
    "\u200b",
    "é",
    "😀",
    "٣",  # a digit, but not an ASCII one
    "-1",
    "+5",
    " 7 ",
    "1_000",
    "0x10",
    "1e400",
    "-1e400",
    "nan",
    "NaN",
    "inf",
    "-Infinity",
    "none",
    " NULL ",
    "0",
    "0.0",
    "1e9",
    "1000000001",
    "9" * 5000,
    "2147483647",
    "2147483648",
    "-2147483648",
    "-2147483649",
    "1000000",
    "1000001",
    "5m",
    "1.5h",
    "-5s",
    ".5",
    "5.",
    "36524d",
    "36526d",
    "2024-03-31T02:30:00",
    "2024-10-27T02:30:00",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59",
    "0001-01-01T00:00:00",
    "0001-01-01T00:00:00Z",
    "2024-02-30",
    "2024-05-01T12:00:00+01:00Z",
    "now",
    "--json",
    "-c",
    "x" * 200,
    "x" * 201,
]
lone_surrogates = st.characters(categories=["Cs"])
any_char = st.characters() | lone_surrogates
option_text = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=12),
    st.text(any_char, max_size=12),
    st.lists(st.sampled_from(NASTY), min_size=2, max_size=3).map("".join),
)


def mostly(plausible: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a plausible value, sometimes anything at all."""
    # one_of() would drop a repeated strategy, so weigh the choice explicitly.
    return st.integers(0, 5).flatmap(lambda n: other if n == 0 else plausible)


names = st.text(st.characters(exclude_categories=["Cc", "Cf", "Zs", "Zl", "Zp"]), min_size=1, max_size=12)
offsets = st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)).map(timezone)
moments = st.datetimes(timezones=st.none() | st.just(UTC) | offsets)
timestamp_text = moments.map(datetime.isoformat) | moments.map(lambda m: m.isoformat(sep=" "))
duration_text = st.builds(
    lambda n, unit: f"{n}{unit}",
    st.integers(-2, 10**6) | st.floats(0, 1e4),
    st.sampled_from(["", "s", "m", "h", "d"]),
)
integer_text = st.builds(
    lambda n, pad: f"{pad}{n}{pad}", st.integers(-(2**32), 2**32), st.sampled_from(["", " ", "\t"])
)
plausible_options: dict[str, st.SearchStrategy[str]] = {
    "id": names,
    "queue": names,
    "priority": integer_text,
    "timeout": duration_text | st.sampled_from(["none", "null", "None"]),
    "max_retries": integer_text,
    "run_at": timestamp_text,
    "delay": duration_text,
}
option_sets = st.fixed_dictionaries(
    {}, optional={name: mostly(plausible, option_text) for name, plausible in plausible_options.items()}
)
commands = mostly(st.text(min_size=1, max_size=30), option_text)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(10**30), 10**30)
    | st.floats()  # NaN and infinities too: json.dumps writes them, the CLI must refuse them
    | st.text(any_char, max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
job_objects = st.fixed_dictionaries(
    {"command": mostly(st.text(min_size=1, max_size=30), st.text(any_char, max_size=12) | json_values)},
    optional={
        "id": mostly(names, json_values),
        "queue": mostly(names, json_values),
        "priority": mostly(st.integers(-(2**32), 2**32), json_values),
        "timeout": mostly(st.none() | st.floats(-1, 2e9) | st.integers(-1, 2 * 10**9), json_values),
        "max_retries": mostly(st.integers(-1, 2_000_000), json_values),
        # run_at and delay exclude each other: usually one of them.
        "schedule": st.one_of(
            st.fixed_dictionaries({"run_at": mostly(timestamp_text, json_values)}),
            st.fixed_dictionaries({"delay": mostly(duration_text | st.floats(-1, 1e10), json_values)}),
            st.fixed_dictionaries({"run_at": timestamp_text, "delay": duration_text}),
        ),
    },
).map(lambda fields: {**{k: v for k, v in fields.items() if k != "schedule"}, **fields.get("schedule", {})})
#: Keys no job may have: a typo, an output-only field, anything.
stray_keys = st.sampled_from(["comand", "state", "attempts", "Command", ""]) | st.text(max_size=8)
json_jobs = st.integers(0, 7).flatmap(
    lambda n: (
        json_values
        if n == 0
        else st.builds(lambda job, key, value: {**job, key: value}, job_objects, stray_keys, json_values)
        if n == 1
        else job_objects
    )
)


def dumped(value: Any, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


json_texts = st.integers(0, 5).flatmap(
    lambda n: (
        option_text
        if n == 0
        else st.builds(dumped, json_jobs, st.booleans()).flatmap(
            lambda text: st.integers(0, len(text)).map(lambda cut: text[:cut])  # cut short
        )
        if n == 1
        else st.builds(dumped, json_jobs, st.booleans())
    )
)


# --- the property: enqueue ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for all examples: refusals must leave its row count as it was."""
    return tmp_path_factory.mktemp("faults-input") / "queue.db"


def check_enqueue(db: Path, args: Sequence[str], asked: Asked | None) -> None:
    """Run ``enqueue ARGS``; ``asked`` is None when the input must be refused."""
    count = row_count(db)
    duplicate = asked is not None and asked.id is not None and asked.id in stored_ids(db)
    before = time.time()
    result = invoke("--db", str(db), "enqueue", "--json", *args)
    after = time.time()
    event("refused" if asked is None else "duplicate" if duplicate else "enqueued")
    if asked is None:
        error_line(result, 2)
    elif duplicate:
        error_line(result, 1, "already exists")
    else:
        data = succeeded(result).json()
        assert result.err == b""
        assert_stored(data, asked, before, after)
        assert_stored(shown(db, data["id"]), asked, before, after)
        assert row_count(db) == count + 1
        return
    assert row_count(db) == count


@settings(max_examples=250, deadline=None, database=None)
@given(text=json_texts)
def test_enqueue_json_is_stored_exactly_or_refused(shared_db: Path, text: str) -> None:
    try:
        parse_job_json(text)
        data: Any = json.loads(text.removeprefix("\ufeff"))
    except (InvalidInput, ValueError, RecursionError):
        asked = None
    else:
        asked = asked_from_json(data)
    check_enqueue(shared_db, ["--", text], asked)  # "--": a text such as "-c0" is not an option


@settings(max_examples=250, deadline=None, database=None)
@given(command=commands, options=option_sets)
def test_enqueue_options_are_stored_exactly_or_refused(
    shared_db: Path, command: str, options: dict[str, Any]
) -> None:
    args = [f"--command={command}"]
    args += [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
    try:
        job_from_options(command=command, **options)
    except InvalidInput:
        asked = None
    else:
        asked = asked_from_options(command, options)
    check_enqueue(shared_db, args, asked)


# --- the property: enqueue-file -----------------------------------------------------------------


def document(records: list[Any], form: str) -> str:
    if form == "object" and records:
        return json.dumps(records[0])
    if form == "lines":
        return "".join(json.dumps(record) + "\n" for record in records)
    return json.dumps(records)


def records_of(text: str, lines: list[Any]) -> list[Any]:
    """The records a document holds: one object, an array's items, else (JSON Lines) ``lines``."""
    try:
        whole = json.loads(text.removeprefix("\ufeff"))
    except ValueError:
        return lines
    return [whole] if isinstance(whole, dict) else list(whole)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # a fresh file per example is made inside
)
@given(
    records=st.lists(json_jobs, max_size=4),
    form=st.sampled_from(["object", "array", "lines"]),
    bom=st.booleans(),
    via_stdin=st.booleans(),
)
def test_enqueue_file_stores_every_job_exactly_or_none(
    shared_db: Path, tmp_path: Path, records: list[Any], form: str, bom: bool, via_stdin: bool
) -> None:
    text = ("\ufeff" if bom else "") + document(records, form)
    try:
        parse_jobs_document(text)
    except InvalidInput:
        expected: list[Asked] | None = None
    else:
        expected = [asked_from_json(record) for record in records_of(text, records)]
    path = tmp_path / f"jobs-{uuid.uuid4().hex}.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    data = path.read_bytes()
    count = row_count(shared_db)
    existing = stored_ids(shared_db)
    before = time.time()
    if via_stdin:
        result = invoke("--db", str(shared_db), "enqueue-file", "--json", "-", input=data)
    else:
        result = invoke("--db", str(shared_db), "enqueue-file", "--json", str(path))
    after = time.time()
    event("refused" if expected is None else f"{len(expected)} jobs")
    if expected is None:
        error_line(result, 2)
    elif any(asked.id in existing for asked in expected):
        error_line(result, 1, "already exists")
    else:
        jobs = succeeded(result).json()
        assert len(jobs) == len(expected)
        for job, asked in zip(jobs, expected, strict=True):
            assert_stored(job, asked, before, after)
            assert_stored(shown(shared_db, job["id"]), asked, before, after)
        assert row_count(shared_db) == count + len(expected)
        return
    assert row_count(shared_db) == count


# --- malformed JSON, class by class ---------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A store that already holds one job, so that "wrote nothing" is a count that stays at 1."""
    path = tmp_path / "queue.db"
    succeeded(invoke("--db", str(path), "enqueue", '{"id": "seed", "command": "true"}'))
    return path


def enqueue_json_three_ways(db: Path, tmp_path: Path, text: str) -> list[Result]:
    """The same JSON as an argument, as a file and on stdin."""
    path = tmp_path / "job.json"
    path.write_text(text, encoding="utf-8")
    return [
        invoke("--db", str(db), "enqueue", text),
        invoke("--db", str(db), "enqueue-file", str(path)),
        invoke("--db", str(db), "enqueue-file", "-", input=text.encode()),
    ]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"command": "true", "priority": NaN}', ["NaN"]),
        ('{"command": "true", "timeout": Infinity}', ["Infinity"]),
        ('{"command": "true", "timeout": -Infinity}', ["-Infinity"]),
        ('{"command": "true", "timeout": 1e400}', ["1e400", "too large"]),
        ('{"command": "true", "priority": -1e400}', ["too large"]),
        ('{"command": "true", "priority": ' + "9" * 5000 + "}", ["too many digits"]),
        ('{"command": "true", "command": "rm -rf ~"}', ["duplicate key 'command'"]),
        ('{"command": "true", "id": "a", "id": "a"}', ["duplicate key 'id'"]),
        ('{"command": "true", "priority": true}', ["priority"]),
        ('{"command": "true\\u0000; rm -rf ~"}', ["NUL"]),
        ('{"command": "\\ud800"}', ["surrogate"]),
        ('{"command": "true", "id": "a\\u0000b"}', ["id", "control"]),
        ('{"command": "true", "queue": "\\u202e"}', ["queue", "control"]),
        ('{"command": "true"}  {"command": "false"', ["invalid JSON"]),
        ('{"command": "tr\tue"}', ["invalid JSON"]),  # a raw control character inside a string
    ],
)
def test_malformed_json_is_refused_every_way_in(
    db: Path, tmp_path: Path, text: str, words: list[str]
) -> None:
    for result in enqueue_json_three_ways(db, tmp_path, text):
        error_line(result, 2, *words)
    assert row_count(db) == 1


@pytest.mark.parametrize(
    "text",
    [
        "[" * 10_000 + "]" * 10_000,
        '{"command": ' + "[" * 10_000 + "]" * 10_000 + "}",
        '{"command": "true", "x": ' + '{"a": ' * 10_000 + "1" + "}" * 10_000 + "}",
        "[" * 100_000,
        "{" * 10_000,
    ],
)
def test_nesting_10000_deep_is_refused(db: Path, tmp_path: Path, text: str) -> None:
    for result in enqueue_json_three_ways(db, tmp_path, text):
        line = error_line(result, 2)
        assert "nested too deeply" in line or "invalid JSON" in line, line
    assert row_count(db) == 1


def test_deep_nesting_on_one_json_line_names_the_line(db: Path) -> None:
    text = '{"command": "true"}\n' + "[" * 10_000 + "]" * 10_000 + "\n"
    error_line(invoke("--db", str(db), "enqueue-file", "-", input=text), 2, "line 2", "nested too deeply")
    assert row_count(db) == 1


def test_a_utf8_bom_is_accepted_every_way_in(db: Path, tmp_path: Path) -> None:
    bom = "\ufeff"
    succeeded(invoke("--db", str(db), "enqueue", bom + '{"id": "arg", "command": "echo é"}'))
    path = tmp_path / "jobs.jsonl"
    path.write_bytes((bom + '{"id": "l1", "command": "echo é"}\n{"id": "l2", "command": "true"}\n').encode())
    assert succeeded(invoke("--db", str(db), "enqueue-file", str(path))).out == b"l1\nl2\n"
    piped = (bom + '[{"id": "s1", "command": "echo é"}]').encode()
    assert succeeded(invoke("--db", str(db), "enqueue-file", "-", input=piped)).out == b"s1\n"
    for job_id in ("arg", "l1", "s1"):
        assert shown(db, job_id)["command"] == "echo é"
    # Only at the very start: a BOM anywhere else is a stray character.
    error_line(invoke("--db", str(db), "enqueue", '{"command": "true"}' + bom), 2, "invalid JSON")
    assert row_count(db) == 5


def test_a_nul_in_the_command_is_refused_from_options(db: Path) -> None:
    error_line(invoke("--db", str(db), "enqueue", "--command", "true\0; rm -rf ~"), 2, "NUL")
    assert row_count(db) == 1


def test_escaped_astral_characters_are_stored_as_themselves(db: Path) -> None:
    data = succeeded(
        invoke("--db", str(db), "enqueue", "--json", '{"command": "echo \\ud83d\\ude00"}')
    ).json()
    assert shown(db, data["id"])["command"] == "echo \U0001f600"


def test_a_10_megabyte_command_is_refused_quickly(db: Path, tmp_path: Path) -> None:
    huge = "x" * (10 * 1024 * 1024)
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"command": huge}))
    began = time.monotonic()
    error_line(invoke("--db", str(db), "enqueue-file", str(path)), 2, "131071 bytes")
    lines = json.dumps({"command": "true"}) + "\n" + json.dumps({"command": f"echo {huge}"}) + "\n"
    error_line(
        invoke("--db", str(db), "enqueue-file", "-", input=lines.encode()), 2, "line 2", "131071 bytes"
    )
    assert time.monotonic() - began < 30  # a refusal, not a hang: generous for a loaded machine
    assert row_count(db) == 1


@pytest.mark.parametrize(
    ("command", "accepted"),
    [
        ("x" * MAX_COMMAND_BYTES, True),
        ("x" * (MAX_COMMAND_BYTES + 1), False),
        ("é" * (MAX_COMMAND_BYTES // 2) + "x", True),  # 131071 bytes in 65536 characters
        ("é" * (MAX_COMMAND_BYTES // 2 + 1), False),  # 131072 bytes
    ],
)
def test_the_command_limit_is_exact_and_a_command_at_the_limit_is_stored_whole(
    db: Path, command: str, accepted: bool
) -> None:
    result = invoke("--db", str(db), "enqueue-file", "--json", "-", input=json.dumps({"command": command}))
    if accepted:
        (job,) = succeeded(result).json()
        assert shown(db, job["id"])["command"] == command
    else:
        error_line(result, 2, f"{MAX_COMMAND_BYTES} bytes")
        assert row_count(db) == 1


@pytest.mark.parametrize(
    ("raw", "offset"),
    [
        (b"\xff", 13),  # never valid in UTF-8
        (b"\xc0\xaf", 13),  # an overlong "/"
        (b"\xed\xa0\x80", 13),  # a surrogate, encoded
        (b"\xf4\x90\x80\x80", 13),  # past U+10FFFF
        (b"ok \xe2\x82", 16),  # cut short in the middle of a character
    ],
)
def test_invalid_utf8_is_refused_with_its_offset(db: Path, tmp_path: Path, raw: bytes, offset: int) -> None:
    data = b'{"command": "' + raw + b'"}\n'
    path = tmp_path / "bad.json"
    path.write_bytes(data)
    for result in (
        invoke("--db", str(db), "enqueue-file", str(path)),
        invoke("--db", str(db), "enqueue-file", "-", input=data),
    ):
        error_line(result, 2, "not valid UTF-8", f"offset {offset}")
    assert row_count(db) == 1


def test_undecodable_argv_bytes_are_refused_by_a_real_process(tmp_path: Path) -> None:
    """The kernel passes bytes; Python turns the bad ones into lone surrogates."""
    db = tmp_path / "queue.db"
    for args in (
        [b"enqueue", b"--command", b"echo \xff"],
        [b"enqueue", b'{"command": "echo \xff"}'],
        [b"enqueue", b"--command", b"true", b"--id", b"job-\xff"],
    ):
        done = subprocess.run(
            [os.fsencode(sys.executable), b"-m", b"queuectl", b"--db", os.fsencode(db), *args],
            capture_output=True,
            timeout=DEADLINE,
        )
        assert done.returncode == 2, done.stderr
        assert done.stdout == b""
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(b"queuectl: error: "), (
            done.stderr
        )
        assert b"Traceback" not in done.stderr
    assert not db.exists()


# --- naive times in a time zone with daylight saving ----------------------------------------------


@pytest.fixture
def local_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set this process's local zone to a POSIX TZ string for the rest of the test."""

    def use(zone: str) -> None:
        monkeypatch.setenv("TZ", zone)
        time.tzset()

    yield use
    monkeypatch.undo()
    time.tzset()


def run_at_of(db: Path, *args: str) -> str:
    data = succeeded(invoke("--db", str(db), "enqueue", "--json", *args)).json()
    run_at: str = shown(db, data["id"])["run_at"]
    assert run_at == data["run_at"]
    return run_at


@pytest.mark.parametrize("form", ["option", "json"])
def test_naive_run_at_in_local_time_with_dst(db: Path, local_zone: Any, form: str) -> None:
    def enqueue_at(text: str) -> list[str]:
        if form == "option":
            return ["--command", "true", "--run-at", text]
        return [json.dumps({"command": "true", "run_at": text})]

    local_zone(BERLIN)
    # Clocks jump from 02:00 to 03:00 on 2024-03-31: 02:30 never happens.
    for skipped in ("2024-03-31T02:30:00", "2024-03-31T02:00:00", "2024-03-31 02:59:59.999999"):
        error_line(
            invoke("--db", str(db), "enqueue", *enqueue_at(skipped)), 2, "does not exist in local time"
        )
    assert row_count(db) == 1
    # Either side of the gap, and the gap's time with an offset, are fine.
    assert run_at_of(db, *enqueue_at("2024-03-31T01:59:59")) == "2024-03-31T00:59:59.000000Z"
    assert run_at_of(db, *enqueue_at("2024-03-31T03:00:00")) == "2024-03-31T01:00:00.000000Z"
    assert run_at_of(db, *enqueue_at("2024-03-31T02:30:00+01:00")) == "2024-03-31T01:30:00.000000Z"
    # 02:30 happens twice on 2024-10-27, first in CEST: the earlier instant is meant.
    assert run_at_of(db, *enqueue_at("2024-10-27T02:30:00")) == "2024-10-27T00:30:00.000000Z"
    assert run_at_of(db, *enqueue_at("2024-10-27T03:00:00")) == "2024-10-27T02:00:00.000000Z"
    # Far future: the last day of year 9999 is fine, naive or not; what would overflow is refused.
    assert run_at_of(db, *enqueue_at("9999-12-31T23:00:00")) == "9999-12-31T22:00:00.000000Z"
    assert run_at_of(db, *enqueue_at("9999-12-31T23:59:59Z")) == "9999-12-31T23:59:59.000000Z"
    error_line(invoke("--db", str(db), "enqueue", *enqueue_at("0001-01-01T00:30:00")), 2, "out of range")
    local_zone(NEW_YORK)
    error_line(invoke("--db", str(db), "enqueue", *enqueue_at("9999-12-31T23:00:00")), 2, "out of range")
    assert run_at_of(db, *enqueue_at("2024-03-10T01:59:59")) == "2024-03-10T06:59:59.000000Z"
    error_line(invoke("--db", str(db), "enqueue", *enqueue_at("2024-03-10T02:30:00")), 2, "does not exist")
    assert row_count(db) == 9


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("2023-02-29T12:00:00Z", ["day is out of range for month"]),
        ("2024-02-30", ["day is out of range for month"]),
        ("2024-04-31T00:00:00Z", ["day is out of range for month"]),
        ("2024-13-01T00:00:00Z", ["month must be in 1..12"]),
        ("2024-00-10", ["month must be in 1..12"]),
        ("2024-06-01T24:00:01Z", ["run_at"]),
        ("2024-06-01T12:60:00Z", ["minute must be in 0..59"]),
        ("2024-06-01T12:00:61Z", ["second must be in 0..59"]),
        ("10000-01-01T00:00:00Z", ["run_at", "ISO-8601"]),
        ("0000-12-31T00:00:00Z", ["run_at"]),
        ("9999-12-31T23:59:59-00:01", ["out of range once converted to UTC"]),
        ("0001-01-01T00:00:00+00:01", ["out of range once converted to UTC"]),
        ("2024-06-01T12:00:00+24:00", ["run_at"]),
        ("1714564800", ["run_at", "ISO-8601"]),
    ],
)
def test_invalid_dates_are_refused(db: Path, text: str, words: list[str]) -> None:
    error_line(invoke("--db", str(db), "enqueue", "--command", "true", "--run-at", text), 2, *words)
    error_line(invoke("--db", str(db), "enqueue", json.dumps({"command": "true", "run_at": text})), 2, *words)
    assert row_count(db) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9999-12-31T23:59:59.999999Z", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("9999-12-31T23:59:59.999990+00:00", datetime(9999, 12, 31, 23, 59, 59, 999990, tzinfo=UTC)),
        ("9999-12-31T12:00:00.123456Z", datetime(9999, 12, 31, 12, 0, 0, 123456, tzinfo=UTC)),
        ("0001-01-01T00:00:00.000001Z", datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC)),
        ("2106-02-07T06:28:15.999999Z", datetime(2106, 2, 7, 6, 28, 15, 999999, tzinfo=UTC)),
    ],
)
def test_the_edges_of_time_are_stored_and_read_back(store_target: str, text: str, expected: datetime) -> None:
    """The last microsecond of year 9999 must neither be refused nor break every later read."""
    args = ("enqueue", "--json", "--command", "true", "--run-at", text)
    data = succeeded(invoke("--db", store_target, *args)).json()
    shown_job = succeeded(invoke("--db", store_target, "show", "--json", data["id"])).json()
    for job in (data, shown_job):
        assert abs(datetime.fromisoformat(job["run_at"]) - expected) <= precision(expected), job["run_at"]
    listed = succeeded(invoke("--db", store_target, "list", "--json")).json()
    assert [job["id"] for job in listed] == [data["id"]]
    status = succeeded(invoke("--db", store_target, "status", "--json")).json()
    # status adds "seconds from now" to its own clock: close, though not to the microsecond.
    next_run_at = datetime.fromisoformat(status["next_run_at"])
    assert abs(next_run_at - datetime.fromisoformat(data["run_at"])) < timedelta(seconds=5)


def test_the_time_zone_comes_from_the_process_environment(tmp_path: Path) -> None:
    """As a user runs it: TZ set for the process, no tz database needed."""
    db = str(tmp_path / "queue.db")

    def enqueue(zone: str, run_at: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "queuectl", "enqueue", "--json", "--command", "true", "--run-at", run_at],
            env=queuectl_env(db, {"TZ": zone}),
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )

    gap = enqueue(BERLIN, "2024-03-31T02:30:00")
    assert gap.returncode == 2 and gap.stdout == "", gap.stderr
    assert len(gap.stderr.splitlines()) == 1 and "does not exist in local time" in gap.stderr
    overlap = enqueue(BERLIN, "2024-10-27T02:30:00")
    assert overlap.returncode == 0, overlap.stderr
    assert json.loads(overlap.stdout)["run_at"] == "2024-10-27T00:30:00.000000Z"
    same_wall_clock = enqueue(NEW_YORK, "2024-10-27T02:30:00")
    assert json.loads(same_wall_clock.stdout)["run_at"] == "2024-10-27T06:30:00.000000Z"


# --- ten processes, one id ---------------------------------------------------------------------------

#: Imports everything first, says it is ready, then waits for the signal to run ``main()``: the
#: ten processes then reach the store within a millisecond of each other, not a start-up apart.
RACER = textwrap.dedent(
    """
    import os, sys, time
    import queuectl.cli, queuectl.queue, queuectl.storage.sqlite.direct
    if sys.argv[3].startswith("postgresql"):
        import asyncpg, queuectl.storage.postgres
    ready, go = sys.argv[1], sys.argv[2]
    open(ready, "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            sys.exit("never got the signal to go")
        time.sleep(0.001)
    queuectl.cli.main(["--db", sys.argv[3], "enqueue", *sys.argv[4:]])
    """
)


async def commands_by_id(target: str) -> dict[str, str]:
    from queuectl.storage import open_store

    store = await open_store(target)
    try:
        return {job.id: job.command for job in await store.list_jobs(limit=None)}
    finally:
        await store.close()


@pytest.mark.parametrize("fresh", [False, True], ids=["existing-store", "new-store"])
async def test_ten_processes_enqueue_the_same_id_at_once(
    store_target: str, tmp_path: Path, fresh: bool
) -> None:
    if not fresh:
        from queuectl.storage import open_store

        await (await open_store(store_target)).close()
    go = tmp_path / "go"
    racers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                RACER,
                str(tmp_path / f"ready-{index}"),
                str(go),
                store_target,
                "--id",
                "the-one",
                "--command",
                f"echo {index}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=queuectl_env(store_target),
        )
        for index in range(10)
    ]
    try:
        wait_until(
            lambda: all((tmp_path / f"ready-{index}").exists() for index in range(10)),
            what="ten racers to be ready",
        )
        go.touch()
        outputs = [racer.communicate(timeout=DEADLINE) for racer in racers]
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
                racer.wait()
    codes = [racer.returncode for racer in racers]
    assert sorted(codes) == [0] + [1] * 9, (codes, [err for _, err in outputs])
    winner = codes.index(0)
    assert outputs[winner] == (b"the-one\n", b"")
    for code, (out, err) in zip(codes, outputs, strict=True):
        if code == 1:
            assert out == b""
            assert err.decode() == "queuectl: error: a job with id 'the-one' already exists\n", err
    assert await commands_by_id(store_target) == {"the-one": f"echo {winner}"}
