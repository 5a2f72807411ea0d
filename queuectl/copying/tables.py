"""The store-neutral row stream of ``store copy``: which tables are copied, and their values.

Each store reads its tables into these canonical rows and writes canonical rows into its own
tables (``storage/sqlite/copying.py``, ``storage/postgres/copying.py``), so that any source
pairs with any target. A row is a tuple of the table's ``columns``, in order; a column's
``Kind`` says what Python value stands for it, whatever each store keeps:

- ``TIME``: epoch seconds, a float (SQLite keeps them so; PostgreSQL keeps ``timestamptz``,
  read as ``extract(epoch ...)`` by the server and written as datetimes): most columns of a job
  then go across with no Python work per value;
- ``MINUTE``: the same, a minute's start (SQLite keeps whole epoch seconds);
- ``BOOL``: a ``bool`` (SQLite keeps 0 or 1);
- ``BYTES``: ``bytes``, or ``None`` where SQLite keeps NULL (PostgreSQL keeps ``''``);
- ``LIST``: the JSON text of a non-empty array, ``None`` for none (PostgreSQL keeps ``'[]'``);
- ``HISTORY``: a tuple of ``AttemptRecord``, ``None`` for none (each store writes its entries'
  times its own way);
- ``PLAIN``: the value as both stores keep it (text, numbers, NULL).

Only what a store keeps for good is copied. Not copied: workers' registrations (the copy is
refused while the source has live ones), the recent starts that rate limits count (their format
is each store's own; they matter for one rate window at most, after which the target counts its
own), and columns that one store derives for itself: SQLite's ``links`` (recomputed from the
dependencies copied) and PostgreSQL's ``watched`` (who follows a job now: nobody, on a new store).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Kind(enum.Enum):
    PLAIN = "plain"
    TIME = "time"
    MINUTE = "minute"
    BOOL = "bool"
    BYTES = "bytes"
    LIST = "list"
    HISTORY = "history"


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind = Kind.PLAIN


@dataclass(frozen=True)
class Table:
    """One copied table: its canonical ``name`` (also the count's key), and its columns."""

    name: str
    columns: tuple[Column, ...]
    #: Whether its rows may carry a job's output (batches are then kept small in bytes).
    heavy: bool = False

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)


def _columns(spec: str) -> tuple[Column, ...]:
    """Columns from ``"name name:kind ..."`` (a name alone is ``plain``)."""
    columns = []
    for word in spec.split():
        name, _, kind = word.partition(":")
        columns.append(Column(name, Kind(kind or "plain")))
    return tuple(columns)


JOBS = Table(
    "jobs",
    _columns(
        "seq id command queue priority timeout max_retries run_at:time state attempts"
        " created_at:time updated_at:time started_at:time finished_at:time exit_code last_error"
        " worker_id claim_token lease_expires_at:time stdout:bytes stderr:bytes cwd env progress"
        " schedule history:history entries attempt_worker attempt_host attempt_pid"
        " attempt_started:time attempt_outcome unique_key after:list no_retry_exit_codes:list"
        " waiting dependents"
    ),
    heavy=True,
)
#: Earlier attempts' output (the latest is the job row's).
OUTPUTS = Table("outputs", _columns("job_id entry stdout:bytes stderr:bytes"), heavy=True)
#: Running attempts' output as followers read it (a lost worker's job may still have some).
LIVE_OUTPUT = Table("live_output", _columns("seq job_id entry stream offset data:bytes"), heavy=True)
#: Who waits on whom, while the job depended on has not ended.
DEPENDENCIES = Table("dependencies", _columns("depends_on job_id"))
SETTINGS = Table("settings", _columns("key value"))
QUEUES = Table("queues", _columns("name paused:bool concurrency rate_count rate_seconds"))
#: Recent starts of rate-limited queues' jobs: not copied (each store keeps them its own way,
#: and they matter for one rate window at most: the target's windows start afresh), cleared.
QUEUE_STARTS = Table("queue_starts", ())
SCHEDULES = Table(
    "schedules",
    _columns(
        "name cron every tz job no_overlap:bool paused:bool next_run_at:time last_job"
        " created_at:time updated_at:time"
    ),
)
#: The dashboard's chart: attempts ended per minute.
FINISHED_COUNTS = Table("finished_counts", _columns("minute:minute state n"))

#: Every copied table, in the order written: jobs before the rows that name them.
TABLES: tuple[Table, ...] = (
    JOBS,
    OUTPUTS,
    LIVE_OUTPUT,
    DEPENDENCIES,
    SETTINGS,
    QUEUES,
    SCHEDULES,
    FINISHED_COUNTS,
)
#: The tables a target holding no job may still have rows in: the copy replaces them.
REPLACED: tuple[Table, ...] = (*TABLES[1:], QUEUE_STARTS)

#: Rows per batch: the most, and the first of a ``heavy`` table (a job may keep megabytes of
#: output: the first batch tells how big its rows are).
MAX_BATCH = 10_000
FIRST_HEAVY_BATCH = 16
#: About how many bytes of output a batch of a ``heavy`` table holds at most.
BATCH_BYTES = 16 * 1024 * 1024


def first_batch_size(table: Table) -> int:
    return FIRST_HEAVY_BATCH if table.heavy else MAX_BATCH


def next_batch_size(table: Table, rows: list[tuple[Any, ...]], current: int) -> int:
    """How many rows to read next: as many as fit ``BATCH_BYTES`` judging by ``rows``, so that
    jobs with megabytes of output each are not read ten thousand at a time."""
    if not table.heavy or not rows:
        return MAX_BATCH
    places = [place for place, column in enumerate(table.columns) if column.kind is Kind.BYTES]
    size = sum(len(row[place] or b"") for row in rows for place in places)
    per_row = size / len(rows) + 200  # the other columns, roughly
    return max(1, min(MAX_BATCH, int(BATCH_BYTES / per_row), current * 4))
