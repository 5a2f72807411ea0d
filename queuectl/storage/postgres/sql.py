"""The PostgreSQL store's statements, and the column lists they derive from the job field table.

Every time is the server's ``now()``; ``$n::float8 * interval '1 second'`` turns seconds into
spans. Column lists come from ``queuectl.models``: a new job field joins every ``RETURNING``
and the insert by itself, its arrays typed by ``array_type``. Only the statements that use a
field for something (``run_at``, ``state``, ``claim_token``, ...) name it.
"""

from __future__ import annotations

import re

from queuectl.models import JOB_FIELDS, STORED_INPUT_FIELDS, SUMMARY_FIELDS, Job, NewJob, WorkerInfo
from queuectl.records import FieldInfo, fields
from queuectl.storage.postgres.history import FOLD, HISTORY

# --- columns ---------------------------------------------------------------------------------

#: What lists and claims read: every job field but the output tails.
JOB_COLUMNS = ", ".join(SUMMARY_FIELDS)
#: What ``get_job`` reads: every job field (the history is partly in other columns: ``history``).
FULL_COLUMNS = ", ".join(f"{HISTORY} AS history" if name == "history" else name for name in JOB_FIELDS)
#: A claimed job: its fields, its place in the claim order and the token that guards it.
CLAIM_COLUMNS = JOB_COLUMNS + ", seq, claim_token"
WORKER_COLUMNS = ", ".join(info.name for info in fields(WorkerInfo))

#: Input fields stored as given: one array each in ``INSERT_JOBS``, and what ``add_jobs`` compares
#: after a lost reply. (``run_at`` is given, or the server's now plus ``delay``, an input-only field.)
GIVEN_FIELDS: tuple[str, ...] = tuple(name for name in STORED_INPUT_FIELDS if name != "run_at")
#: The arrays of ``INSERT_JOBS``, in order; ``rows.insert_arguments`` builds them.
INSERT_FIELDS: tuple[str, ...] = (*GIVEN_FIELDS, "run_at", "delay")

#: PostgreSQL types of the kinds of value a field's annotation names (``None``, ``Unset`` aside).
_TYPES = {
    "str": "text",
    "int": "integer",
    "float": "float8",
    "bool": "boolean",
    "datetime": "timestamptz",
    "bytes": "bytea",
    # The fields kept as JSON: ``env`` as the text given (its order kept, as SQLite keeps it;
    # nothing in SQL looks inside), ``history`` as jsonb (the statements append and trim it).
    "dict[str, str]": "text",
    "tuple[str, ...]": "text",  # ``after`` and ``no_retry_exit_codes``: JSON arrays, as ``env``
    "tuple[int, ...]": "text",
    "tuple[AttemptRecord, ...]": "jsonb",
}
#: Each field by name, as stored (``Job``) or, for input-only fields, as given (``NewJob``).
_FIELDS: dict[str, FieldInfo] = {info.name: info for info in (*fields(NewJob), *fields(Job))}


def array_type(name: str) -> str:
    """``text[]``, ``integer[]``...: the array type of a field's parameter, from its annotation.

    A field whose column is of another type (``bigint``) says so in its metadata:
    ``field(default=..., pg_type="bigint")``; JSON fields map by annotation (``_TYPES``).
    """
    info = _FIELDS[name]
    kinds = [kind.strip() for kind in info.annotation.split("|")]
    kinds = [kind for kind in kinds if kind not in ("None", "Unset")]
    declared = info.meta.get("pg_type")
    if declared is None:
        if len(kinds) != 1 or kinds[0] not in _TYPES:
            raise TypeError(f"no PostgreSQL type for the field {name!r} ({info.annotation}): give it pg_type")
        declared = _TYPES[kinds[0]]
    return f"{declared}[]"


# --- jobs --------------------------------------------------------------------------------------

