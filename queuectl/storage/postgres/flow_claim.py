"""The claim while some queue is paused or limited: the schema's ``queuectl_flow_claim`` function.

Written once, as a template, for the two ways a rate-limited queue's recent starts have been
kept: one row per start (migration 5), then one row per bucket of a hundredth of the queue's
window with the number of starts in it (migration 9, which also adds a shorter statement for
the common claim of one job). Counting a window then reads at most 101
rows however fast the queue runs, and a claim adds to a row instead of inserting one and
deleting another. The oldest bucket of a window may begin before it and is counted whole:
the count errs high, so the rate holds, at the cost of a start up to a hundredth of the window
later than strictly allowed.

Migration 10 makes the claim of one job leaner still (``PER_BUCKET_LEAN``): the server sets up
every node of a statement's plan each time it runs it, so the fewer nodes the better. While no
queue it locks has a rate, that claim is one plain UPDATE, as the plain claim is.
"""

from __future__ import annotations

from typing import NamedTuple

#: Transaction-scoped advisory locks, one per limited queue, in name order (no deadlock); no
#: row is written, so a claim that takes nothing writes nothing.
_LOCK = """        PERFORM pg_advisory_xact_lock(hashtext(current_schema()), hashtext(q.name))
        FROM (
            SELECT name FROM queues
            WHERE NOT paused AND (concurrency IS NOT NULL OR rate_count IS NOT NULL)
                AND (p_served IS NULL OR name = ANY(p_served))
            ORDER BY name
        ) AS q;"""


class Starts(NamedTuple):
    """How the function counts and records a queue's starts (SQL fragments)."""

    counted: str  # the aggregate over a queue's ``queue_starts`` rows in the window
    lookback: str  # how much further back than the window rows may start: a factor, or ""
    record_first: str  # the CTE body that records the first walk's starts
    record_again: str  # the same for the later walks' starts
    fast_path: str = ""  # statements run first: a shorter way to the common case
    lock: str = _LOCK  # the statement that takes the limited queues' locks
    declare: str = ""  # variables the fast path needs
    planner: str = ""  # planner settings more than the template's own (each ends with a space)


PER_START = Starts(
    counted="count(*)",
    lookback="",
    record_first="""            INSERT INTO queue_starts (queue, started_at)
            SELECT c.queue, moment FROM claimed AS c JOIN allowance AS a ON a.name = c.queue AND a.rated
""",
    record_again="""            INSERT INTO queue_starts (queue, started_at)
            SELECT c.queue, moment FROM claimed AS c
            WHERE c.queue IN (SELECT name FROM queues WHERE rate_count IS NOT NULL AND NOT paused)
""",
)

#: The start of the bucket (a hundredth of ``rate_seconds``) that ``moment`` falls in.
_BUCKET = (
    "to_timestamp(floor(extract(epoch FROM moment) / ({q}.rate_seconds / 100)) * ({q}.rate_seconds / 100))"
)
_ADD_UP = (
    "GROUP BY 1, 2 ON CONFLICT (queue, started_at)"
    " DO UPDATE SET starts = queue_starts.starts + excluded.starts"
)


def _claiming(indent: str) -> str:
    """A claim's ``UPDATE ... SET``, its lines after the first indented by ``indent``; a newline ends it."""
    return (
        "UPDATE jobs SET state = 'processing', attempts = attempts + 1, worker_id = p_worker,\n"
        f"{indent}    claim_token = p_prefix || gen_random_uuid()::text,\n"
        f"{indent}    lease_expires_at = moment + p_lease * interval '1 second',\n"
        f"{indent}    started_at = moment, updated_at = moment, progress = NULL\n"
    )


#: One job wanted (a worker's slot came free): any due job of a queue that can start one more
#: will do, so the walk needs no per-queue cap: no window, sort or join, two index probes a row.
_ONE_WANTED = """        IF p_wanted = 1 THEN
            RETURN QUERY
            WITH allowance AS MATERIALIZED (
                SELECT q.name, q.rate_count IS NOT NULL AS rated, q.rate_seconds, least(
                    q.concurrency - (SELECT count(*) FROM jobs AS h
                                     WHERE h.claim_token IS NOT NULL AND h.queue = q.name),
                    q.rate_count - (SELECT coalesce(sum(s.starts), 0) FROM queue_starts AS s
                                    WHERE s.queue = q.name
                                        AND s.started_at
                                            > moment - 1.01 * q.rate_seconds * interval '1 second')
                ) AS n
                FROM queues AS q
                WHERE NOT q.paused AND (q.concurrency IS NOT NULL OR q.rate_count IS NOT NULL)
                    AND (p_served IS NULL OR q.name = ANY(p_served))
            ), claimed AS (
{claiming_16}                WHERE id = (
                    SELECT j.id FROM jobs AS j
                    WHERE j.state IN ('pending', 'failed') AND j.waiting = 0 AND j.run_at <= now()
                        AND (p_served IS NULL OR j.queue = ANY(p_served))
                        AND NOT EXISTS (SELECT FROM queues AS p WHERE p.name = j.queue AND p.paused)
                        AND NOT EXISTS (SELECT FROM allowance AS a WHERE a.name = j.queue AND a.n <= 0)
                    ORDER BY j.priority DESC, j.run_at, j.created_at, j.seq
                    LIMIT 1
                    FOR UPDATE SKIP LOCKED
                )
                RETURNING jobs.*
            ), started AS (
{record_first}            ), trimmed AS (
                DELETE FROM queue_starts AS s USING allowance AS a
                WHERE a.rated AND s.queue = a.name
                    AND s.started_at <= moment - 1.01 * a.rate_seconds * interval '1 second'
            )
            SELECT * FROM claimed;
            RETURN;
        END IF;
"""

