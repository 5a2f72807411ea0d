"""What a claim writes on PostgreSQL: an attempt's result, its release, its live output.

Each is one statement (one round trip, one transaction), conditional on the claim's token, and
each is work for ``Database.run`` that checks, after a lost reply, what its first try did.

An attempt becomes a history entry in the statement that records it (``history``: a plain
result's in the latest entry's columns, any other appended to the array); the row's output
becomes that entry's, and the entry before it moves its output to ``job_outputs`` in
the same statement. The plain result (a job's first attempt, no live output) needs none of
that: its statement is the update alone (``finish(first=True)``). Which jobs may have an
earlier entry is known without reading the row: every write that appends an entry sets
``finished_at``, so a claimed job whose ``finished_at`` is unset has none (``first_entry``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from queuectl.models import AttemptRecord, Claim, JobState, Outcome
from queuectl.storage.base import HISTORY_LIMIT
from queuectl.storage.postgres import history, sql
from queuectl.storage.postgres.connection import Work
from queuectl.storage.postgres.rows import entry_arguments, seconds
from queuectl.storage.postgres.schema import Connection

# --- results: a history entry each ---------------------------------------------------------------


def _entry_written(written: str) -> str:
    """The CTEs that follow ``written``, an update of job ``$1`` that ``RETURNING entries`` (the
    new count): the output of the entry before moves out of the row to ``job_outputs`` (if it
    has some), and the outputs of entries beyond the latest ``HISTORY_LIMIT`` go.

    Every part of a statement reads its snapshot, so ``before`` is the row as it was; its
    output cannot have changed since, as only the claim's holder writes it. The conditions on
    ``written`` are one-time filters: on a job's first entry, neither part reads anything.
    """
    return f"""kept AS (
    INSERT INTO job_outputs (job_id, entry, stdout, stderr)
    SELECT before.id, before.entries, before.stdout, before.stderr
    FROM jobs AS before
    WHERE (SELECT entries FROM {written}) > 1 AND before.id = $1
        AND (length(before.stdout) > 0 OR length(before.stderr) > 0)
    ON CONFLICT (job_id, entry) DO NOTHING
), forgotten AS (
    DELETE FROM job_outputs
    WHERE (SELECT entries FROM {written}) > {HISTORY_LIMIT} AND job_id = $1
        AND entry <= (SELECT entries FROM {written}) - {HISTORY_LIMIT}
)"""


def _record(*, first: bool, cancelled: bool) -> str:
    """Records an attempt's outcome if the claim ($1, $2) still holds the job: a ``processing``
    one, or, for a ``cancelled`` outcome, a ``cancelled`` one (only the entry, its output, the end
    time and the claim change then). The history entry is the attempt's times ($6, $7), exit
    code ($4) and error ($5) with its worker, host, pid and outcome ($12...$15): in the latest
    entry's columns (``history``; ``first``: the job has no entry to fold into the array first),
    but for a ``cancelled`` outcome, whose exit code and error are not the row's.

    Any other outcome takes a statement of its own (``cancelled`` False), without that case's
    expressions: the server prepares every expression of a statement each time it runs it,
    taken or not, and the history entry of a cancel is most of them."""
    if not cancelled:
        return _plain_record(first=first)
    kept = "history" if first else history.FOLDED
    latest = [
        f"CASE WHEN $3::text = 'cancelled' THEN NULL ELSE {value} END"
        for value in ("$12::text", "$13::text", "$14::integer", "$6::timestamptz", "$15::text")
    ]
    entry = history.entry_of(
        ["$12::text", "$13::text", "$14::integer", "$6", "$7", "$4::integer", "$15::text", "$5::text"]
    )
    return f"""
    UPDATE jobs SET state = $3::text,
        exit_code = CASE WHEN $3::text = 'cancelled' THEN exit_code ELSE $4::integer END,
        last_error = CASE WHEN $3::text = 'cancelled' THEN last_error ELSE $5::text END,
        started_at = coalesce($6, started_at), finished_at = $7, stdout = $8, stderr = $9,
        run_at = CASE WHEN $3::text = 'failed' THEN now() + $10::float8 * interval '1 second'
                      ELSE run_at END,
        history = CASE WHEN $3::text = 'cancelled' THEN {history.FOLDED} || {entry}
                       ELSE {kept} END,
        attempt_worker = {latest[0]}, attempt_host = {latest[1]}, attempt_pid = {latest[2]},
        attempt_started = {latest[3]}, attempt_outcome = {latest[4]}, entries = entries + 1,
        worker_id = NULL, claim_token = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE id = $1 AND claim_token = $2
        AND state = CASE WHEN $3::text = 'cancelled' THEN 'cancelled' ELSE 'processing' END
    RETURNING entries, watched, dependents, queue
