"""The ceiling: COUNT shell commands run by a bare asyncio loop, CONCURRENCY at a time, output read.

``python bench_ceiling.py COUNT CONCURRENCY COMMAND`` — run as its own process so that, like
``queuectl worker start``, its time runs from process start to exit. Each command is
``asyncio.create_subprocess_shell`` with stdout and stderr piped, then ``communicate()``. On
Python 3.11 it installs ``asyncio.PidfdChildWatcher`` as queuectl's worker does (the default from
3.12 on); the default watcher of 3.11 starts a thread per child.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import warnings


def use_pidfd_watcher() -> str:
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return "default"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(asyncio.get_running_loop())
        asyncio.set_child_watcher(watcher)
    return "PidfdChildWatcher"


async def run(count: int, concurrency: int, command: str) -> None:
    use_pidfd_watcher()
    left = count

    async def lane() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            process = await asyncio.create_subprocess_shell(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            await process.communicate()
            if process.returncode != 0:
                raise SystemExit(f"{command!r} exited {process.returncode}")

    await asyncio.gather(*(lane() for _ in range(concurrency)))


def main(argv: list[str]) -> None:
    count, concurrency, command = int(argv[0]), int(argv[1]), argv[2]
    asyncio.run(run(count, concurrency, command))


if __name__ == "__main__":
    main(sys.argv[1:])
