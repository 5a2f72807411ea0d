"""Opening a SQLite store file safely: checks, pragmas, the schema and its migrations.

Plain ``sqlite3`` so that it can run in a worker thread at open time, and in the
short-lived CLI process that only inserts.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from queuectl.errors import StoreBusy, StoreCorrupt, StoreError, StoreUnavailable, UniqueKeyHeld
from queuectl.storage.sqlite import history

T = TypeVar("T")

#: Set, it overrides ``BUSY_TIMEOUT_SECONDS`` for tests (``queuectl.testing.busy_timeout``).
BUSY_TIMEOUT_ENV = "QUEUECTL_BUSY_TIMEOUT"
DEFAULT_BUSY_TIMEOUT_SECONDS = 10.0


def _busy_timeout() -> float:
    if BUSY_TIMEOUT_ENV not in os.environ:
        return DEFAULT_BUSY_TIMEOUT_SECONDS
    from queuectl.testing import busy_timeout  # a test hook: never imported otherwise

    return busy_timeout(os.environ[BUSY_TIMEOUT_ENV], DEFAULT_BUSY_TIMEOUT_SECONDS)


#: How long a writer waits for another process's write lock before giving up.
BUSY_TIMEOUT_SECONDS = _busy_timeout()
#: The longest one statement waits in SQLite's own busy handler. It sleeps in C, where neither
#: Ctrl-C nor a cancellation reaches it, so longer waits (up to ``BUSY_TIMEOUT_SECONDS``) are
#: made of such slices, retried from Python (``patiently``, ``connection.Database.patiently``).
BUSY_SLICE_SECONDS = min(0.1, BUSY_TIMEOUT_SECONDS)
#: The pause between two slices: some SQLITE_BUSY come at once, without the busy handler.
BUSY_PAUSE_SECONDS = 0.005

#: SQLite's result codes: SQLITE_BUSY and its extended SQLITE_BUSY_SNAPSHOT (``& 0xFF`` is 5).
_SQLITE_BUSY = 5
_SQLITE_BUSY_SNAPSHOT = 517


def is_busy(error: sqlite3.Error) -> bool:
    """Whether ``error`` is another connection's lock, which waiting may outlast.

    Not SQLITE_BUSY_SNAPSHOT: a read transaction that cannot become a write one never will.
    """
    code: int | None = getattr(error, "sqlite_errorcode", None)
    if code is None:
        return "database is locked" in str(error)
    return code & 0xFF == _SQLITE_BUSY and code != _SQLITE_BUSY_SNAPSHOT


def patiently(action: Callable[[], T], timeout: float = BUSY_TIMEOUT_SECONDS) -> T:
    """``action()``, tried again while the store is locked, for up to ``timeout`` seconds.

    ``action`` must change nothing when it fails busy (one statement in autocommit, a ``BEGIN
    IMMEDIATE``, or a transaction that rolls back). Between tries, Python runs signal handlers:
    Ctrl-C ends the wait at once, not when the busy timeout would.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except sqlite3.OperationalError as error:
            if not is_busy(error) or time.monotonic() >= deadline:
                raise
        time.sleep(BUSY_PAUSE_SECONDS)


_SQLITE_HEADER = b"SQLite format 3\x00"

