"""The SQLite store's statements. Every time is a parameter: Python owns the clock (``store``).

Column lists come from the readers of ``rows``, which derive them from the job field table.
"""

from __future__ import annotations

from functools import cache

from queuectl.models import SUMMARY_FIELDS
from queuectl.storage.base import HISTORY_LIMIT
from queuectl.storage.sqlite import history
from queuectl.storage.sqlite.rows import CLAIMED, FULL, SUMMARY, JobReader


def queue_filter(count: int) -> str:
    """`` AND queue IN (?, ...)`` for ``count`` queues; nothing for none (every queue)."""
    return f" AND queue IN ({', '.join('?' * count)})" if count else ""


# --- reading jobs -----------------------------------------------------------------------------

GET_JOB = f"SELECT {FULL.sql} FROM jobs WHERE id = ?"
#: An index range scan on the unique index of ``id``. Parameters: prefix, its upper bound, limit.
IDS_WITH_PREFIX = "SELECT id FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?"
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
#: The jobs a claim may take once due, in ``jobs_queue_due``: by queue, then by ``run_at``.
WAITING = "FROM jobs INDEXED BY jobs_queue_due WHERE state IN ('pending', 'failed') AND waiting = 0"
#: Each queue that has waiting jobs, one index step each (the least name after the previous one).
WAITING_QUEUES = f"""WITH RECURSIVE waiting_queues (name) AS (
    SELECT (SELECT min(queue) {WAITING})
    UNION ALL
    SELECT (SELECT min(queue) {WAITING} AND queue > waiting_queues.name) FROM waiting_queues
    WHERE waiting_queues.name IS NOT NULL
)"""
#: The earliest ``run_at`` of a waiting job: the least of each queue's earliest, a step each.
EARLIEST_RUN_AT = f"""{WAITING_QUEUES}
SELECT min((SELECT min(run_at) {WAITING} AND queue = waiting_queues.name))
FROM waiting_queues WHERE name IS NOT NULL
"""


@cache
def next_run_at(queue_count: int) -> str:
    """``EARLIEST_RUN_AT`` of the ``queue_count`` queues given (none: of every queue)."""
    if not queue_count:
        return EARLIEST_RUN_AT
    names = ", ".join(["(?)"] * queue_count)
    return (
        f"SELECT min((SELECT min(run_at) {WAITING} AND queue = given.column1)) FROM (VALUES {names}) AS given"
    )


@cache
def has_unfinished(queue_count: int) -> str:
    """Paused queues' jobs do not count: ``--drain`` does not wait for them."""
    return (
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE state IN ('pending', 'failed', 'processing')"
        f"{queue_filter(queue_count)} AND queue NOT IN (SELECT name FROM queues WHERE paused))"
    )


# --- the claim and what follows it ----------------------------------------------------------


#: What a claim changes. Parameters: worker, lease end, now x2.
CLAIM_SET = (
    "UPDATE jobs SET state = 'processing', attempts = attempts + 1, worker_id = ?,"
    " claim_token = lower(hex(randomblob(8))), lease_expires_at = ?, started_at = ?,"
    " updated_at = ?, progress = NULL"
)


@cache
def claim(queue_count: int) -> str:
    """Take up to LIMIT due jobs. Parameters: worker, lease end, now x3, the queues, the limit.

    The plain claim, which no queue's settings concern (the claim that does: ``queues``).
    """
    # SQLite keeps no statistics and would sort every waiting job; the partial index
    # is already in claim order, so the claim reads LIMIT rows.
    return CLAIM_SET + (
        " WHERE seq IN (SELECT seq FROM jobs INDEXED BY jobs_due WHERE state IN ('pending', 'failed')"
        f" AND waiting = 0 AND run_at <= ?{queue_filter(queue_count)}"
        " ORDER BY priority DESC, run_at, created_at, seq LIMIT ?)"
        f" RETURNING {CLAIMED.sql}"
    )


_FREE = "worker_id = NULL, claim_token = NULL, lease_expires_at = NULL"


