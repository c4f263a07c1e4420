"""Cancel across processes: a request published on a channel, heard by the stream's owner.

:func:`publish_cancel` sends ``{"id": ..., "reason": ...}`` on
``{prefix}:cancel``. Every process runs a :class:`CancelListener`, which
subscribes to that channel and calls ``on_cancel(stream_id, reason)`` for
each request; the callback cancels the stream if this process holds it (the
others ignore it). One channel for all, rather than one per owner: a cancel
sent before the owner record is written (a few milliseconds after the
stream starts) still arrives.

Pub/sub delivers at most once, to the listeners connected at that moment: a
request published while the owner is disconnected from Redis is lost. The
caller sees that (no terminal event follows) and sends it again:
:meth:`sinks.redis_bus.RedisBus.cancel` does so while it waits. A listener
that lost Redis tries again at least every ``LISTEN_RETRY_MAX`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from pipeline.core.backoff import Backoff
from sinks.redis_bus.publisher import RETRYABLE
from sinks.redis_bus.settings import BusSettings

__all__ = ["LISTEN_RETRY_MAX", "MAX_REASON", "CancelHandler", "CancelListener", "publish_cancel"]

log = logging.getLogger(__name__)

CancelHandler = Callable[[str, str], object]
"""``on_cancel(stream_id, reason)``: cancel the stream if this process holds it."""

MAX_REASON = 200
"""Characters of a cancel reason kept (the rest is cut)."""

LISTEN_RETRY_MAX = 0.5
"""Seconds at most between the listener's attempts to subscribe again."""


async def publish_cancel(
    client: Redis, stream_id: str, reason: str = "cancelled", settings: BusSettings | None = None
) -> int:
    """Ask every process to cancel ``stream_id``; return how many listeners heard it."""
    settings = settings or BusSettings()
    message = json.dumps({"id": stream_id, "reason": reason[:MAX_REASON]})
    receivers: int = await client.publish(settings.cancel_channel, message)
    return receivers


class CancelListener:
    """Subscribes to the cancel channel and calls ``on_cancel``; reconnects with backoff.

    :attr:`ready` is set once subscribed (again cleared while disconnected).
    Call :meth:`start` on the running loop and :meth:`close` at the end.
    """

    def __init__(
        self, client: Redis, on_cancel: CancelHandler, settings: BusSettings | None = None
    ) -> None:
        self._client = client
        self._on_cancel = on_cancel
        self.settings = settings or BusSettings()
        self.ready = asyncio.Event()
        self.received = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start listening (a background task)."""
        if self._task is not None:
            raise RuntimeError("the cancel listener has already started")
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="rxllm-redis-cancel-listener"
        )

    async def close(self) -> None:
        """Stop listening: cancel the task and wait for it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def _run(self) -> None:
        settings = self.settings
        # Capped lower than the publisher's backoff: while unsubscribed, requests are lost.
        backoff = Backoff(settings.retry_initial, min(settings.retry_max, LISTEN_RETRY_MAX))
        attempt = 0
        down = False
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(settings.cancel_channel)
                self.ready.set()
                if down:
                    log.warning("redis bus: listening for cancel requests again")
                    down = False
                attempt = 0
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._handle(message)
            except RETRYABLE as error:
                self.ready.clear()
                if not down:
                    down = True
                    log.warning(
                        "redis bus: cancel listener lost Redis (%s: %s); cancel requests "
                        "from other processes are not heard until it is back",
                        type(error).__name__,
                        error,
                    )
                attempt += 1
                await asyncio.sleep(backoff.delay(attempt))
            finally:
                await _close_quietly(pubsub)

    def _handle(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        try:
            data = json.loads(message["data"])
            stream_id, reason = data["id"], data.get("reason") or "cancelled"
            if not isinstance(stream_id, str) or not isinstance(reason, str):
                raise TypeError("id and reason must be strings")
        except (ValueError, KeyError, TypeError) as error:
            log.warning("redis bus: ignored a malformed cancel request (%s)", error)
            return
        self.received += 1
        try:
            self._on_cancel(stream_id, reason[:MAX_REASON])
        except Exception:
            log.exception("redis bus: cancelling stream %s failed", stream_id)


async def _close_quietly(pubsub: Any) -> None:
    try:
        await pubsub.aclose()
    except RETRYABLE as error:  # the connection is already gone
        log.debug("redis bus: closing the pub/sub connection: %r", error)
