"""The PostgreSQL store's tables, their migrations, and the little of asyncpg it uses, typed.

Tables live in the connection's current schema (the first existing one on
``search_path``), never a hard-coded ``public``, so one database can hold
several independent queues. Needs PostgreSQL 13 or newer (``gen_random_uuid``).

Migrations are history: each is written out once and never edited. A new job
field is one more entry at the end of ``_MIGRATIONS``; the statements and the
row mapping (``sql.py``, ``rows.py``) follow the field table in ``queuectl.models``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from queuectl.errors import StoreCorrupt, StoreUnavailable
from queuectl.storage.postgres import flow_claim, history

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

#: What the dependency trigger's WHEN condition checked before migration 10: the job just ended.
_NOT_ENDED_NOW = """        IF NEW.state = OLD.state
            OR NEW.state NOT IN ('completed', 'dead', 'cancelled') THEN
            RETURN NULL;
        END IF;
"""


def _dependency_ended(*, replace: bool = False, guard: str = "") -> str:
    """The trigger function run when a job with dependents ends (migration 4); ``guard``: its
    first statements."""
    create = "CREATE OR REPLACE" if replace else "CREATE"
    return f"""    {create} FUNCTION jobs_dependency_ended() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    DECLARE
        doomed text[];
    BEGIN
{guard}        IF NEW.state <> 'completed' THEN
            WITH RECURSIVE chain (id, cause) AS (
                SELECT j.id, 'dependency ' || NEW.id || ' ended ' || NEW.state
                FROM job_dependencies AS d JOIN jobs AS j ON j.id = d.job_id
                WHERE d.depends_on = NEW.id AND j.state IN ('pending', 'failed')
                UNION
                SELECT j.id, 'dependency ' || chain.id || ' ended cancelled'
                FROM chain JOIN job_dependencies AS d ON d.depends_on = chain.id
                    JOIN jobs AS j ON j.id = d.job_id
                WHERE j.state IN ('pending', 'failed')
            ), cancelled AS (
                UPDATE jobs SET state = 'cancelled', last_error = c.cause, dependents = 0,
                    {history.FOLD}, updated_at = now()
                FROM (SELECT DISTINCT ON (id) id, cause FROM chain ORDER BY id, cause) AS c
                WHERE jobs.id = c.id
                RETURNING jobs.id
            )
            SELECT array_agg(id) INTO doomed FROM cancelled;
        END IF;
        -- Dependents wait on the jobs that ended no more: the links' rows go, and their counts.
        WITH gone AS (
            DELETE FROM job_dependencies WHERE depends_on = NEW.id OR depends_on = ANY(doomed)
            RETURNING job_id
        )
        UPDATE jobs SET waiting = jobs.waiting - g.n
        FROM (SELECT job_id, count(*) AS n FROM gone GROUP BY job_id) AS g
        WHERE jobs.id = g.job_id;
        UPDATE jobs SET dependents = 0 WHERE id = NEW.id;
        RETURN NULL;
    END
    $$;
