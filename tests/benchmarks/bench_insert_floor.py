"""Reference for ``enqueue-file``: parse JSON Lines and insert the rows, with nothing else.

``python bench_insert_floor.py JOBS.jsonl STORE.db`` — STORE.db already holds queuectl's schema.
One ``json.loads`` per line, one UUID4 per job, one ``executemany`` in one transaction with
``synchronous=FULL``: roughly the least a Python process can do for the same durable result.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
import uuid


def main(argv: list[str]) -> None:
    source, store = argv
    now = time.time()
    rows = []
    with open(source, encoding="utf-8") as handle:
        for line in handle:
            job = json.loads(line)
            rows.append((str(uuid.uuid4()), job["command"], "default", 0, None, 3, now, now, now))
    connection = sqlite3.connect(store, isolation_level=None)
    try:
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(
            "INSERT INTO jobs (id, command, queue, priority, timeout, max_retries, run_at, state,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
            rows,
        )
        connection.execute("COMMIT")
    finally:
        connection.close()


if __name__ == "__main__":
    main(sys.argv[1:])
