"""``dlq``, ``config`` and ``worker`` in-process, on each backend.

Dead and completed jobs are made by running real commands with a burst worker pool
(``helpers.make_dead``, ``helpers.make_completed``); a worker process that is not there,
with the host and pid the table must show, by ``helpers.fake_worker``.
"""

from __future__ import annotations

import pytest
from helpers import (
    WORKER_KEYS,
    Cli,
    assert_error,
    assert_job_object,
    assert_wrote_nothing,
    block_on,
    fake_worker,
    heartbeat,
    job_state,
    make_completed,
    make_dead,
    ok,
)

from queuectl.config import SETTINGS, Settings

# --- the dead-letter queue ----------------------------------------------------------------


def test_dlq_list(cli: Cli, cli_target: str) -> None:
    ok(cli("enqueue", "--id", "alive", "-c", "true"))
    block_on(make_dead(cli_target, "dead1"))
    data = ok(cli("dlq", "list", "--json")).json()
    assert [job["id"] for job in data] == ["dead1"]
    assert_job_object(data[0])
    assert data[0]["state"] == "dead"
    lines = ok(cli("dlq", "list")).stdout.splitlines()
    assert len(lines) == 2 and lines[1].startswith("dead1 ")


def test_dlq_list_that_stops_at_its_limit_says_how_many_there_are(cli: Cli, cli_target: str) -> None:
    block_on(make_dead(cli_target, "d1", "d2", "d3"))
    result = ok(cli("dlq", "list", "--limit", "2", "--json"))
    assert len(result.json()) == 2
    assert result.stderr == "showing 2 of 3 jobs; use --limit 0 for all\n"
    assert ok(cli("dlq", "list", "--limit", "3")).err == b""


def test_dlq_list_empty(cli: Cli) -> None:
    result = ok(cli("dlq", "list"))
    assert result.out == b"" and "empty" in result.stderr
    assert ok(cli("dlq", "list", "--json")).json() == []


def test_dlq_retry_ids(cli: Cli, cli_target: str) -> None:
    block_on(make_dead(cli_target, "d1", "d2"))
    assert ok(cli("dlq", "retry", "d1", "d2")).stdout == "d1\nd2\n"
    assert block_on(job_state(cli_target, "d1")) == ("pending", 0)
    assert block_on(job_state(cli_target, "d2")) == ("pending", 0)


def test_dlq_retry_json(cli: Cli, cli_target: str) -> None:
    block_on(make_dead(cli_target, "d1"))
    data = ok(cli("dlq", "retry", "--json", "d1")).json()
    assert isinstance(data, list) and len(data) == 1
    assert_job_object(data[0])
    assert data[0]["state"] == "pending" and data[0]["attempts"] == 0


def test_dlq_retry_all(cli: Cli, cli_target: str) -> None:
    block_on(make_dead(cli_target, "d1", "d2"))
    ok(cli("enqueue", "--id", "alive", "-c", "true"))
    assert sorted(ok(cli("dlq", "retry", "--all")).stdout.split()) == ["d1", "d2"]
    assert ok(cli("dlq", "list", "--json")).json() == []
    result = ok(cli("dlq", "retry", "--all"))
    assert result.out == b"" and "empty" in result.stderr


def test_dlq_retry_of_a_job_that_is_not_dead_changes_nothing(cli: Cli, cli_target: str) -> None:
    block_on(make_dead(cli_target, "d1"))
    block_on(make_completed(cli_target, "done"))
    ok(cli("enqueue", "--id", "waiting", "-c", "true"))
    assert_error(cli("dlq", "retry", "d1", "waiting"), 1, "waiting", "not dead")
    assert_error(cli("dlq", "retry", "done"), 1, "done")
    assert block_on(job_state(cli_target, "d1")) == ("dead", 1)
    assert block_on(job_state(cli_target, "done")) == ("completed", 1)
    assert block_on(job_state(cli_target, "waiting")) == ("pending", 0)


def test_dlq_retry_unknown_id_exits_1_and_changes_nothing(cli: Cli, cli_target: str) -> None:
    block_on(make_dead(cli_target, "d1"))
    assert_error(cli("dlq", "retry", "d1", "ghost"), 1, "ghost")
    assert block_on(job_state(cli_target, "d1")) == ("dead", 1)


def test_dlq_retry_needs_ids_or_all(cli: Cli, cli_target: str) -> None:
    assert_error(cli("dlq", "retry"), 2, "--all")
    assert_error(cli("dlq", "retry", "x", "--all"), 2, "not both")
    assert_wrote_nothing(cli_target)


# --- config -------------------------------------------------------------------------------


def test_config_show_json_is_typed(cli: Cli) -> None:
    data = ok(cli("config", "show", "--json")).json()
    assert data == Settings().to_dict()
    assert set(data) >= {
        "max_retries",
        "backoff_base",
        "backoff_max",
        "default_timeout",
        "poll_interval",
        "lease",
    }
    assert isinstance(data["max_retries"], int) and not isinstance(data["max_retries"], bool)
    assert isinstance(data["backoff_base"], float)
    assert data["default_timeout"] is None


