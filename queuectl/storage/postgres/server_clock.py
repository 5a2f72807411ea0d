"""The database server's wall clock, as this host reads it.

Workers time their attempts (``started_at``, ``finished_at``, history entries, retention) with
the store's clock. Here that is the server's: hosts' clocks may disagree, and a job's times must
not depend on which host ran it. Reading ``now()`` for every timestamp would cost a round trip,
so the offset between this host's clock and the server's is measured instead, on statements the
worker sends anyway (registering, heartbeats), halfway through their round trip.

A sample is off by at most half its round trip, so the quickest recent one is kept (as NTP
does): one slow answer on a loaded machine does not move every worker's clock by milliseconds.
"""

from __future__ import annotations

import time
from typing import NamedTuple

#: A sample whose round trip took longer is too uncertain to replace the offset (a reconnect, a
#: retry, a loaded server): its error is up to half the round trip.
MAX_ROUND_TRIP = 0.5

#: How long the quickest sample stands (seconds): clocks drift, so an old one gives way to the
#: next sample, however slow.
KEEP = 60.0


class _Sample(NamedTuple):
    round_trip: float
    offset: float
    taken: float  # time.monotonic()


class ServerClock:
    """``clock()``: epoch seconds by the server's clock, estimated from the best recent sample."""

    def __init__(self) -> None:
        self._best: _Sample | None = None
        self._offset = 0.0  # the best sample's, read for every timestamp

    def __call__(self) -> float:
        return time.time() + self._offset

    def sample(self, *, sent: float, received: float, server_time: float) -> None:
        """A statement sent at ``sent`` and answered at ``received`` (``time.time()``) read the
        server's clock as ``server_time``."""
        new = _Sample(received - sent, server_time - (sent + received) / 2, time.monotonic())
        best = self._best
        if best is None or (
            0 <= new.round_trip <= MAX_ROUND_TRIP
            and (
                new.round_trip <= best.round_trip
                or new.taken - best.taken > KEEP
                # The two cannot both be right: a clock was set since; start again from this one.
                or abs(new.offset - best.offset) > (new.round_trip + best.round_trip) / 2
            )
        ):
            self._best = new
            self._offset = new.offset
