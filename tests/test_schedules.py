"""Schedules: one job per due time however many workers run, missed times, overlap, pauses,
daylight-saving changes, the command line's refusals, and (PostgreSQL) the database's clock.

Worker tests run real ``queuectl worker start`` processes; races run real processes released
together. Waits are conditions with deadlines; where a test needs due times to pass, it waits
for the clock to pass them, never for a fixed time.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from helpers import (
    DEADLINE,
    Cli,
    assert_error,
    assert_wrote_nothing,
    block_on,
    invoke,
    is_postgres,
    ok,
    queuectl_env,
    run_queuectl,
    start_worker,
    wait_for,
    wait_until,
)

from queuectl import Queue
from queuectl.models import Job, JobState, NewJob, isoformat
from queuectl.scheduling import Schedule, ScheduleNotFound, ScheduleTick, Timing, new_schedule, scheduled_job

SECOND = timedelta(seconds=1)


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
async def queue(store_target: str) -> AsyncIterator[Queue]:
    async with await Queue.open(store_target) as opened:
        yield opened


async def tick(queue: Queue) -> ScheduleTick:
    """What one worker's look for due schedules does."""
    settings = await queue.settings()
    return await queue.store.enqueue_due_schedules(
        lambda template, due: scheduled_job(template, due, settings)
    )


async def scheduled(queue: Queue, name: str) -> list[Job]:
    """The jobs schedule ``name`` enqueued, by due time."""
    jobs = [job for job in await queue.list_jobs() if job.schedule == name]
    return sorted(jobs, key=lambda job: job.run_at)


def jobs_of(target: str, name: str) -> list[Job]:
    async def read() -> list[Job]:
        async with await Queue.open(target) as queue:
            return await scheduled(queue, name)

    return block_on(read())


def schedules(target: str) -> dict[str, Schedule]:
    async def read() -> dict[str, Schedule]:
        async with await Queue.open(target) as queue:
            return {item.name: item for item in await queue.list_schedules()}

    return block_on(read())


async def clock_past(moment: datetime) -> None:
    """Wait until the wall clock has passed ``moment`` (the test server runs on this host)."""

    async def passed() -> bool:
        return datetime.now(UTC) > moment

    await wait_for(passed, what=f"the clock to pass {moment}")


def assert_one_per_due_time(jobs: list[Job]) -> None:
    """Due times one second apart, each once, none missing between the first and the last, and
    each enqueued within a second of its due time."""
    due_times = [job.run_at for job in jobs]
    assert len(set(due_times)) == len(due_times), f"a due time enqueued twice: {due_times}"
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(due_times)]
    assert all(abs(gap - 1.0) < 0.001 for gap in gaps), f"due times not one second apart: {gaps}"
    late = [(job.created_at - job.run_at).total_seconds() for job in jobs]
    assert all(-0.001 < lateness < 1.0 for lateness in late), f"enqueued late: {late}"


# --- one job per due time --------------------------------------------------------------------


@pytest.mark.slow
def test_three_workers_make_one_job_per_due_time(
    store_target: str, workers: list[subprocess.Popen[str]]
) -> None:
    ok_add = run_queuectl(store_target, "schedule", "add", "tick", "--every", "1s", "-c", "true")
    assert ok_add.returncode == 0, ok_add.stderr
    for _ in range(3):
        workers.append(start_worker(store_target, "--count", "2"))
    wait_until(lambda: len(jobs_of(store_target, "tick")) >= 4, what="four due times")
    stopped = run_queuectl(store_target, "worker", "stop")
    assert stopped.returncode == 0, stopped.stderr
    for process in workers:
        assert process.wait(DEADLINE) == 0
    jobs = jobs_of(store_target, "tick")
    assert_one_per_due_time(jobs)
    assert all(job.state is JobState.COMPLETED for job in jobs)
    assert schedules(store_target)["tick"].last_job == jobs[-1].id


@pytest.mark.slow
def test_two_workers_started_at_once_enqueue_a_due_time_once(
    store_target: str, workers: list[subprocess.Popen[str]]
) -> None:
    assert (
        run_queuectl(store_target, "schedule", "add", "tick", "--every", "1s", "-c", "true").returncode == 0
    )
    first_due = schedules(store_target)["tick"].next_run_at
    wait_until(lambda: time.time() > first_due.timestamp() + 0.2, what="the first due time to pass")
    # Both find the same missed due time as they start.
    workers.extend([start_worker(store_target), start_worker(store_target)])
    wait_until(lambda: len(jobs_of(store_target, "tick")) >= 3, what="three due times")
    for process in workers:
        process.terminate()
        assert process.wait(DEADLINE) == 0
    assert_one_per_due_time(jobs_of(store_target, "tick"))


