"""Log output of the command line: only the CLI configures handlers (the library just logs)."""

from __future__ import annotations

import logging
import sys
import time


class _StderrHandler(logging.Handler):
    """Writes log records to whatever ``sys.stderr`` is at the time (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def configure_logging(verbose: int) -> None:
    """Only the CLI configures logging: warnings by default, -v info, -vv debug."""
    logger = logging.getLogger("queuectl")
    logger.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING)
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        formatter.converter = time.gmtime  # every timestamp queuectl prints is UTC
        handler = _StderrHandler()
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    if verbose < 2:
        # The PostgreSQL driver logs its reconnect attempts with tracebacks; queuectl says
        # what matters in its own words.
        logging.getLogger("asyncpg").addHandler(logging.NullHandler())
        logging.getLogger("asyncpg").propagate = False