#: Every connection that writes jobs runs it: a dependency chain is cancelled link by link, each
#: cancel firing the trigger ``jobs_dependency_ended`` again (migration 5).
RECURSIVE_TRIGGERS = "PRAGMA recursive_triggers = ON"

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema.
    """
    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        command TEXT NOT NULL,
        queue TEXT NOT NULL,
        priority INTEGER NOT NULL,
        timeout REAL,
        max_retries INTEGER NOT NULL,
        run_at REAL NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        exit_code INTEGER,
        last_error TEXT,
        worker_id TEXT,
        claim_token TEXT,
        lease_expires_at REAL,
        stdout BLOB,
        stderr BLOB
    );
    -- The claim walks this in order and stops after LIMIT rows: cheap with millions of rows.
    CREATE INDEX jobs_due ON jobs (priority DESC, run_at, created_at, seq)
        WHERE state IN ('pending', 'failed');
    CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE state = 'processing';
    CREATE INDEX jobs_state ON jobs (state, created_at);
    CREATE INDEX jobs_created ON jobs (created_at, seq);
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL,
        running INTEGER NOT NULL DEFAULT 0,
        stop_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: the earliest waiting run_at (status, and how long an idle worker sleeps) in one index step.
    """
    CREATE INDEX jobs_waiting_run_at ON jobs (run_at) WHERE state IN ('pending', 'failed');
    """,
    # 3: version 2 of the product: new job fields, history, earlier attempts' output, live output.
    """
    ALTER TABLE jobs ADD COLUMN cwd TEXT;
    ALTER TABLE jobs ADD COLUMN env TEXT;  -- a JSON object, or NULL
    ALTER TABLE jobs ADD COLUMN progress TEXT;
    ALTER TABLE jobs ADD COLUMN schedule TEXT;
    -- The latest HISTORY_LIMIT attempts, oldest first: a JSON array of AttemptRecord.to_dict().
    ALTER TABLE jobs ADD COLUMN history TEXT NOT NULL DEFAULT '[]';
    -- How many history entries the job ever had (not a field): entry numbers of attempt_output.
    ALTER TABLE jobs ADD COLUMN entries INTEGER NOT NULL DEFAULT 0;
    -- Held jobs by lease end: processing ones, and cancelled ones whose worker has not yet
    -- recorded the attempt (lapsed claims, renewals). Only held rows: as small as the old one.
    DROP INDEX jobs_lease;
    CREATE INDEX jobs_held ON jobs (lease_expires_at) WHERE claim_token IS NOT NULL;
    -- What a worker asks each poll interval (cancelled_claims): nearly always empty.
    CREATE INDEX jobs_cancelled_held ON jobs (claim_token)
        WHERE state = 'cancelled' AND claim_token IS NOT NULL;
    -- The output of every kept entry but the latest (which is the job row's stdout and stderr).
    CREATE TABLE job_outputs (
        job_id TEXT NOT NULL,
        entry INTEGER NOT NULL,
        stdout BLOB,
        stderr BLOB,
        PRIMARY KEY (job_id, entry)
    );
    -- Running attempts' output as followers read it. AUTOINCREMENT: a seq is never reused, so a
    -- follower's "after seq" never skips a later chunk.
    CREATE TABLE output_chunks (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL,
        entry INTEGER NOT NULL,
        stream INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    CREATE INDEX output_chunks_job ON output_chunks (job_id, seq);
    -- A deleted job takes its outputs along, however it is deleted (purge, retention).
    CREATE TRIGGER jobs_deleted AFTER DELETE ON jobs BEGIN
        DELETE FROM job_outputs WHERE job_id = old.id;
        DELETE FROM output_chunks WHERE job_id = old.id;
    END;
    """,
    # 4: the latest history entry of a plain result in columns, not appended to the JSON array
    # (``history``): what a job's first attempt writes costs less.
    """
    ALTER TABLE jobs ADD COLUMN attempt_worker TEXT;
    ALTER TABLE jobs ADD COLUMN attempt_host TEXT;
    ALTER TABLE jobs ADD COLUMN attempt_pid INTEGER;
    ALTER TABLE jobs ADD COLUMN attempt_started REAL;
    -- NULL: the latest entry, if any, is the array's last.
    ALTER TABLE jobs ADD COLUMN attempt_outcome TEXT;
    """,
    # 5: flow control, the jobs' part: unique keys, dependencies, exit codes not retried.
    f"""
    ALTER TABLE jobs ADD COLUMN unique_key TEXT;
    ALTER TABLE jobs ADD COLUMN after TEXT;  -- a JSON array of job ids, or NULL for none
    ALTER TABLE jobs ADD COLUMN no_retry_exit_codes TEXT;  -- a JSON array of ints, or NULL
    -- How many of the jobs its after names have not ended yet (its rows in job_dependencies):
    -- above 0, the job waits.
    ALTER TABLE jobs ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;
    -- How many jobs wait on this one (its rows in job_dependencies as depends_on): 0 for nearly
    -- every job, so that the trigger below costs them one comparison.
    ALTER TABLE jobs ADD COLUMN dependents INTEGER NOT NULL DEFAULT 0;
    -- How many jobs were above it in its longest chain of dependencies when it was enqueued:
    -- a cancel goes down a chain one nested trigger per link, and SQLite nests at most 1,000.
    ALTER TABLE jobs ADD COLUMN links INTEGER NOT NULL DEFAULT 0;
    -- At most one unfinished job per key, held by the store under concurrent enqueues.
    CREATE UNIQUE INDEX jobs_unique_key ON jobs (unique_key)
        WHERE unique_key IS NOT NULL AND state IN ('pending', 'processing', 'failed');
    -- Who waits on whom, while the job depended on has not ended: what its end reads to
    -- release or cancel its dependents, then deletes.
    CREATE TABLE job_dependencies (
        depends_on TEXT NOT NULL,
        job_id TEXT NOT NULL,
        PRIMARY KEY (depends_on, job_id)
    ) WITHOUT ROWID;
    CREATE INDEX job_dependencies_job ON job_dependencies (job_id);
    -- A job with dependents ends, however it ends (a result, a cancel, the dead-letter path):
    -- in the same transaction each dependent waits on one job fewer, and if it ended dead or
    -- cancelled, its unfinished dependents are cancelled, and theirs, down the chain (each
    -- cancel fires this trigger again: every connection sets PRAGMA recursive_triggers).
    CREATE TRIGGER jobs_dependency_ended AFTER UPDATE OF state ON jobs
    WHEN new.dependents > 0 AND new.state <> old.state
        AND new.state IN ('completed', 'dead', 'cancelled')
    BEGIN
        UPDATE jobs SET state = 'cancelled', last_error = 'dependency ' || new.id || ' ended ' || new.state,
            {history.FOLD}, updated_at = new.updated_at
        -- +state: found by id from the dependents' rows, never by a scan of every pending job.
        WHERE new.state <> 'completed' AND +state IN ('pending', 'failed')
            AND id IN (SELECT job_id FROM job_dependencies WHERE depends_on = new.id);
        UPDATE jobs SET waiting = waiting - 1
        WHERE id IN (SELECT job_id FROM job_dependencies WHERE depends_on = new.id);
        DELETE FROM job_dependencies WHERE depends_on = new.id;
        UPDATE jobs SET dependents = 0 WHERE id = new.id;
    END;
    -- A job deleted while it still waits (purge of a cancelled one) leaves no rows behind.
    CREATE TRIGGER jobs_dependent_deleted AFTER DELETE ON jobs WHEN old.waiting > 0 BEGIN
        DELETE FROM job_dependencies WHERE job_id = old.id;
    END;
    -- Claims and idle workers' sleeps see only jobs that wait on nothing.
    DROP INDEX jobs_due;
    CREATE INDEX jobs_due ON jobs (priority DESC, run_at, created_at, seq)
        WHERE state IN ('pending', 'failed') AND waiting = 0;
    DROP INDEX jobs_waiting_run_at;
    CREATE INDEX jobs_waiting_run_at ON jobs (run_at) WHERE state IN ('pending', 'failed') AND waiting = 0;
    """,
    # 6: flow control, the queues' part: pauses and limits.
    """
    CREATE TABLE queues (
        name TEXT PRIMARY KEY,
        paused INTEGER NOT NULL DEFAULT 0,
        concurrency INTEGER,  -- NULL: no limit
        rate_count INTEGER,  -- with rate_seconds: at most rate_count starts per rate_seconds
        rate_seconds REAL
    );
    -- Recent starts of rate-limited queues' jobs, one row per claim.
    CREATE TABLE queue_starts (queue TEXT NOT NULL, started_at REAL NOT NULL);
    CREATE INDEX queue_starts_queue ON queue_starts (queue, started_at);
    """,
    # 7: flow control, schedules.
    """
    CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        cron TEXT,  -- five fields or a nickname; NULL for an interval
        every REAL,  -- seconds; NULL for a cron expression
        tz TEXT NOT NULL DEFAULT 'UTC',
        job TEXT NOT NULL,  -- the job to enqueue, as the JSON object of its input fields
        no_overlap INTEGER NOT NULL DEFAULT 0,
        paused INTEGER NOT NULL DEFAULT 0,
        next_run_at REAL NOT NULL,
        last_job TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    -- What workers read each second: the earliest due time of an active schedule, one index step.
    CREATE INDEX schedules_due ON schedules (next_run_at) WHERE paused = 0;
    """,
    # 8: the dashboard: attempts ended per minute (the chart), each queue's oldest due job.
    """
    -- Written by workers (``add_finished``), kept two days.
    CREATE TABLE finished_counts (
        minute INTEGER NOT NULL,  -- epoch seconds of its start
        state TEXT NOT NULL,  -- completed, failed or dead
        n INTEGER NOT NULL,
        PRIMARY KEY (minute, state)
    ) WITHOUT ROWID;
    -- Each queue's earliest waiting run_at in a few steps (``oldest_due``, ``next_run_at``),
    -- however many wait. It replaces jobs_waiting_run_at (the same rows, the queue first), so
    -- that a claim or an enqueue keeps as many indexes up to date as before.
    DROP INDEX jobs_waiting_run_at;
    CREATE INDEX jobs_queue_due ON jobs (queue, run_at) WHERE state IN ('pending', 'failed') AND waiting = 0;
    """,
    # 9: a rate-limited queue's starts counted per hundredth of its window (as PostgreSQL's 9):
    # a claim sums at most 101 rows and adds to one, however fast the queue runs.
    """
    CREATE TABLE queue_buckets (
        queue TEXT NOT NULL,
        started_at REAL NOT NULL,  -- the bucket's start: a multiple of rate_seconds / 100
        starts INTEGER NOT NULL,
        PRIMARY KEY (queue, started_at)
    ) WITHOUT ROWID;
    INSERT INTO queue_buckets (queue, started_at, starts)
    SELECT s.queue, CAST(s.started_at / (q.rate_seconds / 100) AS INTEGER) * (q.rate_seconds / 100), count(*)
    FROM queue_starts AS s JOIN queues AS q ON q.name = s.queue AND q.rate_seconds IS NOT NULL
    GROUP BY 1, 2;
    DROP TABLE queue_starts;
    ALTER TABLE queue_buckets RENAME TO queue_starts;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


@contextmanager
def translate_errors(path: Path) -> Iterator[None]:
    """Turn sqlite3 errors into queuectl's, naming the file; the driver error stays as cause."""
    try:
        yield
    except StoreError:
        raise
    except sqlite3.IntegrityError as error:
        if "jobs.unique_key" in str(error):  # a retry of a job whose key another job took meanwhile
            raise UniqueKeyHeld() from error
        raise store_error(path, error) from error
    except sqlite3.Error as error:
        raise store_error(path, error) from error


def store_error(path: Path, error: sqlite3.Error) -> StoreError:
    text = str(error)
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        return StoreBusy(f"the store {path} stayed locked by another process: {text}")
    if isinstance(error, sqlite3.DatabaseError) and (
        "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered
    ):
        return StoreCorrupt(f"the store {path} is not a queuectl database or is damaged: {text}")
    if "unable to open database file" in lowered:
        problem = folder_problem(path)
        if problem is not None:
            return StoreUnavailable(f"cannot use the store {path}: {problem}")
    return StoreUnavailable(f"cannot use the store {path}: {text}")


def folder_problem(path: Path) -> str | None:
    """Why SQLite could not open ``path`` for its folder's sake, if that is why.

    SQLite says only "unable to open database file". In WAL mode it must create files next to
    the store (``-wal``, ``-shm``), even to read it, so the folder must exist and be writable.
    ``os.access`` answers as the kernel would for this process: for root, a read-only mount.
    """
    folder = Path(os.path.abspath(path)).parent
    if not folder.exists():
        return f"folder {folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        needs = f"{path.name}-wal" if path.exists() else path.name
        return f"folder {folder} is not writable (SQLite needs to create {needs} there)"
    return None


def check_file(path: Path) -> None:
    """Refuse, without touching it, a file that is not a SQLite database."""
    if path.is_dir():
        raise StoreUnavailable(f"cannot use the store {path}: it is a directory")
    try:
        with path.open("rb") as handle:
            header = handle.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as error:
        raise StoreUnavailable(f"cannot read the store {path}: {error.strerror}") from error
    if header and header != _SQLITE_HEADER:
        raise StoreCorrupt(f"the store {path} is not a SQLite database; it was left untouched")


def connect(path: Path, *, durable: bool) -> sqlite3.Connection:
    """Check, create or migrate the store, and return a connection to it.

    Autocommit mode, WAL, and a busy timeout of one slice (``BUSY_SLICE_SECONDS``): a caller
    that waits for the write lock retries with ``patiently``. ``durable`` connections fsync every
    commit (``synchronous=FULL``): enqueues must survive power loss. Worker
    connections use ``NORMAL``: a claim or result lost to power loss only means
    the job runs again, which at-least-once allows.
    """
    check_file(path)
    with translate_errors(path):
        connection = sqlite3.connect(
            path, timeout=BUSY_SLICE_SECONDS, isolation_level=None, check_same_thread=False
        )
        try:
            # Refuses a foreign database before anything is written.
            patiently(lambda: _schema_version(connection, path))
            patiently(lambda: _enable_wal(connection))
            patiently(lambda: _migrate(connection, path))
            connection.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            connection.execute(RECURSIVE_TRIGGERS)
        except BaseException:
            connection.close()
            raise
    return connection


def prepare(path: Path) -> None:
    """Check the file, create or migrate the schema. Safe when many processes race."""
    connect(path, durable=False).close()


def _enable_wal(connection: sqlite3.Connection) -> None:
    (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
    if str(mode).lower() != "wal":
        connection.execute("PRAGMA journal_mode = WAL").fetchone()


def _migrate(connection: sqlite3.Connection, path: Path) -> None:
    version = _schema_version(connection, path)
    if version == SCHEMA_VERSION:
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have migrated while we waited for the lock.
        version = _schema_version(connection, path)
        if version > SCHEMA_VERSION:
            raise StoreCorrupt(
                f"the store {path} has schema version {version}; this queuectl knows up to {SCHEMA_VERSION}"
            )
        if version == 0:
            connection.execute("CREATE TABLE queuectl_schema (version INTEGER NOT NULL)")
            connection.execute("INSERT INTO queuectl_schema (version) VALUES (0)")
        for number in range(version, SCHEMA_VERSION):
            for statement in statements(MIGRATIONS[number]):
                connection.execute(statement)
        connection.execute("UPDATE queuectl_schema SET version = ?", (SCHEMA_VERSION,))
        connection.execute("COMMIT")
    except BaseException:
        rollback(connection)
        raise


def statements(script: str) -> Iterator[str]:
    """The statements of ``script``, one by one (a trigger's body is part of its statement).

    Not ``executescript``: it commits the open transaction first, and a migration is one.
    """
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""
    if pending.strip(" \n;"):
        yield pending


def rollback(connection: sqlite3.Connection) -> None:
    """Roll back the open transaction, unless SQLite already did.

    After some errors (disk full, I/O error, out of memory) SQLite rolls back by itself; a second
    ROLLBACK would fail with "no transaction is active" and hide the error that says why.
    """
    if connection.in_transaction:
        connection.execute("ROLLBACK")


def _schema_version(connection: sqlite3.Connection, path: Path) -> int:
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "queuectl_schema" not in tables:
        if tables:
            raise StoreCorrupt(
                f"the store {path} is a SQLite database of another program; it was left untouched"
            )
        return 0
    row = connection.execute("SELECT version FROM queuectl_schema").fetchone()
    if row is None:
        return 0
    return int(row[0])