#: All or nothing in one statement (one round trip), waking LISTENers when it commits. ``run_at``
#: of NULL is now plus ``delay`` seconds. Its last parameter is the channel to notify.
INSERT_JOBS = f"""
WITH added AS (
    INSERT INTO jobs ({", ".join(GIVEN_FIELDS)}, run_at, state, attempts, created_at, updated_at)
    SELECT {", ".join(f"t.{name}" for name in GIVEN_FIELDS)},
           coalesce(t.run_at, now() + t.delay * interval '1 second'), 'pending', 0, now(), now()
    FROM unnest({", ".join(f"${n}::{array_type(name)}" for n, name in enumerate(INSERT_FIELDS, 1))})
         WITH ORDINALITY AS t({", ".join(INSERT_FIELDS)}, n)
    ORDER BY t.n
    RETURNING {JOB_COLUMNS}
), wake AS (SELECT pg_notify(${len(INSERT_FIELDS) + 1}, 'added'))
SELECT added.* FROM added, wake
"""
#: The rows of a batch whose reply was lost, if they were added in the last ``$2`` seconds.
ADDED_RECENTLY = (
    f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ANY($1::text[])"
    " AND created_at >= now() - $2::float8 * interval '1 second'"
)
TAKEN_IDS = "SELECT id FROM jobs WHERE id = ANY($1::text[])"

GET_JOB = f"SELECT {FULL_COLUMNS} FROM jobs WHERE id = $1"

# $1 the states, $2 the queues: NULL for any.
_JOB_FILTER = (
    "($1::text[] IS NULL OR state = ANY($1::text[])) AND ($2::text[] IS NULL OR queue = ANY($2::text[]))"
)
LIST_JOBS = f"""
SELECT {JOB_COLUMNS} FROM jobs
WHERE {_JOB_FILTER}
ORDER BY created_at DESC, seq DESC
LIMIT $3::bigint
"""
COUNT_MATCHING = f"SELECT count(*) AS n FROM jobs WHERE {_JOB_FILTER}"

COUNT_JOBS = "SELECT state, count(*) AS n FROM jobs GROUP BY state"
EARLIEST_RUN_AT = (
    "SELECT min(run_at) AS earliest FROM jobs WHERE state IN ('pending', 'failed') AND waiting = 0"
)
# Not min(run_at) - now(): asyncpg stores datetime.max as infinity, which cannot be
# subtracted; extract() gives it as an infinite number of seconds.
NEXT_RUN_AT = (
    "SELECT (extract(epoch FROM min(run_at)) - extract(epoch FROM now()))::float8 AS seconds"
    " FROM jobs WHERE state IN ('pending', 'failed') AND waiting = 0"
    " AND (cardinality($1::text[]) = 0 OR queue = ANY($1::text[]))"
)
#: Paused queues' jobs do not count: ``--drain`` does not wait for them.
HAS_UNFINISHED = (
    "SELECT EXISTS (SELECT 1 FROM jobs WHERE state IN ('pending', 'failed', 'processing')"
    " AND ($1::text[] IS NULL OR queue = ANY($1::text[]))"
    " AND queue NOT IN (SELECT name FROM queues WHERE paused)) AS found"
)

# --- claims ------------------------------------------------------------------------------------

#: ``$4`` starts the tokens of one call's claims: a retry after a lost reply finds them by it.
_CLAIM = """
UPDATE jobs SET state = 'processing', attempts = attempts + 1, worker_id = $1,
    claim_token = $4::text || gen_random_uuid()::text,
    lease_expires_at = now() + $2::float8 * interval '1 second',
    started_at = now(), updated_at = now(), progress = NULL
WHERE id IN (
    SELECT id FROM jobs
    WHERE state IN ('pending', 'failed') AND waiting = 0 AND run_at <= now(){queue_filter}
    ORDER BY priority DESC, run_at, created_at, seq
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
RETURNING {columns}
"""
CLAIM_ANY_QUEUE = _CLAIM.format(queue_filter="", columns=CLAIM_COLUMNS)
CLAIM_QUEUES = _CLAIM.format(queue_filter=" AND queue = ANY($5::text[])", columns=CLAIM_COLUMNS)
#: The claim while some queue is paused or limited: ``_CLAIM``'s parameters, then the queues
#: served (NULL: any). The function is the schema's (migration 5), for its snapshots.
FLOW_CLAIM = f"SELECT {CLAIM_COLUMNS} FROM queuectl_flow_claim($1, $2::float8, $3, $4::text, $5::text[])"
#: What a claim whose reply was lost took: this worker's jobs with tokens of that call.
CLAIMED_BEFORE = f"""
SELECT {CLAIM_COLUMNS} FROM jobs
WHERE state = 'processing' AND worker_id = $1 AND starts_with(claim_token, $2::text)
"""

