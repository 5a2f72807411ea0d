"""The SQLite store's statements. Every time is a parameter: Python owns the clock (``store``).

Column lists come from the readers of ``rows``, which derive them from the job field table.
"""

from __future__ import annotations

from functools import cache

from queuectl.storage.sqlite.rows import CLAIMED, FULL, SUMMARY


def queue_filter(count: int) -> str:
    """`` AND queue IN (?, ...)`` for ``count`` queues; nothing for none (every queue)."""
    return f" AND queue IN ({', '.join('?' * count)})" if count else ""


# --- reading jobs -----------------------------------------------------------------------------

GET_JOB = f"SELECT {FULL.sql} FROM jobs WHERE id = ?"
LIST_JOBS = f"SELECT {SUMMARY.sql} FROM jobs"  # + job_filter, ORDER BY, LIMIT (``SqliteStore.list_jobs``)
COUNT_MATCHING = "SELECT count(*) FROM jobs"  # + job_filter


@cache
def job_filter(state_count: int, queue_count: int) -> str:
    """`` WHERE state IN (?, ...) AND queue IN (?, ...)``, each part only when it names some."""
    parts = [
        f"{column} IN ({', '.join('?' * count)})"
        for column, count in (("state", state_count), ("queue", queue_count))
        if count
    ]
    return f" WHERE {' AND '.join(parts)}" if parts else ""


COUNT_JOBS = "SELECT state, count(*) FROM jobs GROUP BY state"
_EARLIEST_WAITING = (
    "SELECT min(run_at) FROM jobs INDEXED BY jobs_waiting_run_at WHERE state IN ('pending', 'failed')"
)
EARLIEST_RUN_AT = _EARLIEST_WAITING


@cache
def next_run_at(queue_count: int) -> str:
    return _EARLIEST_WAITING + queue_filter(queue_count)


@cache
def has_unfinished(queue_count: int) -> str:
    return (
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE state IN ('pending', 'failed', 'processing')"
        f"{queue_filter(queue_count)})"
    )


# --- the claim and what follows it ----------------------------------------------------------


@cache
def claim(queue_count: int) -> str:
    """Take up to LIMIT due jobs. Parameters: worker, lease end, now x3, the queues, the limit."""
    return (
        "UPDATE jobs SET state = 'processing', attempts = attempts + 1, worker_id = ?,"
        " claim_token = lower(hex(randomblob(8))), lease_expires_at = ?, started_at = ?,"
        " updated_at = ?"
        # SQLite keeps no statistics and would sort every waiting job; the partial index
        # is already in claim order, so the claim reads LIMIT rows.
        " WHERE seq IN (SELECT seq FROM jobs INDEXED BY jobs_due WHERE state IN ('pending', 'failed')"
        f" AND run_at <= ?{queue_filter(queue_count)}"
        " ORDER BY priority DESC, run_at, created_at, seq LIMIT ?)"
        f" RETURNING {CLAIMED.sql}"
    )


def _finish(run_at: str) -> str:
    return (
        f"UPDATE jobs SET state = ?, {run_at} exit_code = ?, last_error = ?,"
        " started_at = coalesce(?, started_at), finished_at = ?, stdout = ?, stderr = ?,"
        " worker_id = NULL, claim_token = NULL, lease_expires_at = NULL, updated_at = ?"
        " WHERE id = ? AND claim_token = ? AND state = 'processing' RETURNING 1"
    )


FINISH = _finish("")
FINISH_RETRY = _finish("run_at = ?,")  # a failed job comes due again after its backoff

RELEASE = (
    "UPDATE jobs SET state = 'pending', attempts = max(attempts - 1, 0), worker_id = NULL,"
    " claim_token = NULL, lease_expires_at = NULL, updated_at = ?"
    " WHERE id = ? AND claim_token = ? AND state = 'processing' RETURNING 1"
)
LAPSED = f"SELECT {CLAIMED.sql} FROM jobs WHERE state = 'processing' AND lease_expires_at < ?"


@cache
def renew(token_count: int) -> str:
    return (
        "UPDATE jobs SET lease_expires_at = ? WHERE worker_id = ? AND state = 'processing'"
        f" AND claim_token IN ({', '.join('?' * token_count)}) RETURNING claim_token"
    )


# --- the dead-letter queue --------------------------------------------------------------------

STATE_OF = "SELECT state FROM jobs WHERE id = ?"
_REVIVE = "UPDATE jobs SET state = 'pending', attempts = 0, run_at = ?, updated_at = ?"
REVIVE = f"{_REVIVE} WHERE id = ? RETURNING {SUMMARY.sql}"
REVIVE_ALL_DEAD = f"{_REVIVE} WHERE state = 'dead' RETURNING {SUMMARY.sql}"

# --- settings and workers ---------------------------------------------------------------------

SET_SETTING = (
    "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
REGISTER_WORKER = "INSERT INTO workers (id, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)"
HEARTBEAT = "UPDATE workers SET heartbeat_at = ?, running = ? WHERE id = ? RETURNING stop_requested"
STOP_REQUESTED = "SELECT stop_requested FROM workers WHERE id = ?"
UNREGISTER_WORKER = "DELETE FROM workers WHERE id = ?"
LIVE_WORKERS = (
    "SELECT id, host, pid, started_at, heartbeat_at, running FROM workers"
    " WHERE heartbeat_at > ? ORDER BY started_at, id"
)
REQUEST_STOP = "UPDATE workers SET stop_requested = 1 WHERE heartbeat_at > ? RETURNING id"
