"""Embed queuectl in an asyncio application: enqueue jobs and run a worker pool in your own loop.

python examples/embed.py                  # uses a new temporary SQLite file
python examples/embed.py ./my-jobs.db     # or any store target, e.g. postgresql://...

Safe on a store that is in use: its jobs go to a queue of their own, only that queue is
served here, and no setting of the store is changed.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from pathlib import Path

from queuectl import JobState, Queue


async def main(target: str) -> int:
    demo = f"embed-demo-{uuid.uuid4().hex[:8]}"  # this run's own queue: other jobs are left alone
    async with await Queue.open(target) as queue:
        # The pool runs in the background of this event loop while the application carries on.
        async with queue.pool(count=4, queues=[demo]) as pool:
            hello = await queue.enqueue(command="echo hello from an embedded worker", queue=demo)
            urgent = await queue.enqueue({"command": "echo urgent", "priority": 10, "queue": demo})
            flaky = await queue.enqueue(
                command="exit 3", max_retries=1, queue=demo
            )  # retried once, then dead

            jobs = [await queue.wait_for(job.id, timeout=60) for job in (hello, urgent, flaky)]
            for job in jobs:
                output = job.stdout.decode().strip()
                print(
                    f"{job.id[:8]}  {job.state.value:<9}  attempts={job.attempts}  {output or job.last_error}"
                )

        # Leaving the block stopped the pool gracefully.
        print(f"completed={pool.stats.completed} dead={pool.stats.dead}")
        states = [job.state for job in jobs]
    return 0 if states == [JobState.COMPLETED, JobState.COMPLETED, JobState.DEAD] else 1


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(asyncio.run(main(sys.argv[1])))
    with tempfile.TemporaryDirectory() as folder:
        sys.exit(asyncio.run(main(str(Path(folder) / "queue.db"))))