#: ``_LOCK``, which also tells whether any queue locked has a rate limit (``rated``).
_LOCK_TELLING_RATED = """        SELECT coalesce(bool_or(locked.rated), false) INTO rated FROM (
            SELECT q.rated, pg_advisory_xact_lock(hashtext(current_schema()), hashtext(q.name))
            FROM (
                SELECT name, rate_count IS NOT NULL AS rated FROM queues
                WHERE NOT paused AND (concurrency IS NOT NULL OR rate_count IS NOT NULL)
                    AND (p_served IS NULL OR name = ANY(p_served))
                ORDER BY name
            ) AS q
        ) AS locked;"""

#: A queue whose jobs cannot start now: ``q`` paused, or at its concurrency limit... (each
#: count only for a queue with that limit: the server evaluates a comparison's operands first)
_FULL = """q.paused OR q.concurrency IS NOT NULL AND q.concurrency <= (
                    SELECT count(*) FROM jobs AS h WHERE h.claim_token IS NOT NULL AND h.queue = q.name)"""
#: ... or with its rate spent.
_SPENT = """ OR q.rate_count IS NOT NULL AND q.rate_count <= (
                    SELECT coalesce(sum(s.starts), 0) FROM queue_starts AS s
                    WHERE s.queue = q.name
                        AND s.started_at > moment - 1.01 * q.rate_seconds * interval '1 second')"""


def _claim_one(blocked: str) -> str:
    """The claim of the first due job of a queue that is not ``blocked`` (a condition on ``q``).

    The blocked queues are found once, before the walk (a hashed list), however many rows of
    theirs it passes."""
    return f"""
            {_claiming("            ")}            WHERE id = (
                SELECT j.id FROM jobs AS j
                WHERE j.state IN ('pending', 'failed') AND j.waiting = 0 AND j.run_at <= now()
                    AND (p_served IS NULL OR j.queue = ANY(p_served))
                    AND j.queue NOT IN (SELECT q.name FROM queues AS q WHERE {blocked})
                ORDER BY j.priority DESC, j.run_at, j.created_at, j.seq
                LIMIT 1
                FOR UPDATE SKIP LOCKED
            )
            RETURNING jobs.*"""


#: One job wanted, leaner (migration 10): one plain statement while no queue locked has a
#: rate limit; with one, the same statement records the start in the claimed job's queue.
_ONE_WANTED_LEAN = f"""        IF p_wanted = 1 AND NOT rated THEN
            RETURN QUERY{_claim_one(_FULL)};
            RETURN;
        END IF;
        IF p_wanted = 1 THEN
            RETURN QUERY
            WITH claimed AS ({_claim_one(_FULL + _SPENT)}
            ), started AS (
                INSERT INTO queue_starts (queue, started_at, starts)
                SELECT c.queue, {_BUCKET.format(q="q")}, 1
                FROM claimed AS c JOIN queues AS q ON q.name = c.queue AND q.rate_count IS NOT NULL
                ON CONFLICT (queue, started_at) DO UPDATE SET starts = queue_starts.starts + excluded.starts
            )
            SELECT * FROM claimed;
            -- Buckets that no window reaches any more are never counted, only kept: about one
            -- claim in 32 drops them, which saves the others a statement. Only the locked
            -- queues' buckets: another claim may be counting the others'.
            IF random() < 1.0 / 32 THEN
                DELETE FROM queue_starts AS s USING queues AS q
                WHERE s.queue = q.name AND NOT q.paused AND q.rate_count IS NOT NULL
                    AND (p_served IS NULL OR q.name = ANY(p_served))
                    AND s.started_at <= moment - 1.01 * q.rate_seconds * interval '1 second';
            END IF;
            RETURN;
        END IF;
"""


