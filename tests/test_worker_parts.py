"""The worker's parts on their own: the retry decision, outcomes, slot accounting, the fault hook."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from queuectl.config import Settings
from queuectl.models import Claim, EndedAttempt, Job, JobState, Outcome
from queuectl.retry import Decision, decide
from queuectl.storage.base import Store
from queuectl.testing import CRASH_ENV, Faults
from queuectl.worker.runner import RunResult
from queuectl.worker.slots import Running, Slots

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def job(*, attempts: int, max_retries: int = 2) -> Job:
    return Job(
        id="j",
        command="true",
        queue="default",
        priority=0,
        timeout=None,
        max_retries=max_retries,
        run_at=NOW,
        state=JobState.PROCESSING,
        attempts=attempts,
        created_at=NOW,
        updated_at=NOW,
    )


# --- the retry decision -----------------------------------------------------------------------


def test_decide_success_failure_and_the_last_attempt() -> None:
    settings = Settings(backoff_base=2.0, backoff_max=3600.0)
    assert decide(job(attempts=1), None, settings) == Decision(state=JobState.COMPLETED, retry_in=0.0)
    assert decide(job(attempts=1), "exit code 3", settings) == Decision(state=JobState.FAILED, retry_in=2.0)
    assert decide(job(attempts=2), "exit code 3", settings) == Decision(state=JobState.FAILED, retry_in=4.0)
    # max_retries 2: the third attempt was the last one.
    assert decide(job(attempts=3), "timed out after 1s", settings) == Decision(state=JobState.DEAD)
    assert decide(job(attempts=3), None, settings).state is JobState.COMPLETED


def test_decide_caps_the_backoff() -> None:
    settings = Settings(backoff_base=2.0, backoff_max=60.0)
    assert decide(job(attempts=10_000, max_retries=10_000), "exit code 1", settings).retry_in == 60.0


# --- outcomes -------------------------------------------------------------------------------------


def test_outcome_of_keeps_the_result_as_it_is() -> None:
    result = RunResult(
        exit_code=3,
        error="exit code 3",
        stdout=b"out",
        stderr=b"err",
        started_at=NOW,
        finished_at=NOW + timedelta(seconds=1),
        pid=42,
    )
    decision = Decision(state=JobState.FAILED, retry_in=8.0)
    outcome = Outcome.of(decision, result)
    assert outcome.result is result and outcome.decision is decision
    # What the stores read, under the names they read.
    assert (outcome.state, outcome.retry_in) == (JobState.FAILED, 8.0)
    assert (outcome.exit_code, outcome.error, outcome.stdout, outcome.stderr) == (
        3,
        "exit code 3",
        b"out",
        b"err",
    )
    assert (outcome.started_at, outcome.finished_at) == (NOW, NOW + timedelta(seconds=1))


def test_outcome_from_keywords_equals_the_same_values_paired() -> None:
    given = Outcome(
        state=JobState.DEAD,
        exit_code=None,
        error="worker lost",
        started_at=None,
        finished_at=NOW,
        retry_in=0.0,
    )
    paired = Outcome.of(
        Decision(state=JobState.DEAD),
        EndedAttempt(exit_code=None, error="worker lost", started_at=None, finished_at=NOW),
    )
    assert given == paired and hash(given) == hash(paired)
    assert (given.stdout, given.stderr) == (b"", b"")


# --- slot accounting ------------------------------------------------------------------------------


class RecordingStore:
    """Answers ``claim`` and ``finish_and_claim`` with made-up claims, noting each ``limit`` and
    how many slots were free while the call was in flight."""

    def __init__(self, slots: list[Slots], available: int) -> None:
        self.slots = slots
        self.available = available
        self.limits: list[int] = []
        self.free_during: list[int] = []

    def _take(self, limit: int) -> list[Claim]:
        self.limits.append(limit)
        self.free_during.append(self.slots[0].free())
        taken = min(limit, self.available)
        self.available -= taken
        return [Claim(job=job(attempts=1), token=f"t{self.available + n}") for n in range(taken)]

    async def claim(
        self, *, worker_id: str, queues: Sequence[str] | None, limit: int, lease: float, flow: bool = False
    ) -> list[Claim]:
        await asyncio.sleep(0)
        return self._take(limit)

    async def finish_and_claim(
        self, claim: Claim, outcome: Outcome, **arguments: Any
    ) -> tuple[bool, list[Claim]]:
        await asyncio.sleep(0)
        return True, self._take(arguments["limit"])


def slots_with(count: int, available: int) -> tuple[Slots, RecordingStore]:
    holder: list[Slots] = []
    store = RecordingStore(holder, available)
    slots = Slots(cast(Store, store), count=count, worker_id="w", queues=None)
    holder.append(slots)
    return slots, store


async def occupy(slots: Slots, claims: list[Claim]) -> list[Running]:
    task = asyncio.create_task(asyncio.sleep(0))
    running = [Running(claim=claim, task=task, lease_deadline=0.0) for claim in claims]
    for entry in running:
        slots.add(entry)
    await task
    return running


OUTCOME = Outcome(state=JobState.COMPLETED, exit_code=0, error=None, started_at=NOW, finished_at=NOW)


async def test_claims_in_flight_reserve_their_slots() -> None:
    slots, store = slots_with(count=3, available=1)
    claims = await slots.claim(lease=30.0)
    assert (store.limits, store.free_during, len(claims)) == ([3], [0], 1)
    assert slots.free() == 3  # the reservation ends with the call; the caller adds what it got
    await occupy(slots, claims)
    assert slots.free() == 2


async def test_a_finished_job_claims_for_its_own_slot_and_the_free_ones() -> None:
    slots, store = slots_with(count=3, available=10)
    (first,) = await occupy(slots, [Claim(job=job(attempts=1), token="first")])
    accepted, claims = await slots.finish_and_claim(first, OUTCOME, lease=30.0)
    assert accepted and len(claims) == 3 and store.limits == [3] and store.free_during == [0]
    assert first.refilled  # its slot and both free ones were filled: the dispatcher need not wake
    assert slots.vacate(first) is False


async def test_a_finished_job_that_refilled_less_than_it_asked_wakes_the_dispatcher() -> None:
    slots, _ = slots_with(count=2, available=1)
    (first,) = await occupy(slots, [Claim(job=job(attempts=1), token="first")])
    _, claims = await slots.finish_and_claim(first, OUTCOME, lease=30.0)
    assert len(claims) == 1 and not first.refilled
    assert slots.vacate(first) is True


async def test_closed_slots_claim_nothing() -> None:
    slots, store = slots_with(count=2, available=10)
    (first,) = await occupy(slots, [Claim(job=job(attempts=1), token="first")])
    slots.closed = True
    assert slots.free() == 0
    _, claims = await slots.finish_and_claim(first, OUTCOME, lease=30.0)
    assert (store.limits, claims) == ([0], [])
    assert slots.vacate(first) is True  # the shutdown waits to hear of every finished job


# --- the fault hook ---------------------------------------------------------------------------


def test_faults_read_the_variable() -> None:
    assert Faults.from_environ({}) is None
    assert Faults.from_environ({CRASH_ENV: ""}) is None
    exited = Faults.from_environ({CRASH_ENV: "exited:SIGSTOP"})
    assert exited is not None and (exited.point, exited.how) == ("exited", "SIGSTOP")
    claimed = Faults.from_environ({CRASH_ENV: "claimed"})
    assert claimed is not None and claimed.how == "SIGKILL"
    with pytest.raises(ValueError, match="unknown point"):
        Faults.from_environ({CRASH_ENV: "claimd"})
    with pytest.raises(RuntimeError, match="test fault at heartbeat"):
        Faults("heartbeat", "raise").at("heartbeat")
    Faults("heartbeat", "raise").at("claimed")  # another point: nothing happens


@pytest.mark.parametrize(("value", "imported"), [(None, False), ("exited:SIGSTOP", True)])
def test_the_fault_hook_is_imported_only_when_asked_for(value: str | None, imported: bool) -> None:
    env = {key: text for key, text in os.environ.items() if key != CRASH_ENV}
    if value is not None:
        env[CRASH_ENV] = value
    probe = "import sys, queuectl.worker.pool; print('queuectl.testing' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(imported)
