"""Test-only fault injection: make a worker fail at a precise point, in a real process or in-process.

``QUEUECTL_TEST_CRASH_AT=POINT[:HOW]`` in a worker's environment makes it fail at POINT:

- ``claimed``: just after a claim commits;
- ``spawned``: just after a job's shell starts;
- ``exited``: after a job ended, before its result is written;
- ``heartbeat``: when upkeep refreshes the worker's registration (through ``FaultyStore``).

HOW is the signal the process sends itself there (default ``SIGKILL``; ``SIGSTOP`` freezes it),
or ``raise``: a ``RuntimeError`` is raised there, a failure other than a ``StoreError``.

The worker imports this module only when the variable is set: unset, each point costs it one
falsy check. In-process tests wrap a real store in ``FaultyStore`` themselves.

``QUEUECTL_BUSY_TIMEOUT=SECONDS`` (``storage.sqlite.schema.BUSY_TIMEOUT_ENV``) shortens how
long a SQLite store waits for another process's lock (default 10 s), so that tests reach the
timeout without waiting it out; a value that is not a positive finite number is ignored. The
schema module imports this one for it only when the variable is set (``busy_timeout``).
"""

from __future__ import annotations

import inspect
import math
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from queuectl.storage.base import Store

__all__ = ("CRASH_ENV", "POINTS", "Faults", "FaultyStore", "busy_timeout")

CRASH_ENV = "QUEUECTL_TEST_CRASH_AT"
POINTS = ("claimed", "spawned", "exited", "heartbeat")


def busy_timeout(text: str, default: float) -> float:
    """``QUEUECTL_BUSY_TIMEOUT``'s ``text`` in seconds if it is a positive finite number, else ``default``."""
    try:
        seconds = float(text)
    except ValueError:
        return default
    return seconds if math.isfinite(seconds) and seconds > 0 else default


class Faults:
    """The fault ``QUEUECTL_TEST_CRASH_AT`` asks for: where, and how."""

    __slots__ = ("how", "point")

    def __init__(self, point: str, how: str = "SIGKILL") -> None:
        if point not in POINTS:
            raise ValueError(f"{CRASH_ENV}: unknown point {point!r} (one of {', '.join(POINTS)})")
        if how != "raise" and how not in signal.Signals.__members__:
            raise ValueError(f"{CRASH_ENV}: {how!r} is neither a signal name nor 'raise'")
        self.point = point
        self.how = how

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> Faults | None:
        point, _, how = environ.get(CRASH_ENV, "").partition(":")
        return cls(point, how or "SIGKILL") if point else None

    def at(self, point: str) -> None:
        """Fail here if ``point`` is the point asked for."""
        if point == self.point:
            self.fail()

    def on_spawn(self, pid: int) -> None:
        """The runner's ``on_start`` callback: the ``spawned`` point."""
        self.at("spawned")

    def fail(self) -> None:
        if self.how == "raise":
            raise RuntimeError(f"test fault at {self.point} ({CRASH_ENV})")
        os.kill(os.getpid(), signal.Signals[self.how])

    def wrap(self, store: Store) -> Store:
        """The store upkeep should use: one whose ``heartbeat`` fails, if that is the point."""
        if self.point != "heartbeat":
            return store
        faulty = FaultyStore(store)
        faulty.fail("heartbeat", self.fail)
        return faulty.as_store()


class FaultyStore:
    """A real store, except that the methods named with ``fail`` fail before reaching it.

    ``faulty.fail("heartbeat")``: from then on each ``heartbeat`` call raises ``RuntimeError``
    (or runs the fault given). Every call is logged in ``calls`` as ``(method, monotonic time,
    keyword arguments)``; ``failed_at`` is the monotonic time of the first failure.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.faults: dict[str, Callable[[], None]] = {}
        self.calls: list[tuple[str, float, dict[str, Any]]] = []
        self.failed_at: float | None = None

    def as_store(self) -> Store:
        """This wrapper, typed as the store it stands in for."""
        return cast("Store", self)

    def fail(self, method: str, fault: Callable[[], None] | None = None) -> None:
        def raise_runtime_error() -> None:
            raise RuntimeError(f"{method} failed (a test fault)")

        self.faults[method] = fault or raise_runtime_error

    def calls_since(self, moment: float) -> list[tuple[str, dict[str, Any]]]:
        """The calls made after ``moment`` (monotonic), with their keyword arguments."""
        return [(method, arguments) for method, at, arguments in self.calls if at > moment]

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.store, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attribute):
            return attribute  # plain values and plain functions (``clock``) pass as they are

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, time.monotonic(), kwargs))
            fault = self.faults.get(name)
            if fault is not None:
                if self.failed_at is None:
                    self.failed_at = time.monotonic()
                fault()
            return await attribute(*args, **kwargs)

        return call
