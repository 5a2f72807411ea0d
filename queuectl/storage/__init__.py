"""Job stores, chosen by target; drivers are imported only when their store is opened.

Importing this package runs nothing: ``queuectl enqueue`` reaches ``storage.sqlite.direct``
through it and needs neither the protocol (``base``) nor a driver.
"""

from __future__ import annotations

#: ``typing.TYPE_CHECKING`` without importing ``typing`` (mypy reads the name the same way).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from queuectl.storage.base import Store

__all__ = ("Store", "open_store")


async def open_store(target: str | None = None, *, clock: Callable[[], float] | None = None) -> Store:
    """Open (creating and migrating as needed) the store at ``target``.

    ``None`` means ``$QUEUECTL_DB`` or the default SQLite file. A path or ``sqlite:///path``
    is SQLite; ``postgresql://...`` is PostgreSQL.

    ``clock`` (epoch seconds, ``time.time`` by default) is every time a SQLite store uses, so
    that tests can move time without sleeping. PostgreSQL refuses one (``ValueError``): its
    workers may run on several hosts, so it compares times with the database server's clock.
    """
    from queuectl.config import default_target, is_postgres_target, sqlite_path

    target = target or default_target()
    if is_postgres_target(target):
        if clock is not None:
            raise ValueError("a PostgreSQL store uses the database server's clock: clock= is for SQLite")
        from queuectl.storage.postgres.store import PostgresStore

        store: Store = await PostgresStore.open(target)
        return store
    from queuectl.storage.sqlite.store import SqliteStore

    path = sqlite_path(target)
    return await (SqliteStore.open(path) if clock is None else SqliteStore.open(path, clock=clock))


def __getattr__(name: str) -> object:
    if name == "Store":
        from queuectl.storage.base import Store

        return Store
    raise AttributeError(f"module 'queuectl.storage' has no attribute {name!r}")