_RECORD_BUCKETS = f"""            INSERT INTO queue_starts (queue, started_at, starts)
            SELECT c.queue, {_BUCKET.format(q="a")}, count(*)
            FROM claimed AS c JOIN allowance AS a ON a.name = c.queue AND a.rated
            {_ADD_UP}
"""

PER_BUCKET = Starts(
    counted="coalesce(sum(s.starts), 0)",
    lookback="1.01 * ",
    record_first=_RECORD_BUCKETS,
    record_again=f"""            INSERT INTO queue_starts (queue, started_at, starts)
            SELECT c.queue, {_BUCKET.format(q="q")}, count(*)
            FROM claimed AS c
                JOIN queues AS q ON q.name = c.queue AND q.rate_count IS NOT NULL AND NOT q.paused
            {_ADD_UP}
""",
    fast_path=_ONE_WANTED.format(record_first=_RECORD_BUCKETS, claiming_16=" " * 16 + _claiming(" " * 16)),
)
#: Migration 10: the one-job claim as one plain statement per case (``_ONE_WANTED_LEAN``).
PER_BUCKET_LEAN = PER_BUCKET._replace(
    fast_path=_ONE_WANTED_LEAN,
    lock=_LOCK_TELLING_RATED,
    declare="\n        rated boolean;  -- whether a locked queue has a rate limit",
    # A full queue's held jobs are counted by an index scan, which marks the entries of
    # jobs no longer held as dead as it passes them: a bitmap scan would read them all again.
    planner="SET enable_bitmapscan = off ",
)


def function(starts: Starts, *, replace: bool = False) -> str:
    """``CREATE [OR REPLACE] FUNCTION queuectl_flow_claim`` keeping starts as ``starts`` says."""
    return _TEMPLATE.format(replace="OR REPLACE " if replace else "", **starts._asdict())