#: A cancelled job stays held until its worker has killed the command and recorded the attempt.
RENEW = """
UPDATE jobs SET lease_expires_at = now() + $3::float8 * interval '1 second'
WHERE worker_id = $1 AND claim_token = ANY($2::text[]) AND state IN ('processing', 'cancelled')
RETURNING claim_token
"""


def shift_parameters(statement: str, by: int) -> str:
    """``$1`` becomes ``$(1 + by)``: one statement's text inside another that has ``by`` before."""
    return re.sub(r"\$(\d+)", lambda match: f"${int(match[1]) + by}", statement)


LAPSED = f"""
SELECT held.*, w.host AS holder_host, w.pid AS holder_pid FROM (
    SELECT {CLAIM_COLUMNS}, worker_id AS holder, lease_expires_at AS lapsed_at FROM jobs
    WHERE claim_token IS NOT NULL AND lease_expires_at < now()
) AS held LEFT JOIN workers AS w ON w.id = held.holder
ORDER BY held.lapsed_at, held.seq
"""
#: Someone waits for these jobs to end: their completion is announced (``results.py``). Written
#: once per job; idempotent, so a retry after a lost reply is harmless.
WATCH = """
UPDATE jobs SET watched = true
WHERE id = ANY($1::text[]) AND NOT watched AND state IN ('pending', 'processing', 'failed')
"""
#: The tokens, of those given, whose job was cancelled (``jobs_cancelled_held``: a tiny index).
CANCELLED_CLAIMS = """
SELECT claim_token FROM jobs
WHERE state = 'cancelled' AND claim_token IS NOT NULL AND claim_token = ANY($1::text[])
"""

# --- live output -------------------------------------------------------------------------------

#: Job $1 (summary), its entry count, and its running attempt's chunks after seq $2: a row each
#: (one row with NULL chunk columns when there are none).
LIVE_OUTPUT = f"""
SELECT {", ".join(f"j.{name}" for name in SUMMARY_FIELDS)}, j.entries,
    c.seq AS chunk_seq, c.stream, c."offset", c.data
FROM jobs AS j
    LEFT JOIN job_chunks AS c ON c.job_id = j.id AND c.entry = j.entries + 1 AND c.seq > $2::bigint
WHERE j.id = $1
ORDER BY c.seq
"""
#: The output of entry $2 of job $1: the row's own when it is the latest.
ATTEMPT_OUTPUT = """
SELECT CASE WHEN j.entries = $2::integer THEN j.stdout ELSE o.stdout END AS stdout,
    CASE WHEN j.entries = $2::integer THEN j.stderr ELSE o.stderr END AS stderr
FROM jobs AS j LEFT JOIN job_outputs AS o ON o.job_id = j.id AND o.entry = $2::integer
WHERE j.id = $1
"""

# --- operating jobs ----------------------------------------------------------------------------

#: Ids from $1 on that start with it, in byte order: a range of the primary key (its collation
#: is "C"), as ``EXPLAIN`` shows; U+10FFFF is the greatest character.
IDS_WITH_PREFIX = "SELECT id FROM jobs WHERE id >= $1 AND id < $1 || chr(1114111) ORDER BY id LIMIT $2"
STATE_AND_HOLD = "SELECT state, claim_token IS NOT NULL AS held FROM jobs WHERE id = $1"

#: Unfinished jobs become ``cancelled``; a ``processing`` one stays held by its claim, so that its
#: worker sees it (``CANCELLED_CLAIMS``), kills the command and records the attempt. The latest
#: entry's error may be ``last_error``, so the entry is folded into the array first.
_CANCEL = f"""
WITH cancelled AS (
    UPDATE jobs SET state = 'cancelled', last_error = 'cancelled', {FOLD}, updated_at = now()
    WHERE state IN ('pending', 'failed', 'processing') AND {{which}}
    RETURNING {JOB_COLUMNS}, seq
), wake AS (  -- the queue's channel, and the cancels' own (``listen.cancel_channel_name``)
    SELECT pg_notify($1, 'cancelled'), pg_notify('queuectl_cancel_' || md5($1), 'cancelled')
)
SELECT cancelled.* FROM cancelled, wake
"""
CANCEL_JOB = _CANCEL.format(which="id = $2")
_MATCHING = "state = ANY($2::text[]) AND ($3::text[] IS NULL OR queue = ANY($3::text[]))"
CANCEL_MATCHING = _CANCEL.format(which=_MATCHING)

