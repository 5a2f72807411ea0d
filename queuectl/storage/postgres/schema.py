"""The PostgreSQL store's schema and statements, its migrations, and how failures are named.

Tables live in the connection's current schema (the first existing one on
``search_path``), never a hard-coded ``public``, so one database can hold
several independent queues. Needs PostgreSQL 13 or newer (``gen_random_uuid``).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from queuectl.errors import StoreCorrupt, StoreError, StoreUnavailable
from queuectl.models import Job, JobState

# --- the little of asyncpg we use, typed (asyncpg has no stubs) ---------------------------


class Row(Protocol):
    def __getitem__(self, key: str | int, /) -> Any: ...


class Connection(Protocol):
    async def execute(self, query: str, *args: object) -> str: ...

    async def fetch(self, query: str, *args: object) -> list[Row]: ...

    async def fetchrow(self, query: str, *args: object) -> Row | None: ...

    async def fetchval(self, query: str, *args: object) -> Any: ...

    def transaction(self) -> AbstractAsyncContextManager[Any]: ...

    def is_closed(self) -> bool: ...

    async def close(self, *, timeout: float | None = None) -> None: ...

    def terminate(self) -> None: ...


class ListenConnection(Connection, Protocol):
    async def add_listener(self, channel: str, callback: Callable[..., None]) -> None: ...

    def add_termination_listener(self, callback: Callable[..., None]) -> None: ...


class Pool(Protocol):
    def acquire(self, *, timeout: float | None = None) -> Awaitable[Connection]: ...

    async def release(self, connection: Connection) -> None: ...

    async def close(self) -> None: ...

    def terminate(self) -> None: ...


# --- the schema ---------------------------------------------------------------------------

_MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema.
    """
    CREATE TABLE jobs (
        id text PRIMARY KEY,
        seq bigserial NOT NULL,
        command text NOT NULL,
        queue text NOT NULL,
        priority integer NOT NULL,
        timeout double precision,
        max_retries integer NOT NULL,
        run_at timestamptz NOT NULL,
        state text NOT NULL
            CHECK (state IN ('pending', 'processing', 'completed', 'failed', 'dead')),
        attempts integer NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        started_at timestamptz,
        finished_at timestamptz,
        exit_code integer,
        last_error text,
        stdout bytea NOT NULL DEFAULT '',
        stderr bytea NOT NULL DEFAULT '',
        worker_id text,
        claim_token text,
        lease_expires_at timestamptz
    );
    -- The claim walks this in order and stops after LIMIT rows, skipping locked ones.
    CREATE INDEX jobs_due ON jobs (priority DESC, run_at, created_at, seq)
        WHERE state IN ('pending', 'failed');
    CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE state = 'processing';
    CREATE INDEX jobs_newest ON jobs (created_at DESC, seq DESC);
    CREATE INDEX jobs_state_newest ON jobs (state, created_at DESC, seq DESC);
    CREATE TABLE workers (
        id text PRIMARY KEY,
        host text NOT NULL,
        pid integer NOT NULL,
        started_at timestamptz NOT NULL,
        heartbeat_at timestamptz NOT NULL,
        running integer NOT NULL DEFAULT 0,
        stop_requested boolean NOT NULL DEFAULT false
    );
    CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL);
    """,
)

SCHEMA_VERSION = len(_MIGRATIONS)

#: First key of the advisory lock that serialises migrations ("qctl"); the second is the schema.
_MIGRATION_LOCK = 0x7163746C


async def migrate(connection: Connection, where: str) -> str | None:
    """Create or migrate the tables; return the current schema's name.

    Safe when many processes open a fresh schema at once: the migration runs
    under a transaction-scoped advisory lock, and each process re-reads the
    version once it holds the lock.
    """
    version = await _fast_version(connection)
    if version == SCHEMA_VERSION:
        schema: str | None = await connection.fetchval("SELECT current_schema()")
        return schema
    async with connection.transaction():
        schema = await connection.fetchval("SELECT current_schema()")
        if schema is None:
            raise StoreUnavailable(
                f"cannot use PostgreSQL at {where}: no schema on the search_path exists to create tables in"
            )
        await connection.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _MIGRATION_LOCK, schema)
        await connection.execute("CREATE TABLE IF NOT EXISTS queuectl_schema (version integer NOT NULL)")
        version = await connection.fetchval("SELECT coalesce(max(version), 0) FROM queuectl_schema")
        if version > SCHEMA_VERSION:
            raise StoreCorrupt(
                f"the store at {where} has schema version {version};"
                f" this queuectl knows up to {SCHEMA_VERSION}: upgrade queuectl"
            )
        for number in range(version, SCHEMA_VERSION):
            await _apply(connection, number, where, schema)
        await connection.execute("DELETE FROM queuectl_schema")
        await connection.execute("INSERT INTO queuectl_schema (version) VALUES ($1)", SCHEMA_VERSION)
    return schema


async def _fast_version(connection: Connection) -> int:
    """The schema version without taking the lock; 0 when there is no schema yet."""
    import asyncpg

    try:
        version = await connection.fetchval("SELECT max(version) FROM queuectl_schema")
    except asyncpg.UndefinedTableError:
        return 0
    return int(version or 0)


async def _apply(connection: Connection, number: int, where: str, schema: str) -> None:
    import asyncpg

    try:
        await connection.execute(_MIGRATIONS[number])
    except asyncpg.DuplicateTableError as error:
        raise StoreCorrupt(
            f"the schema {schema!r} at {where} holds tables of another program ({error});"
            " it was left untouched: use another database or search_path"
        ) from error


# --- the statements ----------------------------------------------------------------------
# Every time is the server's now(); ``$n::float8 * interval '1 second'`` turns seconds into spans.

JOB_COLUMNS = (
    "id, command, queue, priority, timeout, max_retries, run_at, state, attempts,"
    " created_at, updated_at, started_at, finished_at, exit_code, last_error"
)
CLAIM_COLUMNS = JOB_COLUMNS + ", seq, claim_token"

#: All or nothing in one statement (one round trip), waking LISTENers when it commits.
INSERT_JOBS = f"""
WITH added AS (
    INSERT INTO jobs (id, command, queue, priority, timeout, max_retries, run_at, state,
                      attempts, created_at, updated_at)
    SELECT t.id, t.command, t.queue, t.priority, t.timeout, t.max_retries,
           coalesce(t.run_at, now() + t.delay * interval '1 second'), 'pending', 0, now(), now()
    FROM unnest($1::text[], $2::text[], $3::text[], $4::integer[], $5::float8[], $6::integer[],
                $7::timestamptz[], $8::float8[])
         WITH ORDINALITY AS t(id, command, queue, priority, timeout, max_retries, run_at, delay, n)
    ORDER BY t.n
    RETURNING {JOB_COLUMNS}
), wake AS (SELECT pg_notify($9, 'added'))
SELECT added.* FROM added, wake
"""

#: ``$4`` starts the tokens of one call's claims: a retry after a lost reply finds them by it.
_CLAIM = """
UPDATE jobs SET state = 'processing', attempts = attempts + 1, worker_id = $1,
    claim_token = $4::text || gen_random_uuid()::text,
    lease_expires_at = now() + $2::float8 * interval '1 second',
    started_at = now(), updated_at = now()
