"""Running jobs: the pool (lifecycle), its slots, upkeep, and one command's process group."""

from __future__ import annotations

from queuectl.worker.pool import Mode, PoolStats, WorkerPool

__all__ = ("Mode", "PoolStats", "WorkerPool")