#: Final jobs back to ``pending``, due now, ``attempts`` 0, history kept. A cancelled job still
#: held is left alone: its worker is stopping it and will record the attempt.
_RETRY = f"""
WITH retried AS (
    UPDATE jobs SET state = 'pending', attempts = 0, run_at = now(), updated_at = now()
    WHERE state IN ('completed', 'dead', 'cancelled') AND claim_token IS NULL AND {{which}}
    RETURNING {JOB_COLUMNS}, seq
), wake AS (SELECT pg_notify($1, 'retried'))
SELECT retried.* FROM retried, wake
"""
RETRY_JOB = _RETRY.format(which="id = $2")
RETRY_MATCHING = _RETRY.format(which=_MATCHING)

#: Up to $4 unheld jobs in states $1 (final ones) and queues $2 (NULL: any) that ended before $3
#: (NULL: any time), with their outputs and chunks (``ON DELETE CASCADE``). ``finished_at`` is the
#: worker host's clock, which may be behind the server's: no bound on ``created_at`` is assumed.
PURGE_BATCH = """
WITH doomed AS (
    SELECT id FROM jobs
    WHERE state = ANY($1::text[]) AND claim_token IS NULL
        AND ($2::text[] IS NULL OR queue = ANY($2::text[]))
        AND ($3::timestamptz IS NULL OR coalesce(finished_at, updated_at) < $3::timestamptz)
    LIMIT $4::bigint
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM jobs WHERE id IN (SELECT id FROM doomed) RETURNING 1
)
SELECT count(*) AS n FROM gone
"""

# --- the dead-letter queue ---------------------------------------------------------------------

LOCK_FOR_REVIVAL = "SELECT id, state FROM jobs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"
_REVIVE = f"""
WITH revived AS (
    UPDATE jobs SET state = 'pending', attempts = 0, run_at = now(), updated_at = now()
    WHERE state = 'dead' {{which}}
    RETURNING {JOB_COLUMNS}, seq
), wake AS (SELECT pg_notify($1, 'revived'))
SELECT revived.* FROM revived, wake
"""
REVIVE_SOME = _REVIVE.format(which="AND id = ANY($2::text[])")
REVIVE_ALL = _REVIVE.format(which="")

# --- settings and workers ----------------------------------------------------------------------

SETTINGS = "SELECT key, value FROM settings"
SET_SETTING = (
    "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)

REGISTER_WORKER = """
INSERT INTO workers (id, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, now(), now())
ON CONFLICT (id) DO UPDATE
    SET host = excluded.host, pid = excluded.pid, heartbeat_at = now(), stop_requested = false
RETURNING extract(epoch FROM clock_timestamp())::float8 AS server_time
"""
HEARTBEAT = """
UPDATE workers SET heartbeat_at = now(), running = $2 WHERE id = $1
RETURNING stop_requested, extract(epoch FROM clock_timestamp())::float8 AS server_time
"""
#: A sample of the server's clock and nothing else: quick, once prepared.
SERVER_TIME = "SELECT extract(epoch FROM clock_timestamp())::float8 AS server_time"
STOP_REQUESTED = "SELECT stop_requested FROM workers WHERE id = $1"
UNREGISTER_WORKER = "DELETE FROM workers WHERE id = $1"
LIVE_WORKERS = f"""
SELECT {WORKER_COLUMNS} FROM workers
WHERE heartbeat_at > now() - $1::float8 * interval '1 second'
ORDER BY started_at, id
"""
#: Every registered worker is asked, also one whose heartbeats are late (a host cut off, a frozen
#: process): it hears as it comes back. The count is of the live ones, as ``worker list`` shows.
REQUEST_STOP = """
WITH asked AS (UPDATE workers SET stop_requested = true RETURNING heartbeat_at)
SELECT 1 FROM asked WHERE heartbeat_at > now() - $1::float8 * interval '1 second'
"""
