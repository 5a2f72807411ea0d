"""Wake-ups across hosts: a dedicated connection that LISTENs on the queue's NOTIFY channel.

Writes that make work (``add_jobs``, ``finish``, ``release``, the DLQ retries) ``NOTIFY`` the
channel of their schema; idle workers wait on it here instead of polling at full speed. The
connection is opened on the first wait, in the background. While it is down a wait is a plain
sleep (the caller polls) and reconnecting is retried with a backoff; a (re)connect counts as a
change, since notifications may have been missed meanwhile.

Cancels also notify a channel of their own (``cancel_channel_name``), which a worker running jobs
listens on (``wait_for_cancel``). It listens on the queue's channel only once it waits for a change
(it has been idle): a busy worker is not sent a notification for every job that any worker ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import anyio

from queuectl.storage.postgres.connection import describe_target, reason, server_settings
from queuectl.storage.postgres.schema import ListenConnection

logger = logging.getLogger(__name__)


def cancel_channel_name(channel: str) -> str:
    """The channel cancels of ``channel``'s queue notify too (``sql.CANCEL_JOB`` makes the same name)."""
    import hashlib

    return "queuectl_cancel_" + hashlib.md5(channel.encode("utf-8")).hexdigest()


def channel_name(schema: str | None) -> str:
    """The NOTIFY channel of this schema's queue (at most 63 bytes, PostgreSQL's limit)."""
    name = f"queuectl_{schema}" if schema else "queuectl"
    return name.encode("utf-8")[:63].decode("utf-8", errors="ignore")


async def _wait_at_most(event: asyncio.Event, timeout: float) -> None:
    """Wait for ``event``, ``timeout`` seconds at most. Not ``asyncio.wait_for``: on Python 3.11
    it can swallow a cancellation that comes as the event is set, and a task that loops on
    these waits then never ends."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(timeout, 0.0)):
            await event.wait()


class Listener:
    """Waits for NOTIFYs on ``channel`` over its own connection to ``url`` (not a pooled one)."""

    def __init__(self, url: str, channel: str, *, connect_timeout: float) -> None:
        self.url = url
        self.where = describe_target(url)
        self.channel = channel
        self.cancel_channel = cancel_channel_name(channel)
        self.connect_timeout = connect_timeout
        self._for_changes = False  # whether to listen on ``channel``: once anyone waits for a change
        self._adding: asyncio.Task[None] | None = None
        self._closed = False
        self._changed = asyncio.Event()
        self._cancelled = asyncio.Event()  # a job was cancelled: a hint for workers running jobs
        self._listener: ListenConnection | None = None
        self._listening: asyncio.Task[None] | None = None
        self._backoff = 1.0
        self._next_listen_at = 0.0

    async def wait(self, timeout: float) -> None:
        """Wait for a NOTIFY from any process (or ``timeout``); see the module's docstring."""
        if not self._for_changes:
            self._for_changes = True
            listener = self._listener
            if listener is not None and not listener.is_closed():
                self._adding = asyncio.get_running_loop().create_task(self._listen_for_changes(listener))
        self._keep_listening()
        changed = self._changed
        if not changed.is_set():
            await _wait_at_most(changed, timeout)
        if changed.is_set() and self._changed is changed:
            self._changed = asyncio.Event()  # consumed: the next wait waits for a new change

    async def wait_for_cancel(self, timeout: float) -> None:
        """Wait for a NOTIFY of a cancel (or ``timeout``). A hint only: a worker still reads its
        jobs' states after each wait, so a lost notification delays a cancel, never loses it."""
        self._keep_listening()
        cancelled = self._cancelled
        if not cancelled.is_set():
            await _wait_at_most(cancelled, timeout)
        if self._cancelled is cancelled and cancelled.is_set():
            self._cancelled = asyncio.Event()

    async def close(self) -> None:
        """Stop listening and close the connection. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            if self._listening is not None:
                # Let a connect in flight end (``_listen`` then drops it): asyncpg cancelled in
                # the middle of connecting can leave a connection behind that it never closes.
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(self._listening), self.connect_timeout)
                self._listening.cancel()
                with contextlib.suppress(BaseException):
                    await self._listening
            if self._adding is not None:
                with contextlib.suppress(BaseException):
                    await self._adding
            listener, self._listener = self._listener, None
            if listener is not None:
                try:
                    await listener.close(timeout=5)
                except Exception:
                    listener.terminate()

    def _keep_listening(self) -> None:
        listener = self._listener
        if listener is not None and not listener.is_closed():
            return
        self._listener = None
        if self._closed or (self._listening is not None and not self._listening.done()):
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_listen_at:
            return
        self._listening = loop.create_task(self._listen(), name="queuectl-postgres-listen")

    async def _listen(self) -> None:
        import asyncpg

        loop = asyncio.get_running_loop()
        listener: ListenConnection | None = None
        try:
            listener = await asyncpg.connect(
                self.url, timeout=self.connect_timeout, server_settings=server_settings(self.url)
            )
            assert listener is not None
            await listener.add_listener(self.cancel_channel, self._on_notify)
            if self._for_changes:
                await listener.add_listener(self.channel, self._on_notify)
            listener.add_termination_listener(self._on_listener_lost)
        except Exception as error:  # a background task: log, fall back to polling, retry later
            if listener is not None:
                listener.terminate()
            self._next_listen_at = loop.time() + self._backoff
            self._backoff = min(self._backoff * 2, 30.0)
            logger.info(
                "cannot LISTEN on PostgreSQL at %s (%s); polling instead", self.where, reason(error, self.url)
            )
            return
        if self._closed:
            listener.terminate()
            return
        self._listener = listener
        self._backoff = 1.0
        self._changed.set()
        self._cancelled.set()  # a cancel may have been missed while not listening

    async def _listen_for_changes(self, listener: ListenConnection) -> None:
        """LISTEN on the queue's channel too, on a connection that listened for cancels only."""
        try:
            await listener.add_listener(self.channel, self._on_notify)
        except Exception:  # the connection went: the next connect listens on both
            listener.terminate()
            return
        self._changed.set()  # changes before this were not heard

    def _on_notify(self, _connection: object, _pid: object, _channel: object, payload: object) -> None:
        self._changed.set()
        if payload == "cancelled":
            self._cancelled.set()

    def _on_listener_lost(self, *_args: object) -> None:
        self._listener = None
        if not self._closed:
            logger.info(
                "lost the LISTEN connection to PostgreSQL at %s; polling until it is back", self.where
            )