def _finish(run_at: str, *, first: bool) -> str:
    """Parameters: state, [run_at], exit code, error, started, finished, stdout, stderr, the
    entry's worker, host, pid, start and outcome, now, id, token.

    The entry goes to the latest entry's columns (``history``); ``first``: the job has no entry
    yet (see ``results``), so there is none to fold into the array first.
    """
    fold = "" if first else f"history = {history.FOLDED},"
    return (
        f"UPDATE jobs SET state = ?, {run_at} exit_code = ?, last_error = ?,"
        " started_at = coalesce(?, started_at), finished_at = ?, stdout = ?, stderr = ?,"
        f" {fold} attempt_worker = ?, attempt_host = ?, attempt_pid = ?, attempt_started = ?,"
        f" attempt_outcome = ?, entries = entries + 1, {_FREE}, updated_at = ?"
        " WHERE id = ? AND claim_token = ? AND state = 'processing' RETURNING 1"
    )


#: A failed job comes due again after its backoff (``RETRY``: with ``run_at``).
FINISH_FIRST = _finish("", first=True)
FINISH_RETRY_FIRST = _finish("run_at = ?,", first=True)
FINISH = _finish("", first=False)
FINISH_RETRY = _finish("run_at = ?,", first=False)
#: The attempt of a job cancelled while it ran: it stays cancelled. Parameters: finished, stdout,
#: stderr, the entry (``history.APPEND``), now, id, token.
FINISH_CANCELLED = (
    f"UPDATE jobs SET finished_at = ?, stdout = ?, stderr = ?, {history.APPEND}, {_FREE}, updated_at = ?"
    " WHERE id = ? AND claim_token = ? AND state = 'cancelled' RETURNING 1"
)
#: A stopped attempt: not counted, no output; a job cancelled meanwhile stays cancelled.
#: Parameters: started, finished, the entry, now, id, token.
RELEASE = (
    "UPDATE jobs SET state = CASE state WHEN 'processing' THEN 'pending' ELSE state END,"
    " attempts = max(attempts - 1, 0), started_at = coalesce(?, started_at), finished_at = ?,"
    f" stdout = NULL, stderr = NULL, {history.APPEND}, {_FREE}, updated_at = ?"
    " WHERE id = ? AND claim_token = ? AND state IN ('processing', 'cancelled') RETURNING 1"
)


@cache
def move_output(states: str) -> str:
    """Keeps the latest entry's output (the row's) as an earlier attempt's, before the row takes
    the next entry's, if the claim holds the job and there is any. Parameters: id, token.

    Matches nothing, and writes nothing, for a job with no entry yet.
    """
    return (
        "INSERT OR REPLACE INTO job_outputs (job_id, entry, stdout, stderr)"
        " SELECT id, entries, stdout, stderr FROM jobs"
        f" WHERE id = ? AND claim_token = ? AND state IN ({states}) AND entries > 0"
        " AND (length(stdout) > 0 OR length(stderr) > 0)"
    )


#: Earlier outputs of entries the history no longer keeps, after an entry was appended.
TRIM_OUTPUTS = (
    "DELETE FROM job_outputs WHERE job_id = ?1"
    f" AND entry <= (SELECT entries FROM jobs WHERE id = ?1) - {HISTORY_LIMIT}"
)
DROP_CHUNKS = "DELETE FROM output_chunks WHERE job_id = ?"

_HELD = "jobs INDEXED BY jobs_held WHERE claim_token IS NOT NULL"
#: Held jobs whose lease ran out: processing ones, and cancelled ones never recorded.
#: Then who held each: the worker's id, and its host and pid while it is registered.
LAPSED = (
    f"SELECT {CLAIMED.sql}, worker_id,"
    " (SELECT host FROM workers WHERE workers.id = jobs.worker_id),"
    " (SELECT pid FROM workers WHERE workers.id = jobs.worker_id)"
    f" FROM {_HELD} AND lease_expires_at < ?"
)


@cache
def renew(token_count: int) -> str:
    """Extends held jobs' leases, cancelled ones too: their worker is still stopping them."""
    return (
        "UPDATE jobs INDEXED BY jobs_held SET lease_expires_at = ?"
        " WHERE claim_token IS NOT NULL AND worker_id = ?"
        f" AND claim_token IN ({', '.join('?' * token_count)}) RETURNING claim_token"
    )


@cache
def cancelled_claims(token_count: int) -> str:
    return (
        "SELECT claim_token FROM jobs INDEXED BY jobs_cancelled_held"
        " WHERE state = 'cancelled' AND claim_token IS NOT NULL"
        f" AND claim_token IN ({', '.join('?' * token_count)})"
    )


# --- live output ------------------------------------------------------------------------------