_TEMPLATE = """    -- The claim while some queue is paused or limited (``queues.py``), in one round trip. A
    -- function, so that its statements take snapshots one after the other: the counts are read
    -- only once the limited queues are locked, so they see every claim committed by the lock's
    -- previous holder. The clock is read after the lock too: starts are recorded in order.
    CREATE {replace}FUNCTION queuectl_flow_claim(
        p_worker text, p_lease float8, p_wanted integer, p_prefix text, p_served text[]
    ) RETURNS SETOF jobs LANGUAGE plpgsql
    -- Its reads are all small index ranges (held jobs, a queue's recent starts, the claim
    -- order's head); without statistics yet, the planner would scan whole tables instead. (Plans
    -- so steered look costly: not worth compiling, which would take longer than running them.)
    SET enable_seqscan = off {planner}SET jit = off
    AS $flow$
    DECLARE
        moment timestamptz;
        got integer;
        want integer;
        limited text[];
        allowed bigint[];
        blocked text[];
        chosen text[] := '{{}}';
        overflowed boolean;
        k integer;
        candidate record;{declare}
    BEGIN
        -- Transaction-scoped advisory locks, one per limited queue, in name order (no
        -- deadlock); no row is written, so a claim that takes nothing writes nothing.
{lock}
        moment := clock_timestamp();
{fast_path}        -- The usual case, one statement: one walk of the claim order past the queues that can
        -- take nothing, stopping at the number wanted, each limited queue capped at what it may
        -- start (a queue within its limits costs the walk nothing more).
        RETURN QUERY
        WITH allowance AS (
            SELECT q.name, q.rate_count IS NOT NULL AS rated, q.rate_seconds, least(
                p_wanted::bigint,
                q.concurrency - (SELECT count(*) FROM jobs AS h
                                 WHERE h.claim_token IS NOT NULL AND h.queue = q.name),
                q.rate_count - (SELECT {counted} FROM queue_starts AS s
                                WHERE s.queue = q.name
                                    AND s.started_at
                                        > moment - {lookback}q.rate_seconds * interval '1 second')
            ) AS n
            FROM queues AS q
            WHERE NOT q.paused AND (q.concurrency IS NOT NULL OR q.rate_count IS NOT NULL)
                AND (p_served IS NULL OR q.name = ANY(p_served))
        ), blocked AS (
            SELECT name FROM queues WHERE paused
            UNION ALL
            SELECT name FROM allowance WHERE n <= 0
        ), walk AS (
            SELECT j.id, j.queue, j.priority, j.run_at, j.created_at, j.seq FROM jobs AS j
            WHERE j.state IN ('pending', 'failed') AND j.waiting = 0 AND j.run_at <= now()
                AND (p_served IS NULL OR j.queue = ANY(p_served))
                AND j.queue NOT IN (SELECT name FROM blocked)
            ORDER BY j.priority DESC, j.run_at, j.created_at, j.seq
            LIMIT p_wanted
            FOR UPDATE SKIP LOCKED
        ), chosen AS (
            SELECT w.id FROM (
                SELECT walk.id, walk.queue, row_number() OVER (
                    PARTITION BY walk.queue
                    ORDER BY walk.priority DESC, walk.run_at, walk.created_at, walk.seq
                ) AS nth
                FROM walk
            ) AS w LEFT JOIN allowance AS a ON a.name = w.queue
            WHERE a.name IS NULL OR w.nth <= a.n
        ), claimed AS (
            UPDATE jobs SET state = 'processing', attempts = attempts + 1, worker_id = p_worker,
                claim_token = p_prefix || gen_random_uuid()::text,
                lease_expires_at = moment + p_lease * interval '1 second',
                started_at = moment, updated_at = moment, progress = NULL
            WHERE id IN (SELECT id FROM chosen)
            RETURNING jobs.*
        ), started AS (
{record_first}        ), trimmed AS (
            -- Only the locked queues' old starts: another claim may be counting the others'.
            DELETE FROM queue_starts AS s USING allowance AS a
            WHERE a.rated AND s.queue = a.name
                AND s.started_at <= moment - {lookback}a.rate_seconds * interval '1 second'
        )
        SELECT * FROM claimed;
        GET DIAGNOSTICS got = ROW_COUNT;
        -- None (nothing due), or all wanted: done. Some: the walk may have handed a limited
        -- queue more jobs than it could start; the others' come from further walks without it.
        IF got = 0 OR got >= p_wanted THEN
            RETURN;
        END IF;
        want := p_wanted - got;
        SELECT coalesce(array_agg(f.name) FILTER (WHERE f.n IS NOT NULL), '{{}}'),
            coalesce(array_agg(f.n) FILTER (WHERE f.n IS NOT NULL), '{{}}'),
            coalesce(array_agg(f.name) FILTER (WHERE f.paused OR f.n <= 0), '{{}}')
        INTO limited, allowed, blocked
        FROM (
            SELECT q.name, q.paused,
                CASE WHEN NOT q.paused AND (q.concurrency IS NOT NULL OR q.rate_count IS NOT NULL)
                        AND (p_served IS NULL OR q.name = ANY(p_served)) THEN least(
                    want::bigint,
                    q.concurrency - (SELECT count(*) FROM jobs AS h
                                     WHERE h.claim_token IS NOT NULL AND h.queue = q.name),
                    q.rate_count - (SELECT {counted} FROM queue_starts AS s
                                    WHERE s.queue = q.name
                                        AND s.started_at
                                        > moment - {lookback}q.rate_seconds * interval '1 second'))
                END AS n
            FROM queues AS q
            WHERE q.paused OR q.concurrency IS NOT NULL OR q.rate_count IS NOT NULL
        ) AS f;
        WHILE coalesce(array_length(chosen, 1), 0) < want LOOP
            overflowed := false;
            FOR candidate IN
                SELECT j.id, j.queue FROM jobs AS j
                WHERE j.state IN ('pending', 'failed') AND j.waiting = 0 AND j.run_at <= now()
                    AND (p_served IS NULL OR j.queue = ANY(p_served))
                    AND j.queue <> ALL(blocked) AND j.id <> ALL(chosen)
                ORDER BY j.priority DESC, j.run_at, j.created_at, j.seq
                LIMIT want - coalesce(array_length(chosen, 1), 0)
                FOR UPDATE SKIP LOCKED
            LOOP
                k := array_position(limited, candidate.queue);
                IF k IS NOT NULL AND allowed[k] <= 0 THEN
                    overflowed := true;
                    CONTINUE;
                END IF;
                chosen := chosen || candidate.id;
                IF k IS NOT NULL THEN
                    allowed[k] := allowed[k] - 1;
                    IF allowed[k] = 0 THEN
                        blocked := blocked || candidate.queue;
                    END IF;
                END IF;
            END LOOP;
            EXIT WHEN NOT overflowed;
        END LOOP;
        IF coalesce(array_length(chosen, 1), 0) = 0 THEN
            RETURN;
        END IF;
        RETURN QUERY
        WITH claimed AS (
            UPDATE jobs SET state = 'processing', attempts = attempts + 1, worker_id = p_worker,
                claim_token = p_prefix || gen_random_uuid()::text,
                lease_expires_at = moment + p_lease * interval '1 second',
                started_at = moment, updated_at = moment, progress = NULL
            WHERE id = ANY(chosen)
            RETURNING jobs.*
        ), started AS (
{record_again}        )
        SELECT * FROM claimed;
    END
    $flow$;
    """
