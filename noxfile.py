"""The project's checks, the same locally and in CI: `nox -s lint types tests` (and `bench`)."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "types", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def types(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("pytest", *(session.posargs or ["-n", "2"]))


@nox.session
def bench(session: nox.Session) -> None:
    """Performance figures against this machine's ceilings (issue 6): `nox -s bench -- --quick`.

    Not in the default sessions: a full run takes about ten minutes. PostgreSQL rows need
    `--postgres-url URL` or $QUEUECTL_TEST_POSTGRES_URL. Installs the package as users get it.
    """
    session.install(".[postgres,web]")
    session.run("python", "tests/benchmarks/bench.py", *session.posargs)
