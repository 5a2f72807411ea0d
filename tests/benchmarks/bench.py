"""queuectl's benchmark (issue 6): queuectl against the machine's own ceilings, side by side.

    python tests/benchmarks/bench.py [--quick] [--only FIGURE ...] [--no-postgres] [--postgres-url URL]

or ``nox -s bench -- --quick``. Prints the machine and the command line, then one table: figure,
queuectl's value, the reference measured in the same run, their ratio, the target, pass/FAIL.
Absolute numbers vary on shared machines; the ratios are what to compare between runs. The
output format is kept stable so that runs can be diffed. Full sizes take 7-10 minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from bench_common import (
    Child,
    Context,
    Postgres,
    Row,
    describe,
    expect_completed,
    fill,
    format_table,
    kill_everything,
    machine_lines,
    na_rows,
    new_jobs,
    queuectl_argv,
)
from bench_copy import copy_figures
from bench_dashboard import dashboard_figures
from bench_flow_jobs import flow_job_figures
from bench_flow_queues import limits_figures
from bench_follow import follow_figures
from bench_latency import latency_figures
from bench_scale import scale_figures
from bench_throughput import drain_figures, enqueue_figures, memory_figures

#: The printing drain: jobs, ``--count``, and lines each job prints, ``PRINTING_PAUSE`` s apart.
PRINTING_JOBS = 40
PRINTING_COUNT = 8
PRINTING_LINES = 10
PRINTING_PAUSE = 0.1


def printing_figures(ctx: Context) -> list[Row]:
    """Jobs that print while they run: what writing their output for followers costs a drain.

    Each job prints ``PRINTING_LINES`` lines ``PRINTING_PAUSE`` s apart, so it runs long enough to
    have its output written live (from 250 ms on, every 250 ms). The reference is the ideal: the
    jobs' own duration, ``count`` at a time, with nothing else taking any time.
    """
    jobs = 16 if ctx.quick else PRINTING_JOBS
    command = (
        f"i=0; while [ $i -lt {PRINTING_LINES} ]; do i=$((i+1)); echo line $i; sleep {PRINTING_PAUSE}; done"
    )
    ideal = -(-jobs // PRINTING_COUNT) * PRINTING_LINES * PRINTING_PAUSE
    ctx.note(
        f"printing drain: {jobs} jobs that each print a line every {PRINTING_PAUSE:g} s,"
        f" {PRINTING_LINES} times, run by `worker start --count {PRINTING_COUNT} --drain`, timed as a"
        f" whole process; reference: the ideal, {ideal:g} s (the jobs' sleeps, {PRINTING_COUNT} at a"
        " time); the best round counts"
    )
    rows = []
    for name in ("sqlite", "postgres"):
        figure = f"1 drain {name}: {jobs} printing jobs, --count {PRINTING_COUNT}"
        target = "ratio >= 0.80"
        if name == "postgres" and ctx.postgres.unavailable is not None:
            rows += na_rows([(figure, target)], ctx.postgres.unavailable)
            continue
        try:
            walls = []
            for _ in range(ctx.rounds):
                if name == "sqlite":
                    walls.append(_drain_printing(ctx, ctx.sqlite_target("printing"), jobs, command, ideal))
                else:
                    with ctx.postgres.schema() as pg_target:
                        walls.append(_drain_printing(ctx, pg_target, jobs, command, ideal))
        except Exception as error:  # this store's row says why; the other store goes on
            rows += na_rows([(figure, target)], describe(error))
            continue
        wall = min(walls)
        rows.append(
            Row(
                figure=figure,
                value=f"{wall:.2f} s",
                reference=f"{ideal:.2f} s",
                ratio=ideal / wall,
                target=target,
                ok=ideal / wall >= 0.80,
            )
        )
    return rows


def _drain_printing(ctx: Context, target: str, jobs: int, command: str, ideal: float) -> float:
    fill(target, new_jobs(command, jobs))
    argv = [*queuectl_argv(target), "worker", "start", "--count", str(PRINTING_COUNT), "--drain", "--quiet"]
    child = Child(argv, log=ctx.path("worker.log"))
    finished = child.check(child.wait(60 + 4 * ideal))
    expect_completed(target, jobs)
    return finished.wall


FIGURES: dict[str, Callable[[Context], list[Row]]] = {
    "drain": drain_figures,
    "printing": printing_figures,
    "enqueue": enqueue_figures,
    "latency": latency_figures,
    "scale": scale_figures,
    "memory": memory_figures,
    "follow": follow_figures,
    "deps": flow_job_figures,
    "limits": limits_figures,
    "dashboard": dashboard_figures,
    "copy": copy_figures,
}
POSTGRES_URL_ENV = "QUEUECTL_TEST_POSTGRES_URL"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for development (minutes less)")
    parser.add_argument(
        "--only", action="append", choices=list(FIGURES), metavar="NAME", help=f"one of {', '.join(FIGURES)}"
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL rows")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(POSTGRES_URL_ENV),
        help=f"a server to create scratch schemas in [default: ${POSTGRES_URL_ENV}]",
    )
    parser.add_argument("--rounds", type=int, help="drain rounds, best of [default: 3, --quick 1]")
    parser.add_argument("--seed", type=int, default=6, help="seed of the probe spacing and ids")
    parser.add_argument("--tmp", type=Path, help="where the scratch stores go [default: the system's]")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="queuectl-bench-", dir=args.tmp) as scratch:
        postgres = Postgres(None if args.no_postgres else args.postgres_url)
        if args.no_postgres:
            postgres.unavailable = "--no-postgres"
        ctx = Context(
            tmp=Path(scratch),
            quick=args.quick,
            rounds=args.rounds or (1 if args.quick else 3),
            postgres=postgres,
            seed=args.seed,
        )
        print("queuectl benchmark (issue 6)")
        for line in machine_lines(ctx, [sys.argv[0], *argv]):
            print(line)
        print(f"bytecode: {use_bytecode_cache(ctx.tmp)}")
        print(flush=True)
        rows: list[Row] = []
        try:
            for name in [name for name in FIGURES if not args.only or name in args.only]:
                rows += _run_figure(name, ctx)
        finally:
            kill_everything()
    print(format_table(rows))
    print()
    for number, note in enumerate(ctx.notes, start=1):
        print(f"note {number}: {note}")
    failed = sum(1 for row in rows if row.ok is False)
    unmeasured = sum(1 for row in rows if row.na is not None)
    print(
        f"\n{len(rows)} figures, {failed} missing their target, {unmeasured} not measured;"
        f" {time.monotonic() - started:.0f} s"
    )
    return 0


def use_bytecode_cache(scratch: Path) -> str:
    """Let the processes measured here cache their bytecode, as an installed package does.

    With ``PYTHONDONTWRITEBYTECODE`` set (some sandboxes and CI images set it) and an editable
    checkout with no ``__pycache__``, every process would compile queuectl's modules from source,
    a cost no installed copy pays (pip compiles them at install). The cache goes to the scratch
    folder, so the checkout stays as it is; the first (untimed) runs of each figure fill it.
    """
    if not os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
        return "as configured (PYTHONDONTWRITEBYTECODE unset)"
    prefix = scratch / "pycache"
    os.environ["PYTHONPYCACHEPREFIX"] = str(prefix)
    return f"cached under {prefix} (PYTHONDONTWRITEBYTECODE was set: unset for the measured processes)"


def _run_figure(name: str, ctx: Context) -> list[Row]:
    print(f"measuring {name} ...", file=sys.stderr, flush=True)
    try:
        return FIGURES[name](ctx)
    except Exception as error:  # one broken figure must not hide the others
        traceback.print_exc(file=sys.stderr)
        return na_rows([(name, "-")], describe(error))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