WHERE id IN (
    SELECT id FROM jobs
    WHERE state IN ('pending', 'failed') AND run_at <= now(){queue_filter}
    ORDER BY priority DESC, run_at, created_at, seq
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
RETURNING {columns}
"""
CLAIM_ANY_QUEUE = _CLAIM.format(queue_filter="", columns=CLAIM_COLUMNS)
CLAIM_QUEUES = _CLAIM.format(queue_filter=" AND queue = ANY($5::text[])", columns=CLAIM_COLUMNS)
#: What a claim whose reply was lost took: this worker's jobs with tokens of that call.
CLAIMED_BEFORE = f"""
SELECT {CLAIM_COLUMNS} FROM jobs
WHERE state = 'processing' AND worker_id = $1 AND starts_with(claim_token, $2::text)
"""

RENEW = """
UPDATE jobs SET lease_expires_at = now() + $3::float8 * interval '1 second'
WHERE worker_id = $1 AND claim_token = ANY($2::text[]) AND state = 'processing'
RETURNING claim_token
"""

#: Records an attempt's outcome if the claim ($1, $2) still holds the job.
_RECORD = """
    UPDATE jobs SET state = $3::text, exit_code = $4, last_error = $5,
        started_at = coalesce($6, started_at), finished_at = $7, stdout = $8, stderr = $9,
        run_at = CASE WHEN $3::text = 'failed' THEN now() + $10::float8 * interval '1 second'
                      ELSE run_at END,
        worker_id = NULL, claim_token = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE id = $1 AND claim_token = $2 AND state = 'processing'
    RETURNING 1
"""
FINISH = f"""
WITH done AS ({_RECORD})
SELECT pg_notify($11, 'finished') FROM done
"""


def _shift_parameters(statement: str, by: int) -> str:
    """``$1`` becomes ``$(1 + by)``: one statement's text inside another that has ``by`` before."""
    return re.sub(r"\$(\d+)", lambda match: f"${int(match[1]) + by}", statement)


#: ``FINISH`` and a claim in one statement, one round trip: what a worker does as a job ends.
#: ``FINISH``'s parameters ($1-$11), then the claim's, shifted by 11 ($12-$15, queues $16).
#: Every part sees the statement's snapshot, so the claim cannot take the job just finished.
#: Its commit does not wait for the WAL flush (``synchronous_commit`` off for this transaction
#: only): lost to a server crash, a result or claim only means that the job runs again, which
#: at-least-once allows. Enqueues keep the server's default.
_FINISH_AND_CLAIM = f"""
WITH done AS ({_RECORD}), wake AS (
    SELECT pg_notify($11, 'finished') FROM done
), relaxed AS (
    SELECT set_config('synchronous_commit', 'off', true)
), claimed AS ({{claim}})
SELECT (SELECT count(*) FROM wake) AS finished, claimed.*
FROM (SELECT 1 FROM relaxed) AS one LEFT JOIN claimed ON true
"""
FINISH_AND_CLAIM_ANY_QUEUE = _FINISH_AND_CLAIM.format(claim=_shift_parameters(CLAIM_ANY_QUEUE, 11))
FINISH_AND_CLAIM_QUEUES = _FINISH_AND_CLAIM.format(claim=_shift_parameters(CLAIM_QUEUES, 11))

RELEASE = """
WITH back AS (
    UPDATE jobs SET state = 'pending', attempts = greatest(attempts - 1, 0), worker_id = NULL,
        claim_token = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE id = $1 AND claim_token = $2 AND state = 'processing'
    RETURNING 1
)
SELECT pg_notify($3, 'released') FROM back
"""

LAPSED = f"""
SELECT {CLAIM_COLUMNS} FROM jobs
WHERE state = 'processing' AND lease_expires_at < now()
ORDER BY lease_expires_at, seq
"""

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

LIST_JOBS = f"""
SELECT {JOB_COLUMNS} FROM jobs
WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR queue = $2)
ORDER BY created_at DESC, seq DESC
LIMIT $3::bigint
"""

REGISTER_WORKER = """
INSERT INTO workers (id, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, now(), now())
ON CONFLICT (id) DO UPDATE
    SET host = excluded.host, pid = excluded.pid, heartbeat_at = now(), stop_requested = false
"""

LIVE_WORKERS = """
SELECT id, host, pid, started_at, heartbeat_at, running FROM workers
WHERE heartbeat_at > now() - $1::float8 * interval '1 second'
ORDER BY started_at, id
"""


# --- rows and values ----------------------------------------------------------------------

#: Longest span of seconds passed to the server (a lease, a delay, a backoff): 200 years.
_MAX_SECONDS = 200 * 365.25 * 86400


def seconds(value: float) -> float:
    """A span the server can add to ``now()`` without overflowing a timestamp."""
    return max(-_MAX_SECONDS, min(float(value), _MAX_SECONDS))


def job_from_row(row: Row, *, with_output: bool = False) -> Job:
    """A ``Job`` from a row of ``JOB_COLUMNS`` (plus stdout, stderr when ``with_output``)."""
    return Job(
        id=row["id"],
        command=row["command"],
        queue=row["queue"],
        priority=row["priority"],
        timeout=row["timeout"],
        max_retries=row["max_retries"],
        run_at=row["run_at"],
        state=JobState(row["state"]),
        attempts=row["attempts"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        exit_code=row["exit_code"],
        last_error=row["last_error"],
        stdout=bytes(row["stdout"]) if with_output else b"",
        stderr=bytes(row["stderr"]) if with_output else b"",
    )


def best_first(row: Row) -> tuple[Any, ...]:
    """Sort key of claimed rows: the order the claim takes them in."""
    return (-row["priority"], row["run_at"], row["created_at"], row["seq"])


def channel_name(schema: str | None) -> str:
    """The NOTIFY channel of this schema's queue (at most 63 bytes, PostgreSQL's limit)."""
    name = f"queuectl_{schema}" if schema else "queuectl"
    return name.encode("utf-8")[:63].decode("utf-8", errors="ignore")


# --- naming targets and failures ----------------------------------------------------------


def describe_target(url: str) -> str:
    """``host:port/database`` of a URL, for messages; never the password."""
    try:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
    except ValueError:
        return "(unparsable URL)"

    def option(key: str, env: str, default: str) -> str:
        return query.get(key, [""])[0] or os.environ.get(env, "") or default

    hosts = parts.netloc.rpartition("@")[2] or option("host", "PGHOST", "localhost")
    if "," not in hosts and ":" not in hosts.rpartition("]")[2]:
        hosts = f"{hosts}:{option('port', 'PGPORT', '5432')}"
    user = unquote(parts.netloc.rpartition("@")[0].partition(":")[0])
    database = unquote(parts.path.lstrip("/")) or option("dbname", "PGDATABASE", user or "postgres")
    return f"{hosts}/{database}"


def redact(text: str, url: str) -> str:
    """``text`` on one line, with the URL's password (if any) masked."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "***").replace(unquote(password), "***")
    return " ".join(text.split())


def reason(error: BaseException, url: str) -> str:
    """A short, one-line account of a driver or network error."""
    if isinstance(error, socket.gaierror):
        return "unknown host"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is the server running and listening there?)"
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return redact(str(error) or type(error).__name__, url)


def cannot_connect(where: str, url: str, error: BaseException) -> StoreError:
    return StoreUnavailable(f"cannot connect to PostgreSQL at {where}: {reason(error, url)}")


def is_transient(error: BaseException) -> bool:
    """Errors that a new connection or a second try can cure."""
    import asyncpg

    if isinstance(error, OSError):  # refused, reset, unreachable, TimeoutError
        return True
    if isinstance(error, asyncpg.InterfaceError):
        return "connection is closed" in str(error)
    if isinstance(error, asyncpg.exceptions.InternalClientError):
        return True  # a connection left in a broken state: a fresh one cures it
    return isinstance(
        error,
        (
            asyncpg.PostgresConnectionError,
            asyncpg.AdminShutdownError,
            asyncpg.CrashShutdownError,
            asyncpg.CannotConnectNowError,
            asyncpg.TooManyConnectionsError,
            asyncpg.SerializationError,
            asyncpg.DeadlockDetectedError,
        ),
    )


def surely_rolled_back(error: BaseException) -> bool:
    """Transient errors after which the statement certainly did not take effect."""
    import asyncpg

    return isinstance(error, (asyncpg.SerializationError, asyncpg.DeadlockDetectedError))
