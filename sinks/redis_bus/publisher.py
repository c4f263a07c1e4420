"""The publisher: every event of a live stream also goes to Redis, off the hot path.

:meth:`RedisPublisher.put` (the sink's ``on_next``) appends the event to a
bounded deque and returns; it never awaits, never blocks the stream. One
background task drains the deque: it waits ``flush_interval`` seconds to
gather a batch (a full batch goes at once), then writes it in one pipelined
round trip::

    XADD {prefix}:stream:{id} MAXLEN ~ maxlen {seq}-1 e <event JSON>    per event
    PEXPIRE {prefix}:stream:{id} live_ttl; SET {prefix}:owner:{id} owner PX live_ttl
                                                        per live stream of the batch
    PEXPIRE {prefix}:stream:{id} finished_ttl; DEL {prefix}:owner:{id}
                                                        per stream that ended in it

Live streams that sent nothing for ``live_ttl / 3`` seconds get their expiry
and owner record refreshed too, so an idle stream does not expire; so do all
live streams right after an outage (a Redis restarted without its data lost
the owner records). :meth:`RedisPublisher.register` writes the owner record
of a stream before its first event, so a reader on another process waits for
the first event instead of finding no such stream.

Failures. A batch leaves the deque only once Redis has answered. When Redis is
unreachable, restarting or loading, the batch is retried with exponential
backoff and jitter (``retry_initial`` doubling up to ``retry_max``) for as long
as it takes; a retried ``XADD`` of an event already written is refused by
Redis as "equal or smaller than the target stream top item" (entry ids are
``{seq}-1``), which the publisher counts as written: nothing is published
twice. Meanwhile events queue up to ``max_buffer``; past that new events are
dropped (terminal events never are, so a reader always sees the end), counted
in :attr:`RedisPublisher.dropped` and passed to ``on_drop``. One warning is
logged when an outage starts and one when it ends, with the error's type and
Redis's own message (host and port, never a password).

Redis restarted without persistence has lost what was written before: the
publisher goes on from the next event, and a reader finds the gap
(:class:`~sinks.redis_bus.bus_errors.BusGapError`) and reads the missing events
from the transcript store.

The task, ``flush``/``close`` and the retry loop are
:class:`sinks._drain_writer.DrainWriter`'s (the transcript store's too); this
module says what a batch is and how it is written.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from typing import Any

from reactivex import abc
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from pipeline.core.events import Event, dump_event, is_terminal
from pipeline.runtime.multicast import StreamRun
from sinks._drain_writer import DrainWriter, DropHook
from sinks.redis_bus.settings import BusSettings, entry_id

__all__ = ["RETRYABLE", "DropHook", "RedisPublisher", "is_duplicate"]

log = logging.getLogger(__name__)

RETRYABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # refused, reset, closed; also BusyLoadingError
    redis_errors.TimeoutError,
    redis_errors.TryAgainError,
    redis_errors.ReadOnlyError,  # a replica promoted, or not yet
    OSError,
)
"""Errors that may pass: the write is retried."""


def is_duplicate(error: BaseException) -> bool:
    """Whether ``error`` is Redis refusing an ``XADD`` whose entry id is already written."""
    return isinstance(error, redis_errors.ResponseError) and "equal or smaller" in str(error)


class RedisPublisher(DrainWriter[list[Event]]):
    """Publishes events to Redis streams from a bounded buffer; see the module docstring.

    ``owner`` names this process in the owner records (``host:port``, say).
    Call :meth:`start` on the running loop, :meth:`close` at the end.
    """

    _log = log
    _what = "redis bus: the publisher"
    _task_name = "rxllm-redis-bus"

    def __init__(
        self,
        client: Redis,
        owner: str,
        settings: BusSettings | None = None,
        *,
        on_drop: DropHook | None = None,
    ) -> None:
        self.settings = settings or BusSettings()
        super().__init__(self.settings.retry_backoff, on_drop=on_drop)
        self._client = client
        self.owner = owner
        self._queue: deque[Event] = deque()
        self._live: dict[str, None] = {}  # streams registered or written, not ended
        self._down: BaseException | None = None
        self._refresh_now = False  # after an outage: owner records may be lost
        self._next_refresh = 0.0
        self.published = 0

    # -- the hot path: called from on_next, never awaits --------------------

    @property
    def pending(self) -> int:
        """Events waiting to be written."""
        return len(self._queue)

    def attach(self, run: StreamRun) -> abc.DisposableBase:
        """Publish ``run``'s events (call before ``run.start()``); returns the subscription."""
        return run.subscribe(self.put)

    async def register(self, stream_id: str) -> bool:
        """Write a new stream's owner record now; ``False`` if Redis is unreachable.

        The stream counts as live from now on (its record is refreshed, and
        written again after an outage), even before its first event.
        """
        self._live[stream_id] = None
        ttl_ms = int(self.settings.live_ttl * 1000)
        try:
            await self._client.set(self.settings.owner_key(stream_id), self.owner, px=ttl_ms)
        except RETRYABLE as error:
            log.debug("redis bus: could not register stream %s: %r", stream_id, error)
            return False
        return True

    def put(self, event: Event) -> bool:
        """Queue ``event``; ``False`` if it was dropped (buffer full or publisher closed)."""
        if self._closed or (
            len(self._queue) >= self.settings.max_buffer and not is_terminal(event)
        ):
            self._drop(
                "redis bus: buffer full (%d events, Redis is slow or down): dropping events, "
                "starting with seq %d of stream %s; resumes through other processes read "
                "them from the transcript store",
                len(self._queue),
                event.seq,
                event.stream_id,
            )
            return False
        self._queue.append(event)
        self._accept()
        if not self._wakeup.is_set():
            self._wakeup.set()
        return True

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Start the writer task on the running loop."""
        self._next_refresh = asyncio.get_running_loop().time() + self.settings.live_ttl / 3
        super().start()

    async def close(self, grace: float | None = None) -> None:
        """Flush (for at most ``grace`` seconds, default ``close_timeout``), then stop the task."""
        await super().close(self.settings.close_timeout if grace is None else grace)

    def _lost(self, grace: float) -> None:
        log.error(
            "redis bus: could not publish within the close timeout; %d events not published",
            len(self._queue),
        )

    # -- the drain (see sinks._drain_writer) ------------------------------------

    def _wait_timeout(self) -> float:
        return max(0.0, self._next_refresh - asyncio.get_running_loop().time())

    async def _before_drain(self) -> None:
        settings = self.settings
        if 0 < len(self._queue) < settings.batch_size and settings.flush_interval > 0:
            await asyncio.sleep(settings.flush_interval)  # gather a batch

    async def _after_drain(self) -> None:
        now = asyncio.get_running_loop().time()
        if now >= self._next_refresh or self._refresh_now:
            self._refresh_now = False
            self._next_refresh = now + self.settings.live_ttl / 3
            await self._refresh()

    def _has_work(self, target: int) -> bool:
        return bool(self._queue)  # what arrives while a batch is written goes too

    def _retryable(self, error: Exception) -> bool:
        return isinstance(error, RETRYABLE)

    def _take(self) -> list[Event]:
        size = min(self.settings.batch_size, len(self._queue))
        return list(itertools.islice(self._queue, size))

    def _retrying(self, error: Exception, attempt: int, batch: list[Event]) -> None:
        self._outage(error)

    def _commit(self, batch: list[Event]) -> int:
        for _ in range(len(batch)):
            self._queue.popleft()
        if self._overflowing and len(self._queue) < self.settings.max_buffer // 2:
            self._overflowing = False
        return self._done + len(batch)

    def _written(self, retries: int) -> None:
        if self._down is not None:
            log.warning(
                "redis bus: Redis is reachable again after %d retries (%d events dropped so far)",
                retries,
                self.dropped,
            )
            self._down = None
            self._refresh_now = True

    async def _write(self, batch: list[Event]) -> None:
        settings = self.settings
        ttl_ms = int(settings.live_ttl * 1000)
        ended: dict[str, bool] = {}
        async with self._client.pipeline(transaction=False) as pipe:
            for event in batch:
                sid = event.stream_id
                pipe.xadd(
                    settings.stream_key(sid),
                    {"e": dump_event(event)},
                    id=entry_id(event.seq),
                    maxlen=settings.maxlen,
                    approximate=True,
                )
                ended[sid] = ended.get(sid, False) or is_terminal(event)
            for sid, done in ended.items():
                key, owner_key = settings.stream_key(sid), settings.owner_key(sid)
                if done:
                    pipe.pexpire(key, int(settings.finished_ttl * 1000))
                    pipe.delete(owner_key)
                else:
                    pipe.pexpire(key, ttl_ms)
                    pipe.set(owner_key, self.owner, px=ttl_ms)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, RETRYABLE):
                raise result  # Redis is loading, or read-only: try the whole batch again
        for event, result in zip(batch, results, strict=False):
            if not isinstance(result, Exception):
                self.published += 1
            elif not is_duplicate(result):
                self._failed(event, result)
        for sid, done in ended.items():
            if done:
                self._live.pop(sid, None)
            else:
                self._live[sid] = None

    async def _refresh(self) -> None:
        """Refresh the expiry and owner record of every live stream (idle ones included)."""
        if not self._live or self._down is not None:
            return
        settings = self.settings
        ttl_ms = int(settings.live_ttl * 1000)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for sid in self._live:
                    pipe.pexpire(settings.stream_key(sid), ttl_ms)
                    pipe.set(settings.owner_key(sid), self.owner, px=ttl_ms)
                await pipe.execute(raise_on_error=False)
        except RETRYABLE as error:
            self._outage(error)

    def _outage(self, error: BaseException) -> None:
        if self._down is None:
            self._down = error
            log.warning(
                "redis bus: cannot write to Redis (%s: %s); retrying with backoff, %d events "
                "buffered (at most %d)",
                type(error).__name__,
                error,
                len(self._queue),
                self.settings.max_buffer,
            )

    def _failed(self, event: Event, error: BaseException) -> None:
        self.failed += 1
        if self.failed == 1 or self.failed & (self.failed - 1) == 0:  # 1st, 2nd, 4th... time
            log.error(
                "redis bus: Redis refused event %d of stream %s (%s: %s); %d refused so far",
                event.seq,
                event.stream_id,
                type(error).__name__,
                error,
                self.failed,
            )
