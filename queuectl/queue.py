"""The façade the CLI and embedding applications share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from queuectl.config import Settings, SettingValue, parse_setting
from queuectl.models import FINAL_STATES, Job, JobState, NewJob, QueueStatus, WorkerInfo
from queuectl.storage import Store, open_store
from queuectl.validation import validate_job

if TYPE_CHECKING:
    from queuectl.worker import WorkerPool

JobInput = NewJob | Mapping[str, Any]


def _as_new_job(job: JobInput) -> NewJob:
    return job if isinstance(job, NewJob) else validate_job(job)


class Queue:
    """A job queue on one store.

    Use it as an async context manager::

        async with await Queue.open("jobs.db") as queue:
            job = await queue.enqueue({"command": "echo hello"})
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    @classmethod
    async def open(cls, target: str | None = None) -> Queue:
        """Open the store at ``target`` (see ``queuectl.storage.open_store``)."""
        return cls(await open_store(target))

    async def aclose(self) -> None:
        await self.store.close()

    async def __aenter__(self) -> Queue:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- jobs -----------------------------------------------------------------------------

    async def enqueue(self, job: JobInput | None = None, /, **fields: Any) -> Job:
        """Enqueue one job, given as a ``NewJob``, a mapping, or keyword fields.

        ``await queue.enqueue(command="make test", priority=5)``. Input is validated
        as strictly as the CLI's JSON; ``InvalidInput`` says what is wrong.
        """
        if job is None:
            job = fields
        elif fields:
            raise TypeError("give a job or keyword fields, not both")
        (stored,) = await self.store.add_jobs([_as_new_job(job)])
        return stored

    async def enqueue_many(self, jobs: Sequence[JobInput]) -> list[Job]:
        """Enqueue all of ``jobs`` in one transaction, or none of them."""
        return await self.store.add_jobs([_as_new_job(job) for job in jobs])

    async def get(self, job_id: str) -> Job:
        """One job with its output; ``JobNotFound`` if there is none."""
        return await self.store.get_job(job_id)

    async def list_jobs(
        self, *, state: JobState | None = None, queue: str | None = None, limit: int | None = None
    ) -> list[Job]:
        """Jobs newest first."""
        return await self.store.list_jobs(state=state, queue=queue, limit=limit)

    async def wait_for(self, job_id: str, *, timeout: float | None = None, poll: float = 0.05) -> Job:
        """Wait until the job is ``completed`` or ``dead``; return it.

        Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        with anyio.fail_after(timeout):
            while True:
                job = await self.store.get_job(job_id)
                if job.state in FINAL_STATES:
                    return job
                await self.store.wait_for_change(poll)

    async def status(self) -> QueueStatus:
        """Counts by state, live workers, and the next scheduled run."""
        settings = await self.store.settings()
        counts = await self.store.count_jobs()
        workers = await self.store.list_workers(stale_after=settings.lease)
        next_run = await self.store.earliest_run_at()
        return QueueStatus(jobs=counts, workers=len(workers), next_run_at=next_run)

    # --- dead-letter queue ----------------------------------------------------------------

    async def dead_jobs(self, *, limit: int | None = None) -> list[Job]:
        """The DLQ, newest first."""
        return await self.store.list_jobs(state=JobState.DEAD, limit=limit)

    async def retry_dead(self, job_ids: Sequence[str]) -> list[Job]:
        """Put dead jobs back to ``pending`` with ``attempts`` 0 (all or nothing)."""
        return await self.store.retry_dead(job_ids)

    async def retry_all_dead(self) -> list[Job]:
        return await self.store.retry_all_dead()

    # --- settings -------------------------------------------------------------------------

    async def settings(self) -> Settings:
        return await self.store.settings()

    async def set_setting(self, key: str, text: str) -> SettingValue:
        """Validate and persist one setting; return its typed value."""
        value = parse_setting(key, text)
        await self.store.set_setting(key, value)
        return value

    # --- workers --------------------------------------------------------------------------

    async def workers(self) -> list[WorkerInfo]:
        """Live worker processes."""
        settings = await self.store.settings()
        return await self.store.list_workers(stale_after=settings.lease)

    async def stop_workers(self) -> int:
        """Ask every live worker of this store to stop gracefully; return how many."""
        settings = await self.store.settings()
        return await self.store.request_stop(stale_after=settings.lease)

    def pool(self, **options: Any) -> WorkerPool:
        """A worker pool on this queue; see ``WorkerPool`` for the options."""
        from queuectl.worker import WorkerPool

        return WorkerPool(self.store, **options)
