"""Shared fixtures: one ``store_target`` for every backend, real files and a real server."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from helpers import DEADLINE, Cli, Result, Workers, invoke, is_postgres

from queuectl.storage import Store, open_store

POSTGRES_URL_ENV = "QUEUECTL_TEST_POSTGRES_URL"

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def postgres_url() -> str:
    """The test server's URL, or a skip that says how to get the tests to run."""
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        pytest.skip(
            f"PostgreSQL tests need {POSTGRES_URL_ENV} (e.g. postgresql://postgres@127.0.0.1:5432/test)"
        )
    return url


def with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` (asyncpg passes unknown query keys as settings)."""
    parts = urlsplit(url)
    query = f"{parts.query}&search_path={schema}" if parts.query else f"search_path={schema}"
    return urlunsplit(parts._replace(query=query))


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """In-process CLI tests run ``main()``, which configures logging as a process would: undo it."""
    logger = logging.getLogger("queuectl")
    saved = (logger.level, list(logger.handlers), logger.propagate)
    yield
    logger.setLevel(saved[0])
    logger.handlers[:] = saved[1]
    logger.propagate = saved[2]


@pytest.fixture
async def postgres_target() -> AsyncIterator[str]:
    """A PostgreSQL target in a schema of its own, dropped afterwards."""
    import asyncpg

    url = postgres_url()
    schema = f"qt_{uuid.uuid4().hex[:12]}"

    async def admin(statement: str) -> None:
        # A connection each time: a test may restart the server in between.
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    await admin(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_search_path(url, schema)
    finally:
        await admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def sqlite_target(tmp_path: Path) -> str:
    return str(tmp_path / "queue.db")


@pytest.fixture(params=BACKENDS)
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store target of each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "queue.db")
    # Sync on purpose: an async fixture cannot set up another async fixture from inside
    # the running event loop ("Runner.run() cannot be called from a running event loop").
    target_fixture: str = request.getfixturevalue("postgres_target")
    return target_fixture


@pytest.fixture
async def store(store_target: str) -> AsyncIterator[Store]:
    opened = await open_store(store_target)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def cli_target(store_target: str, tmp_path: Path) -> str:
    """``store_target`` for command-line tests: a SQLite file alone in a directory of its own,
    so that ``helpers.assert_wrote_nothing`` can tell that a refused command created nothing."""
    if is_postgres(store_target):
        return store_target
    directory = tmp_path / "store"
    directory.mkdir()
    return str(directory / "queue.db")


@pytest.fixture
def cli(cli_target: str) -> Cli:
    """``queuectl --db TARGET ...`` in-process, on each backend."""

    def run(*args: str, input: bytes | str | None = None) -> Result:
        return invoke("--db", cli_target, *args, input=input)

    return run


@pytest.fixture
def workers() -> Iterator[Workers]:
    """Workers the test starts: stopped at the end if still running."""
    started: Workers = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
