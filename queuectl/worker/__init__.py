"""Running jobs: the pool (lifecycle), its slots, its attempts, upkeep, and one command's process group.

``pool`` starts and stops everything under supervision; ``slots`` decides how many jobs to claim;
``attempts`` runs each claimed job to its recorded outcome; ``upkeep`` keeps the claims good
(heartbeats, leases, lost workers, stop requests); ``runner`` runs one command as a process group;
``orphans`` finds what a lost worker left behind.
"""

from __future__ import annotations

from queuectl.worker.pool import Mode, PoolStats, WorkerPool
from queuectl.worker.runner import use_fast_child_watcher

__all__ = ("Mode", "PoolStats", "WorkerPool", "use_fast_child_watcher")
