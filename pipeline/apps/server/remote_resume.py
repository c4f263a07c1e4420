"""Resuming a stream this process does not hold: from Redis while live or recent, else the store.

``GET /v1/streams/{id}/events`` reads this process's own streams from the hub;
:func:`open_resume` serves the others, and the ones the hub has dropped:

1. Redis (:mod:`sinks.redis_bus`), when configured: what it holds after
   ``after``, then live, to the terminal event;
2. where Redis lacks events (trimmed, dropped while it was down, lost in a
   restart, expired), the transcript store fills the gap, then Redis is read
   again after the last event served;
3. without Redis, or once the stream's key is gone: the store alone.

Every event is served once, in ``seq`` order, with no gap: a hole neither
source can fill (yet) is waited for, up to ``settle`` seconds without
progress, and then the response ends without a terminal event, as if the
connection had dropped, so the client reconnects with ``Last-Event-ID``. The
same happens when the stream is still ``running`` in the store while no
process publishes it (its process died: ``open()`` of the store marks it
``interrupted`` at that process's restart). A stream the store holds as
ended (``interrupted``) without a terminal event gets one: ``cancelled``,
reason ``interrupted: ...``, so a browser's ``EventSource`` stops
reconnecting.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any

from pipeline.core.events import Cancelled, Event, is_terminal

if TYPE_CHECKING:
    from sinks.redis_bus import RedisBus

__all__ = ["open_resume"]


async def open_resume(
    stream_id: str,
    after: int | None,
    *,
    bus: RedisBus | None,
    store: Any,
    settle: float = 3.0,
    poll: float = 0.1,
) -> AsyncIterator[Event] | None:
    """The events of ``stream_id`` after ``after`` from Redis and the store; ``None`` if unknown.

    ``store`` is a :class:`sinks.store.Store` (or ``None``).
    """
    source: AsyncGenerator[Event, None] | None = None
    known = False
    if bus is not None:
        from sinks.redis_bus import BusError, BusGapError

        try:
            source = await bus.events(stream_id, after)
            known = True
        except BusGapError:
            known = True
        except BusError:
            pass  # not in Redis, or Redis is down: the store answers
    stored: list[Event] | None = None
    if source is None:
        stored = [] if store is None else await store.events(stream_id, after_seq=after)
        if not known and not stored and (store is None or await store.get(stream_id) is None):
            return None
    return _stitch(stream_id, after, source, stored, bus, store, settle, poll)


async def _stitch(
    stream_id: str,
    after: int | None,
    source: AsyncGenerator[Event, None] | None,
    stored: list[Event] | None,
    bus: RedisBus | None,
    store: Any,
    settle: float,
    poll: float,
) -> AsyncGenerator[Event, None]:
    from sinks.redis_bus import BusError

    last = -1 if after is None else after
    counted = bus is not None and source is not None
    if counted:
        assert bus is not None
        bus.reader_attached(stream_id)
    loop = asyncio.get_running_loop()
    stalled_since: float | None = None
    try:
        while True:
            if source is not None:
                try:
                    async for event in source:
                        if event.seq != last + 1:
                            break  # the reader never does this; nothing is served twice
                        last = event.seq
                        stalled_since = None
                        yield event
                        if is_terminal(event):
                            return
                except BusError:
                    pass  # a gap, or the key vanished: the store fills in
                finally:
                    await source.aclose()
                source = None
            if stored is None:
                stored = [] if store is None else await store.events(stream_id, after_seq=last)
            for event in stored:
                if event.seq != last + 1:
                    break
                last = event.seq
                stalled_since = None
                yield event
                if is_terminal(event):
                    return
            stored = None
            if bus is None or (stalled_since is not None and not await _running(store, stream_id)):
                # The store holds all it has. A stream that ended without its terminal
                # event (its process died: "interrupted") gets one, so a client stops
                # reconnecting; a stream still running elsewhere does not.
                end = await _interrupted_end(store, stream_id, last)
                if end is not None:
                    yield end
                return
            if stalled_since is None:
                stalled_since = loop.time()
            elif loop.time() - stalled_since > settle:
                return  # no one publishes the rest: the client reconnects later
            try:
                source = await bus.events(stream_id, last)
            except BusError:
                await asyncio.sleep(poll)  # Redis lacks the next event; the store may soon have it
    finally:
        if counted:
            assert bus is not None
            bus.reader_detached(stream_id)


async def _interrupted_end(store: Any, stream_id: str, last: int) -> Event | None:
    """A terminal ``cancelled`` event for a stored stream that ended without one, else ``None``."""
    if store is None:
        return None
    transcript = await store.get(stream_id)
    if transcript is None or getattr(transcript, "status", "running") == "running":
        return None
    error = getattr(transcript, "error", None) or {}
    why = error.get("message") if isinstance(error, dict) else None
    return Cancelled(
        stream_id=stream_id,
        seq=last + 1,
        t=getattr(transcript, "duration", None) or 0.0,
        reason=f"interrupted: {why or 'the stream ended without its last event'}",
    )


async def _running(store: Any, stream_id: str) -> bool:
    """Whether the store still has ``stream_id`` running (or cannot say)."""
    if store is None:
        return True
    transcript = await store.get(stream_id)
    return transcript is None or getattr(transcript, "status", "running") == "running"
