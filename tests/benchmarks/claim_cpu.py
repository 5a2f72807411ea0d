"""The PostgreSQL server's CPU time per result and claim of one job: plain, concurrency, rate.

``python tests/benchmarks/claim_cpu.py URL [--calls N] [--rounds N]`` — a tool for work on the
claim statements, not a figure of ``bench.py``. One store connection records a job's result and
claims the next one (``finish_and_claim``, one job wanted, as a worker does each time a slot
frees) ``--calls`` times in a row, in a fresh schema per round; the rounds alternate the cases.
What it measures is the user and system CPU time of the server's client backends, read from
``/proc`` (so the server must run on this host), per call: unlike wall-clock time, it does not
count the waits of a loaded machine, though it still spreads. The least of the rounds is printed
for each case, then all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from queuectl.config import Settings
from queuectl.enqueue import check, resolve
from queuectl.models import JobState, Outcome
from queuectl.queues import parse_rate
from queuectl.storage import open_store

#: Each case's queue settings (``Store.limit_queue`` keywords); none: the plain claim.
CASES: dict[str, dict[str, object]] = {
    "plain": {},
    "concurrency 4": {"concurrency": 4},
    "rate 1000000/s": {"rate": parse_rate("1000000/s")},
}


def backends_cpu(database: str) -> float:
    """Seconds of CPU used so far by the server's client backends of ``database``."""
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                title = file.read().decode(errors="replace")
            with open(f"/proc/{pid}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if title.startswith("postgres:") and f" {database} " in title:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


async def one_round(url: str, database: str, limits: dict[str, object], calls: int) -> float:
    """Seconds of server CPU per call, in a schema of its own."""
    import asyncpg

    schema = f"qcpu_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        store = await open_store(f"{url}{'&' if '?' in url else '?'}search_path={schema}")
        try:
            jobs = [resolve(check({"command": "true"}), Settings()) for _ in range(calls + 1)]
            await store.add_jobs(jobs)
            flow = bool(limits)
            if flow:
                await store.limit_queue("default", **limits)  # type: ignore[arg-type]
            (claim,) = await store.claim(worker_id="w", queues=None, limit=1, lease=60, flow=flow)
            now = datetime.now(UTC)
            done = Outcome(state=JobState.COMPLETED, exit_code=0, error=None, started_at=now, finished_at=now)
            before = backends_cpu(database)
            for _ in range(calls):
                _, (claim,) = await store.finish_and_claim(
                    claim, done, worker_id="w", queues=None, limit=1, lease=60, flow=flow
                )
            used = backends_cpu(database) - before
        finally:
            await store.close()
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()
    return used / calls


async def measure(url: str, calls: int, rounds: int) -> None:
    database = url.rsplit("/", 1)[-1].split("?", 1)[0]
    spent: dict[str, list[float]] = {case: [] for case in CASES}
    for _ in range(rounds):
        for case, limits in CASES.items():
            spent[case].append(await one_round(url, database, limits, calls))
    for case, values in spent.items():
        shown = " ".join(f"{value * 1e6:.0f}" for value in values)
        print(f"{case:16} least {min(values) * 1e6:4.0f} us per call   all: {shown}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "url", help="a PostgreSQL server on this host, e.g. postgresql://postgres@127.0.0.1/test"
    )
    parser.add_argument("--calls", type=int, default=2000, help="results and claims per round [2000]")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each case [5]")
    args = parser.parse_args(argv)
    asyncio.run(measure(args.url, args.calls, args.rounds))


if __name__ == "__main__":
    main()