"""


def _plain_record(*, first: bool) -> str:
    """``_record`` of an outcome other than ``cancelled``: the same writes, fewer expressions."""
    folded = "" if first else f"history = {history.FOLDED},\n        "
    return f"""
    UPDATE jobs SET state = $3::text, exit_code = $4::integer, last_error = $5::text,
        started_at = coalesce($6, started_at), finished_at = $7, stdout = $8, stderr = $9,
        run_at = CASE WHEN $3::text = 'failed' THEN now() + $10::float8 * interval '1 second'
                      ELSE run_at END,
        {folded}attempt_worker = $12::text, attempt_host = $13::text, attempt_pid = $14::integer,
        attempt_started = $6::timestamptz, attempt_outcome = $15::text, entries = entries + 1,
        worker_id = NULL, claim_token = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE id = $1 AND claim_token = $2 AND state = 'processing'
    RETURNING entries, watched, dependents, queue
"""


#: How many parameters ``FINISH`` takes: a claim after it starts at the next.
FINISH_PARAMETERS = 15


#: When a recorded end is announced (NOTIFY): a NOTIFY wakes every listening connection of the
#: database, whatever its channel, so one per job would cost every worker, busy or not. Only an
#: end someone may wait for is: the job is watched (``Store.watch``), did not complete (a retry
#: or a dead end may be news to idle workers), had dependents (they may now be due), or freed a
#: slot of a queue with a concurrency limit (a worker may be held back by it).
#: ``finish_and_claim`` (the plain claim: no queue has a limit, as far as the worker knows) leaves
#: out the last case, which ``finish`` alone (no claim: a stopping worker's) and
#: ``finish_and_flow_claim`` check.
WAITED_FOR = "$3::text <> 'completed' OR done.watched OR done.dependents > 0"
LIMITED = "EXISTS (SELECT FROM queues AS q WHERE q.name = done.queue AND q.concurrency IS NOT NULL)"
HEARD = f"{WAITED_FOR} OR {LIMITED}"


def _recorded(*, first: bool, streamed: bool, cancelled: bool, heard: str = HEARD) -> str:
    """``_record`` and what follows it, as CTEs; ``first``: the job had no entry before (no
    earlier output to move), ``streamed``: the attempt wrote chunks (they go). ``wake`` counts
    the jobs recorded (``n``, 0 or 1) and announced, when ``heard`` (``HEARD``)."""
    parts = [f"done AS ({_record(first=first, cancelled=cancelled)})"]
    if not first:
        parts.append(_entry_written("done"))
    if streamed:
        parts.append("dropped AS (DELETE FROM job_chunks WHERE EXISTS (SELECT FROM done) AND job_id = $1)")
    parts.append(f"heard AS (SELECT pg_notify($11, 'finished') FROM done WHERE {heard})")
    # What the statement's last part reads, so that ``heard`` runs (a CTE nobody reads does not).
    parts.append(
        "wake AS MATERIALIZED (SELECT (SELECT count(*) FROM done) AS n,"
        " (SELECT count(*) FROM heard) AS heard)"
    )
    return ", ".join(parts)


@functools.cache
def finish(*, first: bool = False, streamed: bool = False, cancelled: bool = True) -> str:
    """The statement that records an outcome: any job (``first`` only for a job that had no
    history entry when it was claimed: the worker's plain path reads and writes nothing more)."""
    recorded = _recorded(first=first, streamed=streamed, cancelled=cancelled)
    return f"WITH {recorded}\nSELECT 1 FROM wake WHERE n > 0"


@functools.cache
def finish_and_claim(
    *, queues: bool, first: bool = False, streamed: bool = False, cancelled: bool = True
) -> str:
    """``finish`` and a claim in one statement, one round trip: what a worker does as a job ends.

    ``finish``'s parameters (``FINISH_PARAMETERS``), then the claim's, shifted by as many.
    Every part sees the statement's snapshot, so the claim cannot take the job just finished.
    Its commit does not wait for the WAL flush (``synchronous_commit`` off for this transaction
    only): lost to a server crash, a result or claim only means that the job runs again, which
    at-least-once allows. Enqueues keep the server's default.
    """
    claim = sql.shift_parameters(sql.CLAIM_QUEUES if queues else sql.CLAIM_ANY_QUEUE, FINISH_PARAMETERS)
    return f"""
WITH {_recorded(first=first, streamed=streamed, cancelled=cancelled, heard=WAITED_FOR)}, relaxed AS (
    SELECT set_config('synchronous_commit', 'off', true)
), claimed AS ({claim})
SELECT (SELECT n FROM wake) AS finished, claimed.*
FROM (SELECT 1 FROM relaxed) AS one LEFT JOIN claimed ON true
"""


@functools.cache
def finish_and_flow_claim(*, first: bool = False, streamed: bool = False, cancelled: bool = True) -> str:
    """``finish_and_claim`` with the claim that honours queues' settings (``sql.FLOW_CLAIM``),
    still one round trip. The claim's function runs once the result is recorded (its first
    argument depends on the count of what was), and, being volatile, reads with snapshots of its
    own that see it: the finished job no longer counts against its queue's concurrency.

    A slot freed in a queue with a concurrency limit is announced only if this claim did not
    take it again (a job of that queue): if it did, nobody else could have.
    """
    n = FINISH_PARAMETERS
    heard = (
        f"{WAITED_FOR} OR ({LIMITED} AND NOT EXISTS (SELECT FROM claimed WHERE claimed.queue = done.queue))"
    )
    claim = f"""claimed AS MATERIALIZED (
    SELECT {sql.CLAIM_COLUMNS}
    FROM ended, queuectl_flow_claim(${n + 1}, ${n + 2}::float8, (${n + 3} + 0 * ended.n)::integer,
                                    ${n + 4}::text, ${n + 5}::text[])
)"""
    recorded = _recorded(first=first, streamed=streamed, cancelled=cancelled, heard=heard)
    # ``heard`` reads ``claimed``, which must follow ``done``: split ``_recorded`` around it.
    before, _, after = recorded.partition(", heard AS (")
    return f"""
WITH {before}, relaxed AS (
    SELECT set_config('synchronous_commit', 'off', true)
), ended AS MATERIALIZED (SELECT count(*) AS n FROM done), {claim}, heard AS ({after}
SELECT ended.n AS finished, claimed.*
FROM ended CROSS JOIN (SELECT 1 FROM relaxed) AS one CROSS JOIN wake LEFT JOIN claimed ON true
"""


#: The statements for any job: ``finish(...)`` and ``finish_and_claim(...)`` give the others.
FINISH = finish()
FINISH_AND_CLAIM_ANY_QUEUE = finish_and_claim(queues=False)
FINISH_AND_CLAIM_QUEUES = finish_and_claim(queues=True)
#: Whether a finish whose reply was lost committed: the job shows exactly that outcome, unheld.
FINISHED_AS = "SELECT 1 FROM jobs WHERE id = $1 AND state = $2 AND finished_at = $3 AND claim_token IS NULL"

#: Back to ``pending`` uncounted, with the ``stopped`` entry ``$3``... (no output kept: the row's
#: output is that entry's); a job cancelled meanwhile stays ``cancelled``, unheld. Like every
#: write that appends an entry, it sets ``finished_at``. The channel is the last parameter.
RELEASE = f"""
WITH back AS (
    UPDATE jobs SET state = CASE WHEN state = 'cancelled' THEN 'cancelled' ELSE 'pending' END,
        attempts = greatest(attempts - 1, 0),
        started_at = coalesce(${3 + 3}::timestamptz, started_at),
        finished_at = coalesce(${3 + 4}::timestamptz, now()),
        stdout = '', stderr = '', {history.append(3)},
        worker_id = NULL, claim_token = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE id = $1 AND claim_token = $2 AND state IN ('processing', 'cancelled')
    RETURNING entries
), {_entry_written("back")}, dropped AS (
    DELETE FROM job_chunks WHERE EXISTS (SELECT FROM back) AND job_id = $1
)
SELECT pg_notify(${3 + history.ENTRY_PARAMETERS}, 'released') FROM back
"""
#: Whether a release whose reply was lost committed: the job is unheld, that entry ($2...) its last.
RELEASED_AS = (
    f"SELECT 1 FROM jobs WHERE id = $1 AND claim_token IS NULL AND history -> -1 = {history.entry(2)}"
)

# --- live output ---------------------------------------------------------------------------------

#: New chunks ($5-$7: streams, offsets, data) of the running attempt of job $1 held by claim $2,
#: as entry ``entries + 1``; ``$3`` progress (NULL: unchanged), ``$4`` the lease, ``$8`` how many
#: bytes of each stream to keep, ``$9`` the channel. Chunks that end more than ``$8`` bytes
#: before their stream's end are not kept (new ones not inserted, earlier ones deleted), nor
#: are those of other attempts (a lost worker's).
_APPEND_OUTPUT = """
WITH held AS (
    UPDATE jobs SET progress = coalesce($3::text, progress),
        lease_expires_at = greatest(lease_expires_at, now() + $4::float8 * interval '1 second')
    WHERE id = $1 AND claim_token = $2 AND state = 'processing'
    RETURNING id, entries + 1 AS entry
), given AS (
    SELECT c.stream, c.start, c.data, c.n,
        max(c.start + length(c.data)) OVER (PARTITION BY c.stream) AS stream_end
    FROM unnest($5::smallint[], $6::bigint[], $7::bytea[]) WITH ORDINALITY AS c(stream, start, data, n)
), added AS (
    INSERT INTO job_chunks (job_id, entry, stream, "offset", data)
    SELECT held.id, held.entry, given.stream, given.start, given.data
    FROM held, given
    WHERE given.start + length(given.data) >= given.stream_end - $8::bigint{again}
    ORDER BY given.n
), trimmed AS (
    DELETE FROM job_chunks AS old USING held
    WHERE old.job_id = held.id AND (old.entry <> held.entry
        OR old."offset" + length(old.data)
            < (SELECT max(stream_end) FROM given WHERE given.stream = old.stream) - $8::bigint)
), wake AS (SELECT pg_notify($9, 'output') FROM held)
SELECT count(*) AS held FROM wake
"""
APPEND_OUTPUT = _APPEND_OUTPUT.format(again="")
#: The same after a lost reply: chunks the first try inserted are not inserted twice.
APPEND_OUTPUT_AGAIN = _APPEND_OUTPUT.format(
    again="""
        AND NOT EXISTS (SELECT FROM job_chunks AS k WHERE k.job_id = held.id AND k.entry = held.entry
                        AND k.stream = given.stream AND k."offset" = given.start)"""
)


# --- work that survives a lost reply -------------------------------------------------------------


def first_entry(claim: Claim) -> bool:
    """Whether the claimed attempt is its job's first history entry (see the module's docstring)."""
    return claim.job.finished_at is None


def cancels(outcome: Outcome) -> bool:
    """Whether the outcome is a cancelled attempt's (which takes the statements that can write one)."""
    return outcome.state is JobState.CANCELLED


def finish_work(claim: Claim, outcome: Outcome, channel: str) -> tuple[Work[bool], tuple[Any, ...]]:
    """Recording the outcome as retryable work, and ``finish``'s arguments."""
    statement = finish(first=first_entry(claim), streamed=outcome.streamed, cancelled=cancels(outcome))
    arguments = (
        claim.job.id,
        claim.token,
        outcome.state.value,
        outcome.exit_code,
        outcome.error,
        outcome.started_at,
        outcome.finished_at,
        outcome.stdout,
        outcome.stderr,
        seconds(outcome.retry_in),
        channel,
        outcome.worker,
        outcome.host,
        outcome.pid,
        outcome.outcome.value,
    )

    async def write(connection: Connection, retried: bool) -> bool:
        if await connection.fetch(statement, *arguments):
            return True
        # After a dropped connection the first try may have committed: it did if
        # the job now shows exactly this outcome and nobody holds it.
        return retried and bool(
            await connection.fetch(FINISHED_AS, claim.job.id, outcome.state.value, outcome.finished_at)
        )

    return write, arguments


def release_work(claim: Claim, attempt: AttemptRecord, channel: str) -> Work[bool]:
    """Putting the job back (``Store.release``) as retryable work."""
    entry = entry_arguments(attempt)

    async def write(connection: Connection, retried: bool) -> bool:
        if await connection.fetch(RELEASE, claim.job.id, claim.token, *entry, channel):
            return True
        # After a lost reply: the first try committed if the job shows this very entry last.
        return retried and bool(await connection.fetch(RELEASED_AS, claim.job.id, *entry))

    return write


def append_work(
    claim: Claim,
    chunks: Sequence[tuple[int, int, bytes]],
    *,
    progress: str | None,
    keep: int,
    lease: float,
    channel: str,
) -> Work[bool]:
    """Adding live output (``Store.append_output``) as retryable work."""
    for stream, _, _ in chunks:
        if stream not in (1, 2):
            raise ValueError(f"stream {stream}: 1 is stdout, 2 is stderr")
    arguments = (
        claim.job.id,
        claim.token,
        progress,
        seconds(lease),
        [stream for stream, _, _ in chunks],
        [offset for _, offset, _ in chunks],
        [bytes(data) for _, _, data in chunks],
        keep,
        channel,
    )

    async def write(connection: Connection, retried: bool) -> bool:
        found = await connection.fetch(APPEND_OUTPUT_AGAIN if retried else APPEND_OUTPUT, *arguments)
        return bool(found[0]["held"])

    return write
