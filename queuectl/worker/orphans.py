"""Finding what is left of an attempt whose worker died, so it cannot run beside the next one.

Every command starts with ``QUEUECTL_CLAIM_TOKEN`` in its environment, and its
children inherit it; a lost worker leaves nothing else behind to find them by.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

TOKEN_ENV = "QUEUECTL_CLAIM_TOKEN"


def processes_with_token(token: str, proc: Path = Path("/proc")) -> list[int]:
    """Pids of this host's processes whose environment carries ``token``."""
    needle = f"{TOKEN_ENV}={token}".encode()
    found = []
    try:
        entries = list(proc.iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def kill_orphans(token: str) -> int:
    """SIGKILL the process groups of every process carrying ``token``; return how many processes."""
    pids = processes_with_token(token)
    own_group = os.getpgid(0)
    for pid in pids:
        try:
            group = os.getpgid(pid)
            if group == own_group:
                raise PermissionError("never our own group")
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return len(pids)
