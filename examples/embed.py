"""Embed queuectl in an asyncio application: enqueue jobs and run a worker pool in your own loop.

python examples/embed.py                  # uses a temporary SQLite file
python examples/embed.py ./my-jobs.db     # or any store target, e.g. postgresql://...
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from queuectl import JobState, Queue


async def main(target: str) -> int:
    async with await Queue.open(target) as queue:
        await queue.set_setting("backoff_max", "0.1")  # retry failures quickly in this demo

        # The pool runs in the background of this event loop while the application carries on.
        async with queue.pool(count=4) as pool:
            hello = await queue.enqueue(command="echo hello from an embedded worker")
            urgent = await queue.enqueue({"command": "echo urgent", "priority": 10})
            flaky = await queue.enqueue(command="exit 3", max_retries=1)

            for job_id in (hello.id, urgent.id, flaky.id):
                job = await queue.wait_for(job_id, timeout=60)
                output = job.stdout.decode().strip()
                print(
                    f"{job.id[:8]}  {job.state.value:<9}  attempts={job.attempts}  {output or job.last_error}"
                )

        # Leaving the block stopped the pool gracefully.
        print(f"completed={pool.stats.completed} dead={pool.stats.dead}")
        status = await queue.status()
        assert status.jobs[JobState.COMPLETED] == 2 and status.jobs[JobState.DEAD] == 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(asyncio.run(main(sys.argv[1])))
    with tempfile.TemporaryDirectory() as folder:
        sys.exit(asyncio.run(main(str(Path(folder) / "queue.db"))))
