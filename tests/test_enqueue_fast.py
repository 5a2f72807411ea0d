"""``enqueue-file``'s bulk path against the full path it stands in for.

Plain JSON Lines (every record ``{"command": "..."}``) skip the per-record parse, ``NewJob``
and ``Job``: ``plain_lines`` must accept only what the full parse accepts, with the same
commands and default fields, and the store must end up holding the same jobs either way.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from queuectl.cli import main
from queuectl.errors import InvalidInput
from queuectl.job_ids import sorted_uuid4s
from queuectl.models import UNSET, Job
from queuectl.plain_lines import plain_commands
from queuectl.storage import open_store
from queuectl.storage.sqlite import direct as sqlite_direct
from queuectl.validation import MAX_COMMAND_BYTES, parse_jobs_document

# --- the recogniser against the full parse ------------------------------------------------

SPACES = st.sampled_from(["", " ", "\t", "\r", " \t ", "\x0c", "\u00a0", "\n"])
#: Escapes, quotes, control characters, Unicode spaces, a BOM, a lone surrogate.
PIECES = st.sampled_from(
    ["a", " ", "true", '"', '\\"', "\\\\", "\\n", "\\u0041", "\\ud800", "\x00", "\x01", "\x1f", "\x7f"]
) | st.sampled_from(["\u2028", "\u00a0", "\u3000", "\U0001f600", "é", "\ufeff", "\ud800"])
VALUES = st.lists(PIECES, max_size=4).map(lambda pieces: '"' + "".join(pieces) + '"') | st.sampled_from(
    ["1", "null", "true", "[]", "{}"]
)
KEYS = st.sampled_from(['"command"', '"command"', '"comand"', '"comm\\u0061nd"', '"queue"', '"id"'])


@st.composite
def records(draw: st.DrawFn) -> str:
    members = draw(st.lists(st.tuples(KEYS, VALUES), max_size=2))
    body = ",".join(f"{draw(SPACES)}{key}{draw(SPACES)}:{draw(SPACES)}{value}" for key, value in members)
    return f"{draw(SPACES)}{{{body}{draw(SPACES)}}}{draw(SPACES)}"


LINES = records() | SPACES | st.sampled_from(["[", "}", "1", '{"command": "x"}, {"command": "y"}'])
DOCUMENTS = st.tuples(st.sampled_from(["", "\ufeff"]), st.lists(LINES, max_size=5), SPACES).map(
    lambda parts: parts[0] + "\n".join(parts[1]) + parts[2]
)


def is_plain(job: Any) -> bool:
    fields = (job.queue, job.priority, job.timeout, job.max_retries, job.run_at, job.delay, job.cwd, job.env)
    return fields == ("default", 0, UNSET, UNSET, None, None, None, None)


def check_agrees(text: str) -> list[str] | None:
    """``plain_commands(text)``, after checking it against ``parse_jobs_document(text)``."""
    commands = plain_commands(text)
    try:
        jobs = parse_jobs_document(text)
    except InvalidInput:
        assert commands is None, text
        return None
    if commands is not None:
        assert [job.command for job in jobs] == commands, text
        assert all(is_plain(job) for job in jobs), text
    return commands


@given(DOCUMENTS)
def test_plain_commands_accepts_only_what_the_full_parse_accepts(text: str) -> None:
    check_agrees(text)


@pytest.mark.parametrize(
    ("text", "commands"),
    [
        ('{"command": "true"}\n{"command": "echo hi"}\n', ["true", "echo hi"]),
        ('\ufeff {"command":"a"} \r\n\n \t\n{ "command" : "b" }', ["a", "b"]),
        ('{"command": "échô \U0001f600"}', ["échô \U0001f600"]),
        ('{"command": "x"}', ["x"]),  # one object, not JSON Lines: the same job
        ('{"command": "a\\tb"}', None),  # escapes: the full path decodes them
        ('{"command": "x", "queue": "q"}', None),
        ('{"command": "x", "command": "y"}', None),
        ('{"command": " \u3000"}', None),  # only whitespace: refused by the full path
        ('{"command": ""}', None),
        ('{"command": "a"}\n{"comand": "b"}', None),
        ("", None),
        ("\n \n", None),
        ('[{"command": "a"}]', None),
    ],
)
def test_plain_commands_examples(text: str, commands: list[str] | None) -> None:
    assert check_agrees(text) == commands


def test_long_commands_are_left_to_the_full_path() -> None:
    at_most = "a" * (MAX_COMMAND_BYTES // 4)
    assert check_agrees(f'{{"command": "{at_most}"}}') == [at_most]
    wide = "é" * (MAX_COMMAND_BYTES // 2 + 1)  # few enough characters, one byte too many in UTF-8
    assert plain_commands(f'{{"command": "{wide}"}}') is None
    with pytest.raises(InvalidInput, match="bytes"):
        parse_jobs_document(f'{{"command": "{wide}"}}')


def test_sorted_uuid4s_are_distinct_random_uuid4s_in_ascending_order() -> None:
    ids = sorted_uuid4s(2000)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    assert sorted_uuid4s(0) == []
    assert set(sorted_uuid4s(100)).isdisjoint(ids)


# --- the store holds the same jobs either way -----------------------------------------------


def run_cli(*args: str) -> str:
    runner = CliRunner()
    with runner.isolation() as (out, err, _), pytest.raises(SystemExit) as exit_:
        main(list(args))
    assert exit_.value.code == 0, err.getvalue()
    return out.getvalue().decode()


def stored_jobs(target: str) -> list[Job]:
    async def read() -> list[Job]:
        store = await open_store(target)
        try:
            return await store.list_jobs(limit=None)
        finally:
            await store.close()

    return asyncio.run(read())


COMMANDS = ["echo ü \U0001f600", "true", "c  d", "sleep 1 && echo done"]


@pytest.mark.parametrize("sqlite_json", [True, False], ids=["json_each", "executemany"])
def test_bulk_path_stores_what_the_full_path_stores(
    store_target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_json: bool
) -> None:
    if not sqlite_json:
        if store_target.startswith("postgres"):
            pytest.skip("SQLite only")
        monkeypatch.setattr(sqlite_direct, "HAS_JSON", False)
    run_cli("--db", store_target, "config", "set", "max_retries", "7")
    run_cli("--db", store_target, "config", "set", "default_timeout", "5")
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(f'{{"command": "{command}"}}\n' for command in COMMANDS) + "\n")
    full = tmp_path / "full.jsonl"  # "queue" given: the full path
    full.write_text("".join(f'{{"command": "{command}", "queue": "default"}}\n' for command in COMMANDS))
    assert plain_commands(plain.read_text()) == COMMANDS
    assert plain_commands(full.read_text()) is None

    plain_ids = run_cli("--db", store_target, "enqueue-file", str(plain)).splitlines()
    full_ids = run_cli("--db", store_target, "enqueue-file", str(full)).splitlines()

    assert plain_ids == sorted(plain_ids)
    assert all(uuid.UUID(job_id).version == 4 for job_id in plain_ids)
    oldest_first = stored_jobs(store_target)[::-1]
    assert [job.id for job in oldest_first] == plain_ids + full_ids  # in file order

    def fields(job: Job) -> tuple[Any, ...]:
        return (
            job.command,
            job.queue,
            job.priority,
            job.timeout,
            job.max_retries,
            job.cwd,
            job.env,
            job.state,
            job.attempts,
        )

    by_plain = [fields(job) for job in oldest_first[: len(COMMANDS)]]
    by_full = [fields(job) for job in oldest_first[len(COMMANDS) :]]
    assert by_plain == by_full
    assert by_plain[0][:7] == (COMMANDS[0], "default", 0, 5.0, 7, None, None)
    for job in oldest_first:
        assert job.run_at == job.created_at == job.updated_at
