"""The connection to the PostgreSQL server: asyncpg's pool, retries while it restarts, failures named.

``Database.run(work)`` is the one way the store reaches the server. ``work`` is a function of
a connection and a flag; it runs again on a fresh connection when the connection drops (a
server restart, a failover), with a short backoff, for ``retry_for`` seconds, before
``StoreUnavailable``. The flag tells the work that an earlier try may have taken effect,
so that it can check instead of doing it twice.

Only this module imports asyncpg at module level (without failing when it is missing), and
only the store imports this module, when a PostgreSQL target is opened: ``import queuectl``
never loads the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import anyio

from queuectl.errors import QueueError, StoreCorrupt, StoreError, StoreUnavailable, UniqueKeyHeld
from queuectl.storage.postgres.schema import Connection, Pool, Row, migrate

try:
    import asyncpg
except ImportError as missing:  # pragma: no cover - exercised in a subprocess without the driver
    _MISSING_DRIVER: ImportError | None = missing
else:
    _MISSING_DRIVER = None

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Work for ``Database.run``: given a connection and whether an earlier try may have taken effect.
Work = Callable[[Connection, bool], Awaitable[T]]


class _NoDriver(Exception):
    """Never raised: stands for the driver's exceptions when the driver is missing."""


#: What a statement raises when it breaks a unique constraint (a job id that is taken).
UniqueViolation: type[Exception] = _NoDriver if _MISSING_DRIVER else asyncpg.UniqueViolationError

#: What the driver raises when the server or the connection fails.
_DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    ()
    if _MISSING_DRIVER
    else (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)
)


def server_settings(url: str) -> dict[str, str]:
    """Name our sessions in ``pg_stat_activity``, unless the URL names them already."""
    return {} if "application_name=" in url else {"application_name": "queuectl"}


async def _keep_session(connection: Any) -> None:
    """Pool ``reset`` hook: our sessions hold no state, so skip asyncpg's extra round trip."""


class Database:
    """The server at ``url`` through a small pool. Open it with ``await Database.open(url)``.

    ``schema`` is the schema the tables are in (what ``migrate`` found or made).
    """

    def __init__(self, url: str, pool: Pool, *, schema: str | None, retry_for: float) -> None:
        self.url = url
        self.where = describe_target(url)
        self.schema = schema
        self.retry_for = retry_for
        self.closed = False
        self._pool = pool
        self._kept: Connection | None = None  # a free connection kept out of the pool (see run)

    @classmethod
    async def open(
        cls, url: str, *, retry_for: float, connect_timeout: float, command_timeout: float
    ) -> Database:
        """Connect, then create or migrate the schema (``PostgresStore.open`` says what the times mean)."""
        if _MISSING_DRIVER is not None:
            raise StoreUnavailable(
                "PostgreSQL support needs the extra: pip install 'queuectl[postgres]'"
            ) from _MISSING_DRIVER
        where = describe_target(url)
        try:
            pool: Pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=4,
                timeout=connect_timeout,
                command_timeout=command_timeout,
                reset=_keep_session,
                server_settings=server_settings(url),
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as error:
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {where}: {reason(error, url)}"
            ) from error
        try:
            connection = await pool.acquire()
            try:
                schema = await migrate(connection, where)
            finally:
                await pool.release(connection)
        except BaseException as error:
            pool.terminate()
            if isinstance(error, (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
                raise StoreUnavailable(
                    f"cannot set up PostgreSQL at {where}: {reason(error, url)}"
                ) from error
            raise
        return cls(url, pool, schema=schema, retry_for=retry_for)

    async def close(self) -> None:
        """Close the pool (terminate it if that hangs). Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        with anyio.CancelScope(shield=True):
            kept, self._kept = self._kept, None
            if kept is not None:
                with contextlib.suppress(Exception):
                    await self._pool.release(kept)
            try:
                await asyncio.wait_for(self._pool.close(), 10)
            except Exception:
                self._pool.terminate()

    async def fetch(self, query: str, *args: object) -> list[Row]:
        """``query``'s rows, retried as ``run`` does."""

        async def fetch(connection: Connection, _retried: bool) -> list[Row]:
            return await connection.fetch(query, *args)

        return await self.run(fetch)

    async def run(self, work: Work[T]) -> T:
        """Run ``work`` on a pooled connection, retrying while the server is unreachable.

        ``work`` gets a flag that is true when an earlier try may have taken effect
        (the connection dropped after the statement was sent).
        """
        if self.closed:
            raise StoreUnavailable(f"the store at {self.where} is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_for
        pause = 0.05
        maybe_applied = False
        retries = 0
        while True:
            sent = False
            try:
                connection, self._kept = self._kept, None
                if connection is not None and not _still_usable(connection):
                    with contextlib.suppress(Exception):
                        await self._pool.release(connection)
                    connection = None
                if connection is None:
                    connection = await self._pool.acquire()
                healthy = False
                try:
                    sent = True
                    result = await work(connection, maybe_applied)
                    healthy = True
                    return result
                except _DRIVER_ERRORS:
                    # After a server restart a pooled connection can be left mid-operation
                    # ("cannot switch to state ..."): never hand it out again.
                    with contextlib.suppress(Exception):
                        connection.terminate()
                    raise
                finally:
                    # The worker's statements come one after another: keeping one connection
                    # out of the pool between them saves asyncpg's release and acquire, which
                    # cost more CPU than the round trip itself.
                    if healthy and self._kept is None and not self.closed:
                        self._kept = connection
                    else:
                        with contextlib.suppress(Exception):
                            await self._pool.release(connection)
            except QueueError:
                raise
            except _DRIVER_ERRORS as error:
                if self.closed or not _is_transient(error):
                    raise self._error(error) from error
                maybe_applied = maybe_applied or (sent and not _surely_rolled_back(error))
                if loop.time() + pause > deadline:
                    raise StoreUnavailable(
                        f"lost PostgreSQL at {self.where} and could not reconnect within"
                        f" {self.retry_for:g}s: {reason(error, self.url)}"
                    ) from error
                logger.log(
                    logging.DEBUG if retries else logging.WARNING,
                    "PostgreSQL at %s: %s; retrying for up to %gs",
                    self.where,
                    reason(error, self.url),
                    self.retry_for,
                )
                retries += 1
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)

    def _error(self, error: BaseException) -> QueueError:
        text = reason(error, self.url)
        if getattr(error, "constraint_name", None) == "jobs_unique_key":  # a retry: another job took it
            return UniqueKeyHeld()
        if isinstance(error, (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError)):
            return StoreCorrupt(f"the store at {self.where} is not a queuectl database or is damaged: {text}")
        if self.closed or (isinstance(error, asyncpg.InterfaceError) and "closed" in str(error)):
            return StoreUnavailable(f"the store at {self.where} is closed")
        return StoreError(f"PostgreSQL at {self.where} failed: {text}")


def _still_usable(connection: Connection) -> bool:
    """Whether a connection kept out of the pool can run a statement now."""
    try:
        return not connection.is_closed()
    except asyncpg.InterfaceError:  # its connection was lost: asyncpg took it back to the pool
        return False


# --- naming targets and failures -----------------------------------------------------------------


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


def _is_transient(error: BaseException) -> bool:
    """Errors that a new connection or a second try can cure."""
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


def _surely_rolled_back(error: BaseException) -> bool:
    """Transient errors after which the statement certainly did not take effect."""
    return isinstance(error, (asyncpg.SerializationError, asyncpg.DeadlockDetectedError))
