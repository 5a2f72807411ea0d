"""Opening a SQLite store file safely: checks, pragmas, the schema and its migrations.

Plain ``sqlite3`` so that it can run in a worker thread at open time, and in the
short-lived CLI process that only inserts.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from queuectl.errors import StoreBusy, StoreCorrupt, StoreError, StoreUnavailable

#: Overrides ``BUSY_TIMEOUT_SECONDS`` (seconds, > 0) for the processes it is set in. Meant for
#: tests, which must reach the timeout without waiting the full default; a value that is not a
#: positive finite number is ignored.
BUSY_TIMEOUT_ENV = "QUEUECTL_BUSY_TIMEOUT"
DEFAULT_BUSY_TIMEOUT_SECONDS = 10.0


def _busy_timeout(text: str | None) -> float:
    try:
        seconds = float(text) if text is not None else DEFAULT_BUSY_TIMEOUT_SECONDS
    except ValueError:
        return DEFAULT_BUSY_TIMEOUT_SECONDS
    return seconds if math.isfinite(seconds) and seconds > 0 else DEFAULT_BUSY_TIMEOUT_SECONDS


#: How long a writer waits for another process's write lock before giving up.
BUSY_TIMEOUT_SECONDS = _busy_timeout(os.environ.get(BUSY_TIMEOUT_ENV))

_SQLITE_HEADER = b"SQLite format 3\x00"

_MIGRATIONS: tuple[str, ...] = (
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
)

SCHEMA_VERSION = len(_MIGRATIONS)


@contextmanager
def translate_errors(path: Path) -> Iterator[None]:
    """Turn sqlite3 errors into queuectl's, naming the file; the driver error stays as cause."""
    try:
        yield
    except StoreError:
        raise
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
    return StoreUnavailable(f"cannot use the store {path}: {text}")


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

    Autocommit mode, WAL, a busy timeout. ``durable`` connections fsync every
    commit (``synchronous=FULL``): enqueues must survive power loss. Worker
    connections use ``NORMAL``: a claim or result lost to power loss only means
    the job runs again, which at-least-once allows.
    """
    check_file(path)
    with translate_errors(path):
        connection = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        try:
            _schema_version(connection, path)  # refuses a foreign database before anything is written
            _retry_busy(lambda: _enable_wal(connection))
            _migrate(connection, path)
            connection.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        except BaseException:
            connection.close()
            raise
    return connection


def prepare(path: Path) -> None:
    """Check the file, create or migrate the schema. Safe when many processes race."""
    connect(path, durable=False).close()


#: SQLite checkpoints the WAL by itself after commits once it holds 1,000 pages (~4 MiB), but
#: those checkpoints wait for no one: a reader that is almost always inside a transaction (a
#: dashboard polling in a loop) keeps them from ever emptying the WAL, which then grows with every
#: commit (~35 MiB in 3,000 jobs in tests/test_faults_sqlite.py). Past this size the store forces
#: a checkpoint that does wait for the readers' next gap.
WAL_LIMIT_BYTES = 16 * 1024 * 1024
#: How long that checkpoint may wait for readers. Writers wait meanwhile (it holds the write
#: lock), well within their busy timeout; a reader needs two transitions between transactions.
WAL_CHECKPOINT_WAIT_SECONDS = 1.0


def shrink_wal(path: Path) -> bool | None:
    """If the WAL outgrew ``WAL_LIMIT_BYTES``, copy it into the database and truncate it.

    Returns ``None`` when it was small enough, else whether the checkpoint completed
    (``False``: a reader stayed in the WAL for the whole wait).
    """
    try:
        if path.with_name(path.name + "-wal").stat().st_size <= WAL_LIMIT_BYTES:
            return None
    except FileNotFoundError:
        return None
    with translate_errors(path):
        connection = sqlite3.connect(path, timeout=WAL_CHECKPOINT_WAIT_SECONDS, isolation_level=None)
        try:
            (blocked, _, _) = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            connection.close()
    return not blocked


def _enable_wal(connection: sqlite3.Connection) -> None:
    (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
    if str(mode).lower() != "wal":
        connection.execute("PRAGMA journal_mode = WAL").fetchone()


def _retry_busy(action: Callable[[], None]) -> None:
    """Switching to WAL can fail with SQLITE_BUSY at once, without the busy handler."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            action()
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


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
            for statement in _MIGRATIONS[number].split(";"):
                if statement.strip():
                    connection.execute(statement)
        connection.execute("UPDATE queuectl_schema SET version = ?", (SCHEMA_VERSION,))
        connection.execute("COMMIT")
    except BaseException:
        rollback(connection)
        raise


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
