"""Job stores, chosen by target; drivers are imported only when their store is opened."""

from __future__ import annotations

from queuectl.config import default_target, is_postgres_target, sqlite_path
from queuectl.storage.base import Store

__all__ = ("Store", "open_store")


async def open_store(target: str | None = None) -> Store:
    """Open (creating and migrating as needed) the store at ``target``.

    ``None`` means ``$QUEUECTL_DB`` or the default SQLite file. A path or
    ``sqlite:///path`` is SQLite; ``postgresql://...`` is PostgreSQL.
    """
    target = target or default_target()
    if is_postgres_target(target):
        from queuectl.storage.postgres.store import PostgresStore

        store: Store = await PostgresStore.open(target)
        return store
    from queuectl.storage.sqlite.store import SqliteStore

    return await SqliteStore.open(sqlite_path(target))
