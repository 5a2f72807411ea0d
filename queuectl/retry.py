"""The retry policy: what becomes of a job after an attempt, and how long until its retry.

Pure functions: the worker asks once per attempt (``decide``), the store writes the answer.
"""

from __future__ import annotations

import math

from queuectl.config import Settings
from queuectl.models import Decision, Job, JobState

__all__ = ("Decision", "backoff_seconds", "decide", "retry_delay")

_COMPLETED = Decision(state=JobState.COMPLETED)
_DEAD = Decision(state=JobState.DEAD)


def decide(job: Job, error: str | None, settings: Settings, exit_code: int | None = None) -> Decision:
    """After an attempt of ``job`` that failed because of ``error`` (``None``: it succeeded),
    its command having exited with ``exit_code`` (``None``: it did not exit by itself).

    ``completed``; ``dead`` at once for an exit code in the job's ``no_retry_exit_codes``;
    else ``failed``, to be retried after the backoff, while attempts remain (a job runs at
    most ``max_retries + 1`` times); else ``dead``.
    """
    if error is None:
        return _COMPLETED
    if job.no_retry_exit_codes and exit_code in job.no_retry_exit_codes:  # empty: one test
        return _DEAD
    attempts = job.attempts
    if attempts > job.max_retries:
        return _DEAD
    return Decision(state=JobState.FAILED, retry_in=retry_delay(attempts, settings))


def backoff_seconds(attempts: int, base: float, ceiling: float) -> float:
    """``min(base ** attempts, ceiling)``, without overflow for any ``attempts``.

    Compared in log space so that ``2 ** 10_000`` never gets computed.
    """
    if attempts <= 0 or base <= 1:
        return min(1.0, ceiling)
    if attempts * math.log(base) >= math.log(ceiling):
        return ceiling
    return float(base**attempts)


def retry_delay(attempts: int, settings: Settings) -> float:
    """Seconds to wait before the retry that follows ``attempts`` attempts."""
    return backoff_seconds(attempts, settings.backoff_base, settings.backoff_max)