#: The running attempt's claim holds: extend the lease, set the progress if given; its entry
#: number. Parameters: lease end, progress, id, token.
HOLD_FOR_OUTPUT = (
    "UPDATE jobs SET lease_expires_at = max(coalesce(lease_expires_at, 0), ?),"
    " progress = coalesce(?, progress)"
    " WHERE id = ? AND claim_token = ? AND state = 'processing' RETURNING entries + 1"
)
INSERT_CHUNK = "INSERT INTO output_chunks (job_id, entry, stream, offset, data) VALUES (?, ?, ?, ?, ?)"
#: Chunks of other attempts, and this one's that end before a stream's kept part. Parameters:
#: id, entry, where stdout's kept part starts, where stderr's does (NULL: keep all).
TRIM_CHUNKS = (
    "DELETE FROM output_chunks WHERE job_id = ?1 AND (entry <> ?2"
    " OR offset + length(data) < CASE stream WHEN 1 THEN ?3 WHEN 2 THEN ?4 END)"
)
#: The job, its entry count, and its running attempt's chunks after a seq (a row per chunk, or
#: one with NULL chunk columns), read in one statement: one snapshot.
LIVE = JobReader(SUMMARY_FIELDS, extra=("jobs.entries", "output_chunks.seq", "stream", "offset", "data"))
LIVE_OUTPUT = (
    f"SELECT {LIVE.sql} FROM jobs LEFT JOIN output_chunks ON output_chunks.job_id = jobs.id"
    " AND output_chunks.entry = jobs.entries + 1 AND output_chunks.seq > ?"
    " WHERE jobs.id = ? ORDER BY output_chunks.seq"
)
#: The entry count, the latest entry's output, and an earlier entry's. Parameters: entry, id.
ATTEMPT_OUTPUT = (
    "SELECT jobs.entries, jobs.stdout, jobs.stderr, job_outputs.stdout, job_outputs.stderr"
    " FROM jobs LEFT JOIN job_outputs ON job_outputs.job_id = jobs.id AND job_outputs.entry = ?"
    " WHERE jobs.id = ?"
)


# --- operating jobs ---------------------------------------------------------------------------

#: What cancel takes: a pending or failed job is cancelled unheld; a processing one stays held
#: by its claim, so that its worker stops it and records the attempt.
CANCELLABLE = ("pending", "failed", "processing")
#: What retry takes; a cancelled job still held is being stopped, and waits for its worker.
RETRYABLE = ("completed", "dead", "cancelled")
#: A cancel sets ``last_error``: the latest entry's error while it is in columns, so it is folded first.
_CANCEL = f"UPDATE jobs SET state = 'cancelled', last_error = 'cancelled', {history.FOLD}, updated_at = ?"
_RETRY = "UPDATE jobs SET state = 'pending', attempts = 0, run_at = ?, updated_at = ?"
_UNHELD = "claim_token IS NULL"
STATE_AND_HOLD = "SELECT state, claim_token IS NOT NULL FROM jobs WHERE id = ?"
CANCEL = f"{_CANCEL} WHERE id = ? AND state IN {CANCELLABLE} RETURNING {SUMMARY.sql}"
RETRY = f"{_RETRY} WHERE id = ? AND state IN {RETRYABLE} AND {_UNHELD} RETURNING {SUMMARY.sql}"


@cache
def cancel_matching(state_count: int, queue_count: int) -> str:
    """Parameters: now, the states, the queues (``job_filter``)."""
    return f"{_CANCEL}{job_filter(state_count, queue_count)} RETURNING {SUMMARY.sql}"


@cache
def retry_matching(state_count: int, queue_count: int) -> str:
    """Parameters: now x2, the states, the queues (``job_filter``)."""
    return f"{_RETRY}{job_filter(state_count, queue_count)} AND {_UNHELD} RETURNING {SUMMARY.sql}"


@cache
def purge_batch(state_count: int, queue_count: int, *, before: bool) -> str:
    """Deletes up to LIMIT final, unheld jobs (their outputs go with them: the ``jobs_deleted``
    trigger). Parameters: the states, the queues, [the time], the limit."""
    age = " AND coalesce(finished_at, updated_at) < ?" if before else ""
    return (
        "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs"
        f"{job_filter(state_count, queue_count)} AND {_UNHELD}{age} LIMIT ?) RETURNING 1"
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
#: Every registered worker is asked, also one whose heartbeats are late (a frozen process): it
#: hears as it comes back. Each row says whether that worker is live, which the count is of.
REQUEST_STOP = "UPDATE workers SET stop_requested = 1 RETURNING heartbeat_at > ?"
