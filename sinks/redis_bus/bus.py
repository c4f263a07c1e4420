"""The bus: one Redis client shared by the publisher, the readers and the cancel listener.

Example::

    bus = RedisBus("redis://127.0.0.1:6379/0", owner="host-a:8000")
    await bus.open()
    bus.listen(lambda stream_id, reason: hub.cancel(stream_id, reason))
    bus.attach(run)                         # before run.start(): publish every event
    ...
    events = await bus.events(stream_id, after=41)   # on any process
    await bus.cancel(stream_id, "user pressed stop", wait=2.0)
    await bus.close()

``open()`` does not need Redis to be up: the publisher buffers and retries,
the listener reconnects, and the readers raise
:class:`~sinks.redis_bus.bus_errors.BusUnavailableError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Coroutine
from typing import Any, Literal

from reactivex import abc
from redis.asyncio import Redis

from pipeline.core.events import Event, is_terminal
from pipeline.runtime.multicast import StreamRun
from sinks.redis_bus.bus_errors import BusError, BusUnavailableError
from sinks.redis_bus.cancel import CancelHandler, CancelListener, publish_cancel
from sinks.redis_bus.publisher import RETRYABLE, DropHook, RedisPublisher
from sinks.redis_bus.reader import last_event, open_events
from sinks.redis_bus.settings import BusSettings

__all__ = ["REPUBLISH", "CancelOutcome", "RedisBus"]

log = logging.getLogger(__name__)

REPUBLISH = 0.25
"""Seconds between the publications of a cancel request while :meth:`RedisBus.cancel` waits."""

CancelOutcome = Literal["cancelled", "ended", "requested", "not_found"]
"""What :meth:`RedisBus.cancel` saw: the stream's terminal event was ``cancelled``;
it ended otherwise first; the request was sent but no terminal event came within
``wait``; or no live stream has that id."""


class RedisBus:
    """Live events of this process's streams in Redis, readable and cancellable from any process.

    ``url`` is a ``redis://`` (or ``rediss://``) URL; or pass a ready ``client``
    (its responses must not be decoded: ``decode_responses=False``, RESP2).
    ``owner`` names this process in the owner records.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        owner: str = "rxllm",
        settings: BusSettings | None = None,
        on_drop: DropHook | None = None,
    ) -> None:
        if (url is None) == (client is None):
            raise ValueError("pass either a Redis URL or a client")
        self.settings = settings or BusSettings()
        self.owner = owner
        self._own_client = client is None
        self.client: Redis = client if client is not None else _client(url or "", self.settings)
        self.publisher = RedisPublisher(self.client, owner, self.settings, on_drop=on_drop)
        self._listener: CancelListener | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def open(self) -> None:
        """Start the publisher (Redis need not be up yet)."""
        self.publisher.start()

    async def close(self) -> None:
        """Publish what is queued (``close_timeout``), stop the tasks, close the client."""
        if self._listener is not None:
            await self._listener.close()
        await self.publisher.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._own_client:
            await self.client.aclose()

    async def __aenter__(self) -> RedisBus:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- publishing -----------------------------------------------------------

    def attach(self, run: StreamRun) -> abc.DisposableBase:
        """Publish ``run``'s events (call before ``run.start()``)."""
        return self.publisher.attach(run)

    async def register(self, stream_id: str) -> bool:
        """Write the owner record of a new stream now; ``False`` if Redis is unreachable.

        A reader on another process then waits for the first event instead of
        finding no such stream: await it before handing the id to a client.
        """
        return await self.publisher.register(stream_id)

    # -- cancelling ------------------------------------------------------------

    def listen(self, on_cancel: CancelHandler) -> CancelListener:
        """Hear cancel requests from every process: ``on_cancel(stream_id, reason)``."""
        if self._listener is not None:
            raise RuntimeError("this bus already listens for cancel requests")
        self._listener = CancelListener(self.client, on_cancel, self.settings)
        self._listener.start()
        return self._listener

    async def cancel(
        self, stream_id: str, reason: str = "cancelled", *, wait: float = 0.0
    ) -> CancelOutcome:
        """Ask the process holding ``stream_id`` to cancel it; wait up to ``wait`` s for the end.

        While waiting, the request is published again every ``REPUBLISH``
        seconds: pub/sub delivers at most once, and the owner's listener may
        be reconnecting (a Redis restart). Cancelling twice is harmless.

        Errors: :class:`BusUnavailableError` when Redis is unreachable.
        """
        try:
            owner = await self.client.get(self.settings.owner_key(stream_id))
            if owner is None:
                return "not_found"
            await publish_cancel(self.client, stream_id, reason, self.settings)
        except RETRYABLE as error:
            raise BusUnavailableError(f"cancel stream {stream_id!r}", error) from error
        if wait <= 0:
            return "requested"
        ending = asyncio.get_running_loop().create_task(self._terminal(stream_id))
        try:
            async with asyncio.timeout(wait):
                while not (await asyncio.wait([ending], timeout=REPUBLISH))[0]:
                    await publish_cancel(self.client, stream_id, reason, self.settings)
            terminal = ending.result()
        except (TimeoutError, BusError):
            return "requested"
        except RETRYABLE:
            return "requested"
        finally:
            ending.cancel()
            await asyncio.wait([ending])
        return "cancelled" if terminal.type == "cancelled" else "ended"

    async def _terminal(self, stream_id: str) -> Event:
        newest = await last_event(self.client, stream_id, self.settings)
        after = None if newest is None else newest.seq - 1
        events = await open_events(self.client, stream_id, after, self.settings)
        async with contextlib.aclosing(events):
            async for event in events:
                if is_terminal(event):
                    return event
        raise BusError(f"stream {stream_id!r} ended in Redis without a terminal event")

    # -- reading -----------------------------------------------------------------

    async def events(self, stream_id: str, after: int | None = None) -> AsyncGenerator[Event, None]:
        """The events after ``after``: what Redis holds, then live (see :mod:`.reader`)."""
        return await open_events(self.client, stream_id, after, self.settings)

    async def owner_of(self, stream_id: str) -> str | None:
        """The process holding live stream ``stream_id``, or ``None`` (ended, unknown)."""
        try:
            value = await self.client.get(self.settings.owner_key(stream_id))
        except RETRYABLE as error:
            raise BusUnavailableError(f"look up stream {stream_id!r}", error) from error
        if value is None:
            return None
        return value.decode(errors="replace") if isinstance(value, bytes) else str(value)

    # -- useChat chats: which stream answers a chat, for any process ---------------

    async def remember_chat(self, chat_id: str, stream_id: str, message_id: str | None) -> None:
        """Record that ``stream_id`` answers ``useChat``'s chat ``chat_id`` (its last answer).

        Errors: :class:`BusUnavailableError` when Redis is unreachable.
        """
        value = f"{stream_id} {message_id or ''}".rstrip()
        ttl_ms = int(self.settings.finished_ttl * 1000)
        try:
            await self.client.set(self.settings.chat_key(chat_id), value, px=ttl_ms)
        except RETRYABLE as error:
            raise BusUnavailableError(f"record chat {chat_id!r}", error) from error

    async def chat(self, chat_id: str) -> tuple[str, str | None] | None:
        """The stream answering chat ``chat_id`` and its message id; ``None`` if none is known.

        Errors: :class:`BusUnavailableError` when Redis is unreachable.
        """
        try:
            value = await self.client.get(self.settings.chat_key(chat_id))
        except RETRYABLE as error:
            raise BusUnavailableError(f"look up chat {chat_id!r}", error) from error
        if value is None:
            return None
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        stream_id, _, message_id = text.partition(" ")
        return stream_id, message_id or None

    # -- readers on other processes (the orphan check) ----------------------------

    def reader_attached(self, stream_id: str) -> None:
        """Count a reader of ``stream_id`` on this process (in Redis, in the background)."""
        key = self.settings.readers_key(stream_id)
        ttl_ms = int(self.settings.live_ttl * 1000)

        async def incr() -> None:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.pexpire(key, ttl_ms)
                await pipe.execute()

        self._background(incr())

    def reader_detached(self, stream_id: str) -> None:
        """Uncount a reader counted by :meth:`reader_attached`."""
        key = self.settings.readers_key(stream_id)

        async def decr() -> None:
            await self.client.decr(key)

        self._background(decr())

    async def readers(self, stream_id: str) -> int:
        """How many readers other processes count for ``stream_id``.

        Errors: :class:`BusUnavailableError` when Redis is unreachable.
        """
        try:
            value = await self.client.get(self.settings.readers_key(stream_id))
        except RETRYABLE as error:
            raise BusUnavailableError(f"count readers of {stream_id!r}", error) from error
        return max(0, int(value)) if value is not None else 0

    def _background(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            log.debug("redis bus: a reader count update failed: %r", error)


def _client(url: str, settings: BusSettings) -> Redis:
    # RESP2, raw bytes; reads may block for ``block`` seconds (XREAD), so the socket
    # timeout is longer than that: a Redis that hangs still fails the read.
    return Redis.from_url(
        url,
        decode_responses=False,
        protocol=2,
        socket_timeout=settings.block + 10.0,
        socket_connect_timeout=5.0,
        health_check_interval=0,
    )
