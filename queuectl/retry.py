"""The retry policy: how long to wait before a retry, and whether a job has any left.

Pure functions: the worker asks, the store writes the answer.
"""

from __future__ import annotations

import math

from queuectl.config import Settings
from queuectl.models import JobState


def backoff_seconds(attempts: int, base: float, ceiling: float) -> float:
    """``min(base ** attempts, ceiling)``, without overflow for any ``attempts``.

    Compared in log space so that ``2 ** 10_000`` never gets computed.
    """
    if attempts <= 0 or base <= 1:
        return min(1.0, ceiling)
    if attempts * math.log(base) >= math.log(ceiling):
        return ceiling
    return float(base**attempts)


def next_state(attempts: int, max_retries: int) -> JobState:
    """``failed`` (to be retried) while attempts remain, else ``dead``."""
    return JobState.FAILED if attempts <= max_retries else JobState.DEAD


def retry_delay(attempts: int, settings: Settings) -> float:
    """Seconds to wait before the retry that follows ``attempts`` attempts."""
    return backoff_seconds(attempts, settings.backoff_base, settings.backoff_max)