"""


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
    # 2: operating jobs (version 2 of the SPEC): the cancelled state, cwd and env, progress,
    # schedule, the history of attempts and the output of earlier ones, live output chunks.
    """
    ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
    ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
        CHECK (state IN ('pending', 'processing', 'completed', 'failed', 'dead', 'cancelled'));
    -- Byte order: a prefix of an id is an index range of the primary key, whatever the
    -- database's collation (only the index is rebuilt; equality reads are unchanged).
    ALTER TABLE jobs ALTER COLUMN id TYPE text COLLATE "C";
    ALTER TABLE jobs
        ADD COLUMN cwd text,
        ADD COLUMN env text,
        ADD COLUMN progress text,
        ADD COLUMN schedule text,
        ADD COLUMN history jsonb NOT NULL DEFAULT '[]',
        ADD COLUMN entries integer NOT NULL DEFAULT 0;
    -- Held jobs: processing ones, and cancelled ones whose worker has not yet recorded the attempt.
    DROP INDEX jobs_lease;
    CREATE INDEX jobs_held ON jobs (lease_expires_at) WHERE claim_token IS NOT NULL;
    -- Tiny: only cancelled jobs still held; never touched by claims and results.
    CREATE INDEX jobs_cancelled_held ON jobs (claim_token)
        WHERE state = 'cancelled' AND claim_token IS NOT NULL;
    -- The output of each history entry but the latest (which is the job's stdout and stderr).
    CREATE TABLE job_outputs (
        job_id text COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        entry integer NOT NULL,
        stdout bytea NOT NULL,
        stderr bytea NOT NULL,
        PRIMARY KEY (job_id, entry)
    );
    -- What running attempts wrote lately, for followers on any host; dropped as the attempt ends.
    CREATE TABLE job_chunks (
        seq bigserial PRIMARY KEY,
        job_id text COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        entry integer NOT NULL,
        stream smallint NOT NULL CHECK (stream IN (1, 2)),
        "offset" bigint NOT NULL,
        data bytea NOT NULL
    );
    CREATE INDEX job_chunks_job ON job_chunks (job_id, seq);
    """,
    # 3: the latest history entry of a plain result in columns, not appended to the jsonb array
    # (``history``): what a job's first attempt writes costs less.
    """
    ALTER TABLE jobs
        ADD COLUMN attempt_worker text,
        ADD COLUMN attempt_host text,
        ADD COLUMN attempt_pid integer,
        ADD COLUMN attempt_started timestamptz,
        ADD COLUMN attempt_outcome text;  -- NULL: the latest entry, if any, is the array's last
    """,
    # 4: flow control, the jobs' part: unique keys, dependencies, exit codes not retried.
    f"""
    ALTER TABLE jobs
        ADD COLUMN unique_key text,
        ADD COLUMN after text NOT NULL DEFAULT '[]',  -- a JSON array of job ids
        ADD COLUMN no_retry_exit_codes text NOT NULL DEFAULT '[]',  -- a JSON array of ints
        -- How many of the jobs its after names have not ended yet (its rows in
        -- job_dependencies): above 0, the job waits.
        ADD COLUMN waiting integer NOT NULL DEFAULT 0,
        -- How many jobs wait on this one (its rows in job_dependencies as depends_on): 0 for
        -- nearly every job, so that the trigger below costs them one comparison.
        ADD COLUMN dependents integer NOT NULL DEFAULT 0;
    -- At most one unfinished job per key, held by the server under concurrent enqueues.
    CREATE UNIQUE INDEX jobs_unique_key ON jobs (unique_key)
        WHERE unique_key IS NOT NULL AND state IN ('pending', 'processing', 'failed');
    -- Who waits on whom, while the job depended on has not ended: what its end reads to
    -- release or cancel its dependents, then deletes.
    CREATE TABLE job_dependencies (
        depends_on text COLLATE "C" NOT NULL,
        job_id text COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        PRIMARY KEY (depends_on, job_id)
    );
    -- What a deleted job's ON DELETE CASCADE reads: without it, a purge scans the table per job.
    CREATE INDEX job_dependencies_job ON job_dependencies (job_id);
    -- A job with dependents ends, however it ends (a result, a cancel, the dead-letter path):
    -- in the same transaction each dependent waits on one job fewer, and if it ended dead or
    -- cancelled, its unfinished dependents are cancelled, and theirs, down the chain. The chain
    -- is walked by one recursive query, not by the trigger firing again for each link (their
    -- dependents are set to 0 as they are cancelled), so that its length is not bounded by the
    -- server's stack. search_path FROM CURRENT: this schema's tables.
{_dependency_ended()}    CREATE TRIGGER jobs_dependency_ended AFTER UPDATE OF state ON jobs FOR EACH ROW
        WHEN (NEW.dependents > 0 AND NEW.state <> OLD.state
            AND NEW.state IN ('completed', 'dead', 'cancelled'))
        EXECUTE FUNCTION jobs_dependency_ended();
    -- Claims see only jobs that wait on nothing.
    DROP INDEX jobs_due;
    CREATE INDEX jobs_due ON jobs (priority DESC, run_at, created_at, seq)
        WHERE state IN ('pending', 'failed') AND waiting = 0;
    """,
    # 5: flow control, the queues' part: pauses and limits.
    """
    CREATE TABLE queues (
        name text PRIMARY KEY,
        paused boolean NOT NULL DEFAULT false,
        concurrency integer,  -- NULL: no limit
        rate_count integer,  -- with rate_seconds: at most rate_count starts per rate_seconds
        rate_seconds double precision
    );
    -- Recent starts of rate-limited queues' jobs, one row per claim.
    CREATE TABLE queue_starts (queue text NOT NULL, started_at timestamptz NOT NULL);
    CREATE INDEX queue_starts_queue ON queue_starts (queue, started_at);
"""
    + flow_claim.function(flow_claim.PER_START),
    # 6: flow control, schedules.
    """
    CREATE TABLE schedules (
        name text PRIMARY KEY,
        cron text,  -- five fields or a nickname; NULL for an interval
        every double precision,  -- seconds; NULL for a cron expression
        tz text NOT NULL DEFAULT 'UTC',
        job text NOT NULL,  -- the job to enqueue, as the JSON object of its input fields
        no_overlap boolean NOT NULL DEFAULT false,
        paused boolean NOT NULL DEFAULT false,
        next_run_at timestamptz NOT NULL,
        last_job text,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
    );
    -- What workers read each second: the earliest due time of an active schedule, one index step.
    CREATE INDEX schedules_due ON schedules (next_run_at) WHERE NOT paused;
    """,
    # 7: a job someone follows or waits for (``Store.watch``): only such a job's completion is
    # announced with a NOTIFY (``results.py``).
    """
    ALTER TABLE jobs ADD COLUMN watched boolean NOT NULL DEFAULT false;
    """,
    # 8: the dashboard: attempts ended per minute (the chart).
    """
    -- Written by workers (``add_finished``), kept two days.
    CREATE TABLE finished_counts (
        minute timestamptz NOT NULL,  -- its start
        state text NOT NULL CHECK (state IN ('completed', 'failed', 'dead')),
        n bigint NOT NULL,
        PRIMARY KEY (minute, state)
    );
    """,
    # 9: a rate-limited queue's starts counted per bucket of its window, not one row per start
    # (``flow_claim.py``): a claim reads at most 101 rows of them and writes one.
    """
    DROP INDEX queue_starts_queue;
    DELETE FROM queue_starts;  -- a window's worth at most: the rate starts afresh once
    ALTER TABLE queue_starts ADD COLUMN starts integer NOT NULL DEFAULT 1;
    ALTER TABLE queue_starts ADD PRIMARY KEY (queue, started_at);
    """
    + flow_claim.function(flow_claim.PER_BUCKET, replace=True),
    # 10: cheaper claims and results. The server reads a trigger's WHEN condition anew for
    # every statement that updates a job's state (a claim, a result): the dependency trigger's
    # is cut to one comparison, and the rest moves into its function, which only jobs with
    # dependents reach. The flow claim of one job becomes one plain statement per case
    # (``flow_claim.PER_BUCKET_LEAN``).
    f"""
    DROP TRIGGER jobs_dependency_ended ON jobs;
{_dependency_ended(replace=True, guard=_NOT_ENDED_NOW)}
    CREATE TRIGGER jobs_dependency_ended AFTER UPDATE OF state ON jobs FOR EACH ROW
        WHEN (NEW.dependents > 0)
        EXECUTE FUNCTION jobs_dependency_ended();
    """
    + flow_claim.function(flow_claim.PER_BUCKET_LEAN, replace=True),
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
