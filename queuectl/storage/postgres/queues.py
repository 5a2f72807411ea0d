"""Queues' pauses and limits on PostgreSQL: their settings (the claim that honours them is the
schema's ``queuectl_flow_claim`` function, ``sql.FLOW_CLAIM``).

Each change is one short transaction, safe to run again after a lost reply (it sets values), and
wakes idle workers with a NOTIFY: a resumed queue's jobs start at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from queuectl.models import UNSET, Unset
from queuectl.queues import QueueInfo, QueueSettings, Rate, queue_infos, settings_from_row
from queuectl.storage.postgres.connection import Database
from queuectl.storage.postgres.schema import Connection, Row

_SETTINGS = "SELECT name, paused, concurrency, rate_count, rate_seconds FROM queues"
_WITH_SETTINGS = (
    f"{_SETTINGS} WHERE paused OR concurrency IS NOT NULL OR rate_count IS NOT NULL ORDER BY name"
)
_COUNTS = "SELECT queue, state, count(*) AS n FROM jobs GROUP BY queue, state"
_ADD = "INSERT INTO queues (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING"
_PAUSE = "UPDATE queues SET paused = $2 WHERE name = ANY($1::text[])"
_CONCURRENCY = "UPDATE queues SET concurrency = $2 WHERE name = $1"
_RATE = "UPDATE queues SET rate_count = $2, rate_seconds = $3 WHERE name = $1"
_FORGET_STARTS = "DELETE FROM queue_starts WHERE queue = $1"
_ONE = f"{_SETTINGS} WHERE name = $1"
#: A queue with nothing set has no row: workers go back to the plain claim.
_DROP_EMPTY = (
    "DELETE FROM queues WHERE name = ANY($1::text[])"
    " AND NOT paused AND concurrency IS NULL AND rate_count IS NULL"
)
_WAKE = "SELECT pg_notify($1, 'queues')"


def _settings(row: Row) -> QueueSettings:
    return settings_from_row(
        row["name"], row["paused"], row["concurrency"], row["rate_count"], row["rate_seconds"]
    )


class QueueSettingsStore:
    """Reads and writes the ``queues`` table of one PostgreSQL store; ``channel`` wakes workers."""

    def __init__(self, database: Database, channel: str) -> None:
        self._database = database
        self._channel = channel

    async def list_queues(self) -> list[QueueInfo]:
        async def read(connection: Connection, _retried: bool) -> tuple[list[Row], list[Row]]:
            async with connection.transaction():  # one snapshot: counts and settings agree
                await connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                return await connection.fetch(_COUNTS), await connection.fetch(_SETTINGS)

        counts, settings = await self._database.run(read)
        return queue_infos(
            [(row["queue"], row["state"], row["n"]) for row in counts], [_settings(row) for row in settings]
        )

    async def queue_settings(self) -> list[QueueSettings]:
        return [_settings(row) for row in await self._database.fetch(_WITH_SETTINGS)]

    async def pause_queues(self, names: Sequence[str], *, paused: bool) -> None:
        given = list(dict.fromkeys(names))

        async def write(connection: Connection, _retried: bool) -> None:
            async with connection.transaction():
                await connection.execute(_ADD, given)
                await connection.execute(_PAUSE, given, paused)
                await connection.execute(_DROP_EMPTY, given)
                if not paused:
                    await connection.execute(_WAKE, self._channel)

        await self._database.run(write)

    async def limit_queue(
        self,
        name: str,
        *,
        concurrency: int | Unset | None = UNSET,
        rate: Rate | Unset | None = UNSET,
    ) -> QueueSettings:
        changes: list[tuple[str, tuple[Any, ...]]] = []
        if not isinstance(concurrency, Unset):
            changes.append((_CONCURRENCY, (name, concurrency)))
        if isinstance(rate, Rate):
            changes.append((_RATE, (name, rate.count, rate.seconds)))
        elif rate is None:
            changes += [(_RATE, (name, None, None)), (_FORGET_STARTS, (name,))]

        async def write(connection: Connection, _retried: bool) -> Row:
            async with connection.transaction():
                await connection.execute(_ADD, [name])
                for statement, values in changes:
                    await connection.execute(statement, *values)
                found = await connection.fetch(_ONE, name)
                await connection.execute(_DROP_EMPTY, [name])
                await connection.execute(_WAKE, self._channel)
                return found[0]

        return _settings(await self._database.run(write))
