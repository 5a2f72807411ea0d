"""What both stores share to add jobs that use flow control: unique keys and dependencies.

A job with neither (nearly every job) takes its store's plain insert and pays one test here
(``uses_flow``). The others are inserted one by one in one transaction, each store in its own
module (``sqlite/flow_insert.py``, ``postgres/flow_insert.py``), by the rules written once here:

- an id in ``after`` names a job stored before or an earlier job of the same batch: an exact id
  wins, else a unique prefix of at least ``MIN_ID_PREFIX`` characters (``pick``), as wherever
  a command takes an id; an unknown one refuses the whole batch (``JobNotFound``);
- a dependency already ``completed`` is not waited for; one already ``dead`` or ``cancelled``
  makes the new job ``cancelled`` at once (``ended``), as its end would have;
- a job whose ``unique_key`` an unfinished job holds is not inserted: that job is returned in
  its place, and a later job of the batch whose ``after`` names the one not inserted waits on
  the holder instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from queuectl.errors import AmbiguousId, JobNotFound

if TYPE_CHECKING:
    from queuectl.models import NewJob

#: The shortest prefix of a job id taken for the id (as git takes commit ids).
MIN_ID_PREFIX = 6
#: The states that hold a unique key, and that a dependent waits on.
UNFINISHED = ("pending", "processing", "failed")
#: Of the final states, those that cancel the jobs waiting on them.
CANCELLING = ("dead", "cancelled")


def uses_flow(jobs: Sequence[NewJob]) -> bool:
    """Whether any of ``jobs`` has a unique key or dependencies (then the batch takes the flow insert)."""
    return any(job.unique_key is not None or job.after for job in jobs)


def ended(dependency: str, state: str) -> str:
    """The ``last_error`` of a job cancelled because a job it waits on ended ``dead`` or ``cancelled``."""
    return f"dependency {dependency} ended {state}"


def pick(text: str, found: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """The ``(id, state)`` that ``text`` names among ``found`` (the jobs whose id starts with it).

    An exact id wins; else a unique prefix of ``MIN_ID_PREFIX`` characters or more.
    ``JobNotFound``; ``AmbiguousId`` listing the matches.
    """
    matches = [(job_id, state) for job_id, state in found if job_id.startswith(text)]
    for job_id, state in matches:
        if job_id == text:
            return job_id, state
    if len(text) < MIN_ID_PREFIX or not matches:
        raise unknown(text)
    if len(matches) > 1:
        raise AmbiguousId(text, [job_id for job_id, _ in matches])
    return matches[0]


def unknown(text: str) -> JobNotFound:
    return JobNotFound(f"no job with id {text!r} (named in after): nothing was enqueued")
