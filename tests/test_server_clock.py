"""The PostgreSQL worker's estimate of the server's clock, from the samples it is given."""

from __future__ import annotations

import time

import pytest

from queuectl.storage.postgres import server_clock
from queuectl.storage.postgres.server_clock import ServerClock

AHEAD = 100.0  # the server's clock, seconds ahead of this host's


def sample(clock: ServerClock, *, round_trip: float, skew: float = 0.0, ahead: float = AHEAD) -> None:
    """A sample of a server ``ahead``, which read its clock ``skew`` after the round trip's middle."""
    sent = time.time()
    clock.sample(sent=sent, received=sent + round_trip, server_time=sent + round_trip / 2 + skew + ahead)


def offset(clock: ServerClock) -> float:
    return clock() - time.time()


def test_the_quickest_sample_stands_against_slower_ones() -> None:
    clock = ServerClock()
    sample(clock, round_trip=0.0002)
    # A slow answer whose server read its clock early in the round trip: off by 20 ms.
    sample(clock, round_trip=0.05, skew=-0.02)
    assert offset(clock) == pytest.approx(AHEAD, abs=0.002)


def test_a_quicker_sample_replaces_a_slower_one() -> None:
    clock = ServerClock()
    sample(clock, round_trip=0.05, skew=0.02)  # the first is taken, however slow
    assert offset(clock) == pytest.approx(AHEAD + 0.02, abs=0.002)
    sample(clock, round_trip=0.0002)
    assert offset(clock) == pytest.approx(AHEAD, abs=0.002)


def test_a_clock_set_since_the_best_sample_wins_at_once() -> None:
    clock = ServerClock()
    sample(clock, round_trip=0.0002)
    # Slower, but it cannot be reconciled with the best: a clock moved by a second.
    sample(clock, round_trip=0.01, ahead=AHEAD + 1)
    assert offset(clock) == pytest.approx(AHEAD + 1, abs=0.002)


def test_the_best_sample_gives_way_once_it_is_old(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ServerClock()
    sample(clock, round_trip=0.0002)
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + server_clock.KEEP + 1)
    sample(clock, round_trip=0.01, skew=0.004)
    assert offset(clock) == pytest.approx(AHEAD + 0.004, abs=0.002)


def test_a_sample_too_slow_to_trust_is_dropped() -> None:
    clock = ServerClock()
    sample(clock, round_trip=0.0002)
    sample(clock, round_trip=server_clock.MAX_ROUND_TRIP + 0.1, ahead=AHEAD + 30)
    assert offset(clock) == pytest.approx(AHEAD, abs=0.002)