_RACER = """
import asyncio, os, sys, time
from queuectl import Queue
from queuectl.scheduling import scheduled_job

async def main(target, ready, go):
    async with await Queue.open(target) as queue:
        settings = await queue.settings()
        await queue.store.list_schedules()  # connected and migrated: only the race is left
        open(ready, "w").close()
        while not os.path.exists(go):
            time.sleep(0.0005)
        tick = await queue.store.enqueue_due_schedules(lambda t, due: scheduled_job(t, due, settings))
        print(len(tick.enqueued))

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.slow
async def test_processes_released_at_the_same_instant_enqueue_a_due_time_once(
    queue: Queue, store_target: str, tmp_path: Path
) -> None:
    added = await queue.add_schedule("race", every=1, command="true")
    await clock_past(added.next_run_at)
    go = tmp_path / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, store_target, str(tmp_path / f"ready-{n}"), str(go)],
            env=queuectl_env(store_target),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(6)
    ]
    try:
        wait_until(lambda: len(list(tmp_path.glob("ready-*"))) == 6, what="six racers at the line")
        go.touch()
        outputs = [racer.communicate(timeout=DEADLINE) for racer in racers]
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
    assert all(racer.returncode == 0 for racer in racers), [err for _, err in outputs]
    enqueued = [int(out) for out, _ in outputs]
    jobs = await scheduled(queue, "race")
    # Each due time once. The racers set off within milliseconds of each other, but a loaded
    # machine may hold one back past the next due time (a second later): that one it makes.
    assert sum(enqueued) == len(jobs) >= 1 and set(enqueued) <= {0, 1}
    due_times = [job.run_at for job in jobs]
    assert len(set(due_times)) == len(due_times), f"a due time enqueued twice: {due_times}"
    assert jobs[0].run_at <= datetime.now(UTC)
    assert (await queue.list_schedules())[0].next_run_at > jobs[-1].run_at


# --- missed due times, overlap, pauses ---------------------------------------------------------


async def test_missed_due_times_make_one_job_for_the_latest(queue: Queue) -> None:
    added = await queue.add_schedule("tick", every="1s", command="true")
    assert (await tick(queue)).enqueued == []  # not due yet
    await clock_past(added.next_run_at + 3.3 * SECOND)
    result = await tick(queue)
    (job,) = result.enqueued
    now = datetime.now(UTC)
    missed = (job.run_at - added.next_run_at).total_seconds()
    assert missed >= 3 and abs(missed - round(missed)) < 0.001, "the latest missed due time"
    assert job.run_at <= now < job.run_at + SECOND
    assert job.schedule == "tick" and job.command == "true" and job.state is JobState.PENDING
    (after,) = await queue.list_schedules()
    assert after.next_run_at == job.run_at + SECOND and after.last_job == job.id
    assert result.next_due_in is not None and 0 < result.next_due_in <= 1
    assert (await tick(queue)).enqueued == []
    assert [job.id for job in await scheduled(queue, "tick")] == [job.id]


@pytest.mark.slow
def test_no_overlap_skips_due_times_while_the_previous_job_runs(
    store_target: str, tmp_path: Path, workers: list[subprocess.Popen[str]]
) -> None:
    release = tmp_path / "release"
    command = f"while [ ! -e {release} ]; do sleep 0.05; done"
    added = run_queuectl(
        store_target, "schedule", "add", "slow", "--every", "1s", "--no-overlap", "-c", command
    )
    assert added.returncode == 0, added.stderr
    workers.append(start_worker(store_target, "--count", "4"))
    wait_until(lambda: len(jobs_of(store_target, "slow")) == 1, what="the first job")
    (first,) = jobs_of(store_target, "slow")
    # Three due times pass while it runs: each moves the schedule on and enqueues nothing.
    wait_until(
        lambda: schedules(store_target)["slow"].next_run_at >= first.run_at + 4 * SECOND,
        what="three due times to pass",
    )
    assert [job.id for job in jobs_of(store_target, "slow")] == [first.id]
    assert schedules(store_target)["slow"].last_job == first.id
    release.touch()
    wait_until(lambda: len(jobs_of(store_target, "slow")) == 2, what="the next due time's job")
    second = jobs_of(store_target, "slow")[1]
    assert second.run_at >= first.run_at + 4 * SECOND
    assert block_on(_final_state(store_target, first.id)) is JobState.COMPLETED


async def _final_state(target: str, job_id: str) -> JobState:
    async with await Queue.open(target) as queue:
        return (await queue.wait_for(job_id, timeout=DEADLINE)).state


async def test_a_paused_schedule_enqueues_nothing_and_resumes_from_now(queue: Queue) -> None:
    added = await queue.add_schedule("tick", every=1, command="true")
    paused = await queue.pause_schedule("tick")
    assert paused.paused and paused.next_run_at == added.next_run_at
    await clock_past(added.next_run_at + 1.5 * SECOND)
    assert (await tick(queue)).enqueued == []
    resumed_at = datetime.now(UTC)
    resumed = await queue.resume_schedule("tick")
    assert not resumed.paused
    assert resumed_at + 0.5 * SECOND < resumed.next_run_at < resumed_at + 2 * SECOND, "from now"
    assert (await queue.resume_schedule("tick")).next_run_at == resumed.next_run_at  # no change
    assert (await tick(queue)).enqueued == []
    await clock_past(resumed.next_run_at)
    (job,) = (await tick(queue)).enqueued
    assert job.run_at == resumed.next_run_at, "none of the times missed while paused"


async def test_a_replaced_schedule_keeps_its_pause_and_last_job(queue: Queue) -> None:
    added = await queue.add_schedule("tick", every=1, command="true")
    await clock_past(added.next_run_at)
    (job,) = (await tick(queue)).enqueued
    await queue.pause_schedule("tick")
    replaced = await queue.add_schedule(
        "tick", cron="*/5 * * * *", tz="Europe/Berlin", command="make", priority=3
    )
    assert (replaced.cron, replaced.every, replaced.tz) == ("*/5 * * * *", None, "Europe/Berlin")
    assert replaced.paused and replaced.last_job == job.id
    assert replaced.created_at == added.created_at
    assert replaced.job == {"command": "make", "priority": 3}
    assert replaced.next_run_at.minute % 5 == 0 and replaced.next_run_at.second == 0


async def test_the_scheduled_job_is_the_one_given_with_settings_filled_in_when_it_is_due(
    queue: Queue, tmp_path: Path
) -> None:
    template = NewJob(id="ignored", command="make", queue="io", priority=4, env={"A": "1"}, cwd=str(tmp_path))
    added = await queue.add_schedule("build", template, every="1s", no_overlap=True)
    assert added.job == {
        "command": "make",
        "queue": "io",
        "priority": 4,
        "cwd": str(tmp_path),
        "env": {"A": "1"},
    }
    assert added.no_overlap and added.to_dict()["overlap"] == "skip"
    await queue.set_setting("max_retries", "7")
    await clock_past(added.next_run_at)
    (job,) = (await tick(queue)).enqueued
    stored = await queue.get(job.id)
    assert (stored.command, stored.queue, stored.priority, stored.env, stored.cwd) == (
        "make",
        "io",
        4,
        {"A": "1"},
        str(tmp_path),
    )
    assert stored.max_retries == 7 and stored.schedule == "build" and stored.id != "ignored"


async def test_a_due_time_whose_unique_key_is_taken_is_skipped(queue: Queue) -> None:
    added = await queue.add_schedule("sync", every=1, command="true", unique_key="sync")
    await clock_past(added.next_run_at)
    (first,) = (await tick(queue)).enqueued
    assert first.unique_key == "sync"
    await clock_past((await queue.list_schedules())[0].next_run_at)
    assert (await tick(queue)).enqueued == []  # the first is still pending: no second one
    (after,) = await queue.list_schedules()
    assert after.last_job == first.id and after.next_run_at > datetime.now(UTC)
    assert [job.id for job in await scheduled(queue, "sync")] == [first.id]


async def test_unknown_schedules_are_not_found(queue: Queue) -> None:
    for change in (queue.remove_schedule, queue.pause_schedule, queue.resume_schedule):
        with pytest.raises(ScheduleNotFound, match="no schedule named 'nope'"):
            await change("nope")
    await queue.add_schedule("tick", every=60, command="true")
    removed = await queue.remove_schedule("tick")
    assert removed.name == "tick" and await queue.list_schedules() == []


async def test_no_schedules_cost_one_read(queue: Queue) -> None:
    assert await tick(queue) == ScheduleTick([], None)
    await queue.add_schedule("later", cron="@yearly", command="true")
    result = await tick(queue)
    assert result.enqueued == [] and result.next_due_in is not None and result.next_due_in > 0


# --- due times: cron across daylight-saving changes, pure ----------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")


def due_times(timing: Timing, start: datetime, end: datetime, *, step: timedelta) -> list[datetime]:
    """The due times a worker looking every ``step`` from ``start`` to ``end`` enqueues, as the
    stores compute them (``latest_due``, then ``after_due``)."""
    next_run_at = timing.first_after(start)
    enqueued = []
    now = start
    while now < end:
        if next_run_at <= now:
            due = timing.latest_due(next_run_at, now)
            enqueued.append(due)
            next_run_at = timing.after_due(due, now)
        now += step
    return enqueued


def test_a_daily_0230_job_runs_once_on_the_spring_forward_day() -> None:
    timing = Timing(cron="30 2 * * *", tz="Europe/Berlin")
    # 2026-03-29: clocks go from 02:00 to 03:00, so 02:30 never happens; it runs at 03:00.
    start = datetime(2026, 3, 28, 12, tzinfo=BERLIN).astimezone(UTC)
    runs = due_times(timing, start, start + timedelta(days=3), step=timedelta(minutes=1))
    local = [run.astimezone(BERLIN) for run in runs]
    assert [(moment.day, moment.hour, moment.minute) for moment in local] == [
        (29, 3, 0),
        (30, 2, 30),
        (31, 2, 30),
    ]
    assert runs[0] == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


def test_a_daily_0230_job_runs_once_on_the_fall_back_day() -> None:
    timing = Timing(cron="30 2 * * *", tz="Europe/Berlin")
    # 2026-10-25: clocks go from 03:00 back to 02:00, so 02:30 happens twice; it runs the first time.
    start = datetime(2026, 10, 24, 12, tzinfo=BERLIN).astimezone(UTC)
    runs = due_times(timing, start, start + timedelta(days=3), step=timedelta(minutes=1))
    assert runs == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # 02:30 CEST
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),  # 02:30 CET
        datetime(2026, 10, 27, 1, 30, tzinfo=UTC),
    ]
    # A worker looking from inside the repeated hour, after the run, does not run it again.
    second_pass = datetime(2026, 10, 25, 2, 15, fold=1, tzinfo=BERLIN).astimezone(UTC)
    assert timing.next_after(second_pass) == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)


def test_an_hourly_job_keeps_every_real_hour_across_both_changes() -> None:
    new_york = ZoneInfo("America/New_York")
    timing = Timing(cron="@hourly", tz="America/New_York")
    for day in (datetime(2026, 3, 8, 0, 30, tzinfo=new_york), datetime(2026, 11, 1, 0, 30, tzinfo=new_york)):
        start = day.astimezone(UTC)
        runs = due_times(timing, start, start + timedelta(hours=4), step=timedelta(minutes=5))
        # Spring: 01:00, then 03:00 EDT an hour later. Autumn: 01:00 EDT and 01:00 EST, both real.
        assert {later - earlier for earlier, later in itertools.pairwise(runs)} == {timedelta(hours=1)}
        assert len(runs) == 4


def test_missed_cron_due_times_give_the_latest_one() -> None:
    timing = Timing(cron="*/10 * * * *")
    next_run_at = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
    now = datetime(2026, 1, 1, 5, 37, tzinfo=UTC)
    due = timing.latest_due(next_run_at, now)
    assert due == datetime(2026, 1, 1, 5, 30, tzinfo=UTC)
    assert timing.after_due(due, now) == datetime(2026, 1, 1, 5, 40, tzinfo=UTC)


def test_intervals_keep_their_grid_after_missed_due_times() -> None:
    timing = Timing(every=90.0)
    next_run_at = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    now = next_run_at + timedelta(seconds=1000)
    due = timing.latest_due(next_run_at, now)
    assert due == next_run_at + timedelta(seconds=990)
    assert timing.after_due(due, now) == next_run_at + timedelta(seconds=1080)


@pytest.mark.parametrize(
    ("nickname", "fields"),
    [("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"), ("@weekly", "0 0 * * 0"), ("@monthly", "0 0 1 * *")],
)
def test_nicknames_are_their_five_fields(nickname: str, fields: str) -> None:
    moment = datetime(2026, 6, 17, 13, 45, tzinfo=UTC)
    assert Timing(cron=nickname).next_after(moment) == Timing(cron=fields).next_after(moment)
    assert Timing(cron="@yearly").next_after(moment) == datetime(2027, 1, 1, tzinfo=UTC)


def test_names_ranges_steps_and_lists() -> None:
    timing = Timing(cron="15,45 9-17/4 * jan-mar mon-fri")
    moment = datetime(2026, 1, 2, 17, 50, tzinfo=UTC)  # a Friday
    assert timing.next_after(moment) == datetime(2026, 1, 5, 9, 15, tzinfo=UTC)  # Monday


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"cron": "61 * * * *"}, "bad minute"),
        ({"cron": "* * * *"}, "five fields"),
        ({"cron": "0 0 30 feb *"}, "day-of-month"),
        ({"cron": "@often"}, "nicknames"),
        ({"cron": "@daily", "tz": "Mars/Olympus"}, "unknown time zone"),
        ({"cron": "@daily", "tz": "../etc/passwd"}, "unknown time zone"),
        ({"every": "0.5s"}, "at least 1 second"),
        ({"every": "soon"}, "every must be"),
        ({"every": "1m", "tz": "UTC"}, "tz"),
        ({}, "cron expression or an interval"),
    ],
)
def test_refused_timings(arguments: dict[str, Any], words: str) -> None:
    from queuectl.errors import InvalidInput

    with pytest.raises(InvalidInput, match=words):
        new_schedule("name", job={"command": "true"}, **arguments)


@pytest.mark.parametrize(
    ("job", "words"),
    [
        ({"command": "true", "id": "fixed"}, "no id"),
        ({"command": "true", "run_at": "2030-01-01T00:00:00Z"}, "no run_at"),
        ({"command": "true", "delay": "5m"}, "no delay"),
        ({"command": "true", "after": ["other"]}, "no after"),
        ({"comand": "true"}, "comand"),
        ({"command": ""}, "command"),
    ],
)
def test_refused_jobs(job: dict[str, Any], words: str) -> None:
    from queuectl.errors import InvalidInput

    with pytest.raises(InvalidInput, match=words):
        new_schedule("name", every=60, job=job)


# --- the command line ----------------------------------------------------------------------------


def test_schedule_commands(cli: Cli) -> None:
    added = ok(
        cli("schedule", "add", "nightly", "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "-c", "backup.sh")
    )
    assert added.stdout.startswith("nightly: next run 20")
    ok(
        cli(
            "schedule",
            "add",
            "poll",
            "--every",
            "5m",
            "--no-overlap",
            "-c",
            "fetch",
            "--queue",
            "io",
            "--priority",
            "2",
        )
    )
    ok(cli("schedule", "add", "report", "--cron", "@weekly", '{"command": "make report", "max_retries": 0}'))
    listed = ok(cli("schedule", "list", "--json")).json()
    assert [item["name"] for item in listed] == ["nightly", "poll", "report"]
    nightly, poll, report = listed
    assert set(nightly) == {
        "name",
        "cron",
        "every",
        "tz",
        "next_run_at",
        "last_job",
        "paused",
        "overlap",
        "job",
        "created_at",
        "updated_at",
    }
    assert (nightly["cron"], nightly["every"], nightly["tz"], nightly["overlap"]) == (
        "30 2 * * *",
        None,
        "Europe/Berlin",
        "allow",
    )
    assert datetime.fromisoformat(nightly["next_run_at"]).astimezone(BERLIN).strftime("%H:%M") in (
        "02:30",
        "03:00",
    )
    assert (poll["cron"], poll["every"], poll["overlap"]) == (None, 300.0, "skip")
    assert poll["job"] == {"command": "fetch", "queue": "io", "priority": 2}
    assert report["job"] == {"command": "make report", "max_retries": 0}
    assert ok(cli("schedule", "pause", "poll")).stdout == "poll\n"
    table = ok(cli("schedule", "list")).stdout.splitlines()
    assert table[0].split() == ["NAME", "WHEN", "TZ", "NEXT", "RUN", "LAST", "JOB", "PAUSED", "OVERLAP"]
    assert table[2].split()[:3] == ["poll", "every", "5m"] and table[2].split()[-2:] == ["yes", "skip"]
    assert ok(cli("schedule", "resume", "poll", "--json")).json()["paused"] is False
    assert ok(cli("schedule", "remove", "report")).stdout == "report\n"
    assert [item["name"] for item in ok(cli("schedule", "list", "--json")).json()] == ["nightly", "poll"]


def test_unknown_schedule_names_exit_1(cli: Cli) -> None:
    for verb in ("remove", "pause", "resume"):
        assert_error(cli("schedule", verb, "nope"), 1, "no schedule named 'nope'")


def test_an_empty_list_says_so(cli: Cli) -> None:
    empty = ok(cli("schedule", "list"))
    assert empty.stdout == "" and "no schedules" in empty.stderr
    assert ok(cli("schedule", "list", "--json")).json() == []


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (("--cron", "61 * * * *", "-c", "true"), "invalid cron expression"),
        (("--cron", "* * *", "-c", "true"), "five fields"),
        (("--cron", "@daily", "--tz", "Nowhere/Land", "-c", "true"), "unknown time zone"),
        (("--every", "0s", "-c", "true"), "at least 1 second"),
        (("--every", "1m", "--tz", "UTC", "-c", "true"), "--tz is for --cron"),
        (("--every", "1m", "--cron", "@daily", "-c", "true"), "not both"),
        (("-c", "true"), "--cron EXPR or --every"),
        (("--every", "1m"), "--command"),
        (("--every", "1m", '{"command": "true", "id": "x"}'), "no id"),
        (("--every", "1m", '{"command": "true"}', "--queue", "q"), "not both"),
        (("--every", "1m", "-c", "true", "--priority", "high"), "priority"),
        (("--every", "1m", "[1]"), "object"),
    ],
)
def test_refused_schedules_exit_2_and_write_nothing(
    cli: Cli, cli_target: str, arguments: tuple[str, ...], words: str
) -> None:
    assert_error(cli("schedule", "add", "name", *arguments), 2, words)
    assert_wrote_nothing(cli_target)
    if is_postgres(cli_target):
        assert schedules(cli_target) == {}


def test_every_command_has_help_with_an_example() -> None:
    for verb in ("add", "list", "remove", "pause", "resume"):
        shown = ok(invoke("schedule", verb, "--help", env={"COLUMNS": "80"})).stdout
        assert "Examples:" in shown and f"queuectl schedule {verb}" in shown
        assert all(len(line) <= 80 for line in shown.splitlines())
    listed = ok(invoke("schedule", "--help", env={"COLUMNS": "80"})).stdout.split("Commands:\n", 1)[1]
    assert "..." not in listed
    add_help = ok(invoke("schedule", "add", "--help")).stdout
    for option in ("--cron", "--tz", "--every", "--no-overlap", "--command", "--queue", "--timeout", "--env"):
        assert option in add_help
    for option in ("--id", "--run-at", "--delay"):
        assert f"{option} " not in add_help


# --- PostgreSQL: the database's clock ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
def test_a_worker_with_a_wrong_clock_enqueues_on_the_databases_time(
    postgres_target: str, tmp_path: Path, workers: list[subprocess.Popen[str]]
) -> None:
    from test_faults_postgres import skewed

    behind = skewed(-300)  # skips the test when libfaketime is missing
    assert (
        run_queuectl(postgres_target, "schedule", "add", "tick", "--every", "1s", "-c", "true").returncode
        == 0
    )
    log = tmp_path / "worker.log"
    with log.open("w") as stderr:
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "queuectl", "worker", "start"],
                env=queuectl_env(postgres_target, behind),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                text=True,
            )
        )
    # Judged by its own clock, nothing would be due for five minutes.
    wait_until(lambda: len(jobs_of(postgres_target, "tick")) >= 3, timeout=30, what="three due times")
    workers[0].terminate()
    assert workers[0].wait(DEADLINE) == 0, log.read_text()
    jobs = jobs_of(postgres_target, "tick")
    assert_one_per_due_time(jobs)
    assert all(abs((job.run_at - datetime.now(UTC)).total_seconds()) < DEADLINE for job in jobs)
    assert "Traceback" not in log.read_text()


def test_the_job_field_names_its_schedule(cli: Cli, cli_target: str) -> None:
    ok(cli("schedule", "add", "tick", "--every", "1s", "-c", "true"))
    due = schedules(cli_target)["tick"].next_run_at

    async def run_one() -> str:
        async with await Queue.open(cli_target) as queue:
            await clock_past(due)
            (job,) = (await tick(queue)).enqueued
            return job.id

    job_id = block_on(run_one())
    shown = ok(cli("show", job_id, "--json")).json()
    assert shown["schedule"] == "tick" and shown["run_at"] == isoformat(due)