def test_config_show_table(cli: Cli) -> None:
    lines = ok(cli("config", "show")).stdout.splitlines()
    assert lines[0].split()[:2] == ["KEY", "VALUE"]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert rows["max_retries"] == "3"
    assert rows["default_timeout"] == "none"
    assert set(rows) == set(SETTINGS)


def test_config_set_and_get(cli: Cli) -> None:
    assert ok(cli("config", "get", "max_retries")).stdout == "3\n"
    assert ok(cli("config", "set", "max_retries", "5")).out == b""
    assert ok(cli("config", "get", "max_retries")).stdout == "5\n"
    assert ok(cli("config", "get", "max_retries", "--json")).json() == 5
    ok(cli("config", "set", "backoff_base", "1.5"))
    assert ok(cli("config", "get", "backoff_base", "--json")).json() == 1.5
    ok(cli("config", "set", "default_timeout", "30"))
    assert ok(cli("config", "get", "default_timeout")).stdout == "30\n"
    ok(cli("config", "set", "default_timeout", "none"))
    assert ok(cli("config", "get", "default_timeout")).stdout == "none\n"
    assert ok(cli("config", "get", "default_timeout", "--json")).json() is None
    assert ok(cli("config", "show", "--json")).json()["backoff_base"] == 1.5


def test_config_keys_may_be_written_with_hyphens(cli: Cli) -> None:
    assert ok(cli("config", "set", "max-retries", "5")).out == b""
    assert ok(cli("config", "get", "max-retries")).stdout == "5\n"
    assert ok(cli("config", "get", "max_retries")).stdout == "5\n"
    ok(cli("config", "set", "default-timeout", "10m"))
    assert ok(cli("config", "get", "default-timeout")).stdout == "10m\n"  # as given
    assert ok(cli("config", "get", "default-timeout", "--json")).json() == 600
    shown = ok(cli("config", "show", "--json")).json()
    assert shown["max_retries"] == 5 and set(shown) == set(SETTINGS)  # stored under its own name
    assert_error(cli("config", "set", "backoff-base", "0.5"), 2, "for backoff_base")  # named as spelt


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["set", "max_retry", "3"], ["max_retry", "max_retries", "lease"]),
        (["get", "max_retry"], ["max_retry", "max_retries", "lease"]),
        (["set", "max_retries", "three"], ["three", "max_retries"]),
        (["set", "max_retries", "-1"], ["-1", "max_retries"]),
        (["set", "lease", "0"], ["lease"]),
        (["set", "backoff_base", "0.5"], ["backoff_base"]),
        (["set", "poll_interval", "nan"], ["poll_interval"]),
        (["set", "lease"], ["VALUE"]),
    ],
)
def test_config_bad_key_or_value_exits_2_and_writes_nothing(
    cli: Cli, cli_target: str, args: list[str], words: list[str]
) -> None:
    assert_error(cli("config", *args), 2, *words)
    assert_wrote_nothing(cli_target)


def test_config_bad_value_leaves_the_setting(cli: Cli) -> None:
    ok(cli("config", "set", "lease", "12"))
    assert_error(cli("config", "set", "lease", "-5"), 2, "lease")
    assert ok(cli("config", "get", "lease")).stdout == "12\n"


# --- workers ------------------------------------------------------------------------------


def test_worker_list_empty(cli: Cli) -> None:
    result = ok(cli("worker", "list"))
    assert result.out == b"" and "no live workers" in result.stderr
    assert ok(cli("worker", "list", "--json")).json() == []


def test_worker_list_and_stop(cli: Cli, cli_target: str) -> None:
    block_on(fake_worker(cli_target, worker_id="w-1", host="box", pid=4242, running=2))
    data = ok(cli("worker", "list", "--json")).json()
    assert len(data) == 1
    assert set(data[0]) == WORKER_KEYS
    assert data[0]["id"] == "w-1" and data[0]["host"] == "box"
    assert data[0]["pid"] == 4242 and data[0]["running"] == 2
    assert data[0]["started_at"].endswith("Z") and data[0]["heartbeat_at"].endswith("Z")
    lines = ok(cli("worker", "list")).stdout.splitlines()
    assert lines[0].split() == ["ID", "HOST", "PID", "STARTED", "HEARTBEAT", "RUNNING"]
    assert lines[1].split()[:3] == ["w-1", "box", "4242"]

    assert ok(cli("worker", "stop")).stdout == "asked 1 worker to stop\n"
    assert block_on(heartbeat(cli_target, worker_id="w-1", running=0)) is True
    assert ok(cli("worker", "stop", "--json")).json() == {"asked": 1}


def test_worker_stop_with_no_workers(cli: Cli) -> None:
    assert ok(cli("worker", "stop")).stdout == "asked 0 workers to stop\n"
