"""The reader: a stream's events from Redis, from any ``seq`` on, then live, to the end.

:func:`open_events` checks the stream now (so an HTTP handler can answer
with an error status, or fall back to the transcript store) and returns an
async iterator: the events already in Redis after ``after`` (``XRANGE``),
then the new ones as they are written (``XREAD BLOCK``), up to and including
the terminal event, each exactly once and in ``seq`` order.

Errors (:mod:`sinks.redis_bus.bus_errors`), from :func:`open_events` or, later,
from the iterator: :class:`BusStreamNotFoundError` when neither the key nor
the owner record exists (a stream registered by its owner reads as live and
empty until its first event is written), or both vanished while blocked (they
expired, or Redis restarted);
:class:`BusGapError` when the next event is missing from Redis (the iterator
stops before it, so what was yielded stays valid: read the gap from the
store, then open again after it); :class:`BusUnavailableError` when Redis
stays unreachable for ``reconnect_timeout`` seconds (shorter outages are
retried with backoff).

Each open iterator holds one Redis connection while it blocks; close it
(``aclose``) or read it to its end. A read of many entries lets the loop turn
every :data:`pipeline.core.flow_control.TURN_MESSAGES` events, so catching up
on a long stream does not hold the other streams up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio import Redis

from pipeline.core.backoff import retry_within
from pipeline.core.events import Event, is_terminal, load_event
from pipeline.core.flow_control import TURN_MESSAGES
from sinks.redis_bus.bus_errors import BusGapError, BusStreamNotFoundError, BusUnavailableError
from sinks.redis_bus.publisher import RETRYABLE
from sinks.redis_bus.settings import BusSettings, id_before

__all__ = ["last_event", "open_events"]

_T = TypeVar("_T")
_COUNT = 512  # entries per XRANGE / XREAD


async def open_events(
    client: Redis, stream_id: str, after: int | None = None, settings: BusSettings | None = None
) -> AsyncGenerator[Event, None]:
    """The events of ``stream_id`` with ``seq`` > ``after`` (all if ``None``): stored, then live.

    Errors: see the module docstring.
    """
    settings = settings or BusSettings()
    key = settings.stream_key(stream_id)
    expected = 0 if after is None else after + 1

    async def first() -> list[Any]:
        async with client.pipeline(transaction=True) as pipe:
            pipe.exists(key, settings.owner_key(stream_id))  # registered, no event written yet
            pipe.xrange(key, min=f"{expected}-0", max="+", count=_COUNT)
            pipe.xrevrange(key, max="+", min="-", count=1)
            return list(await pipe.execute())

    try:
        exists, entries, last = await first()
    except RETRYABLE as error:
        raise BusUnavailableError(f"read stream {stream_id!r}", error) from error
    if not exists:
        raise BusStreamNotFoundError(stream_id)
    events = _decode(entries)
    if events and events[0].seq != expected:
        raise BusGapError(stream_id, expected, events[0].seq)
    if not events and last:
        newest = _decode(last)[0]
        if is_terminal(newest) and newest.seq < expected:
            return _empty()  # the stream ended at or before ``after``: nothing follows
    return _follow(client, settings, stream_id, events, expected)


async def last_event(
    client: Redis, stream_id: str, settings: BusSettings | None = None
) -> Event | None:
    """The newest event of ``stream_id`` in Redis, or ``None`` (no key, or empty)."""
    settings = settings or BusSettings()
    try:
        entries = await client.xrevrange(settings.stream_key(stream_id), count=1)
    except RETRYABLE as error:
        raise BusUnavailableError(f"read stream {stream_id!r}", error) from error
    events = _decode(entries or [])
    return events[0] if events else None


async def _empty() -> AsyncGenerator[Event, None]:
    return
    yield  # an async generator that yields nothing


async def _follow(
    client: Redis, settings: BusSettings, stream_id: str, events: list[Event], expected: int
) -> AsyncGenerator[Event, None]:
    key, owner_key = settings.stream_key(stream_id), settings.owner_key(stream_id)
    block_ms = max(1, int(settings.block * 1000))

    async def known() -> int:
        return await client.exists(key, owner_key)

    while True:
        for i, event in enumerate(events, 1):
            if event.seq < expected:
                continue
            if event.seq > expected:
                raise BusGapError(stream_id, expected, event.seq)
            yield event
            expected += 1
            if is_terminal(event):
                return
            if i % TURN_MESSAGES == 0:  # a long read lets the other streams run
                await asyncio.sleep(0)
        start = id_before(expected)

        async def xread(start: str = start) -> Any:
            return await client.xread({key: start}, count=_COUNT, block=block_ms)

        reply = await _retrying(settings, f"read stream {stream_id!r}", xread)
        if reply:
            events = _decode(_entries_of(reply))
            continue
        events = []
        # Nothing for ``block`` seconds: the key may be gone (expired, Redis restarted).
        if not await _retrying(settings, f"read stream {stream_id!r}", known):
            raise BusStreamNotFoundError(stream_id, while_reading=True)


async def _retrying(settings: BusSettings, what: str, action: Callable[[], Awaitable[_T]]) -> _T:
    """``action()``, retried with backoff while Redis is unreachable (``reconnect_timeout``)."""
    try:
        return await retry_within(
            action,
            settings.retry_backoff,
            within=settings.reconnect_timeout,
            retryable=lambda error: isinstance(error, RETRYABLE),
        )
    except RETRYABLE as error:  # still unreachable when the time was up
        raise BusUnavailableError(what, error) from error


def _entries_of(reply: Any) -> Sequence[Any]:
    """The entries of an ``XREAD`` reply for one key (RESP2: ``[[key, entries]]``)."""
    return reply[0][1] if reply else []


def _decode(entries: Sequence[Any]) -> list[Event]:
    out: list[Event] = []
    for _entry_id, fields in entries:
        data = fields.get(b"e", fields.get("e"))
        out.append(load_event(data))
    return out
