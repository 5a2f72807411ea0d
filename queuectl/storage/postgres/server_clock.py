"""The database server's wall clock, as this host reads it.

Workers time their attempts (``started_at``, ``finished_at``, history entries, retention) with
the store's clock. Here that is the server's: hosts' clocks may disagree, and a job's times must
not depend on which host ran it. Reading ``now()`` for every timestamp would cost a round trip,
so the offset between this host's clock and the server's is measured instead, on statements the
worker sends anyway (registering, heartbeats), halfway through their round trip.
"""

from __future__ import annotations

import time

#: A sample whose round trip took longer is too uncertain to replace the offset (a reconnect, a
#: retry, a loaded server): its error is up to half the round trip.
MAX_ROUND_TRIP = 0.5


class ServerClock:
    """``clock()``: epoch seconds by the server's clock, estimated from the best recent sample."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._sampled = False

    def __call__(self) -> float:
        return time.time() + self._offset

    def sample(self, *, sent: float, received: float, server_time: float) -> None:
        """A statement sent at ``sent`` and answered at ``received`` (``time.time()``) read the
        server's clock as ``server_time``."""
        round_trip = received - sent
        if self._sampled and not 0 <= round_trip <= MAX_ROUND_TRIP:
            return
        self._offset = server_time - (sent + received) / 2
        self._sampled = True
