"""The stream hub: this process's live (and recently finished) streams, for resume.

:meth:`StreamHub.register` attaches a bounded replay buffer to a
:class:`~pipeline.runtime.multicast.StreamRun` before it starts;
:meth:`StreamHub.events` then reads a stream from any point: the buffered
events after ``after``, then the live ones, with no gap and no duplicate.
That is what a reconnecting client's ``Last-Event-ID`` asks for.

Example::

    hub = StreamHub()
    stream_id = hub.register(run)
    run.start()
    ...
    events = hub.events(stream_id, after=last_event_id(request.headers))
    return SSEResponse(events, on_disconnect=run.cancel)

How no event is lost or repeated: :meth:`StreamHub.events` attaches a live
reader first, then copies the replay buffer, in the same synchronous step;
it yields the copy's events after ``after``, then the live events, skipping
any whose ``seq`` is not above the last one yielded. A long replay lets the
loop turn every :data:`pipeline.core.flow_control.TURN_MESSAGES` events, so a
resume of thousands of events does not hold the other streams up.

The replay buffer keeps each event as its JSON (bytes) beside its ``seq``,
not as the event object: a text delta is several times smaller that way
(bench/README.md), and bytes and a tuple of them are nothing the garbage collector
walks, while buffered objects (two per event, up to ``replay_size`` per
stream) made every full collection of a busy server visit millions of
them. Serializing is cheap next to that; a resume parses
what it replays. An event that is not JSON (a custom operator's value in
``partial``, say) is kept as it is.

A finished stream is kept for ``keep_finished`` seconds, and at most
``max_finished`` of them (the oldest go first); they are dropped lazily, on
the hub's next call, so the hub owns no task and no timer and is bound to no
event loop (one hub can serve several loops, one at a time per stream).

Errors (subclasses of :class:`pipeline.core.errors.RxllmError`)::

    RxllmError
    ├── StreamNotFoundError   no such stream here (never registered, or dropped)
    └── ResumeGapError        the replay buffer no longer holds the events asked for
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterator
from itertools import islice

from pydantic_core import PydanticSerializationError
from reactivex import abc

from pipeline.core.errors import RxllmError
from pipeline.core.events import Event, event_json, is_terminal, load_event
from pipeline.core.flow_control import TURN_MESSAGES
from pipeline.runtime.async_bridges import BufferedObserver, Consumer
from pipeline.runtime.multicast import StreamRun

__all__ = ["ResumeGapError", "StreamHub", "StreamNotFoundError"]


class StreamNotFoundError(RxllmError, LookupError):
    """No stream with this id is registered (or it finished and was dropped)."""

    def __init__(self, stream_id: str) -> None:
        super().__init__(
            f"no stream {stream_id!r} in this process: it never started here, or it "
            "finished and was dropped; look it up in the transcript store"
        )
        self.stream_id = stream_id


class ResumeGapError(RxllmError):
    """The events after ``after`` are no longer all in the replay buffer.

    ``oldest`` is the ``seq`` of the oldest event still held; events up to
    ``dropped`` have been dropped. Read the missing ones from a store, or
    register streams with a larger ``replay_size``.
    """

    def __init__(self, stream_id: str, after: int | None, oldest: int | None, dropped: int) -> None:
        asked = "the start" if after is None else f"after seq {after}"
        super().__init__(
            f"cannot resume stream {stream_id!r} from {asked}: its replay buffer "
            f"dropped every event up to seq {dropped}; read them from the transcript "
            "store or raise replay_size"
        )
        self.stream_id = stream_id
        self.after = after
        self.oldest = oldest
        self.dropped = dropped


class _Entry:
    """One registered stream: its run and its replay buffer."""

    __slots__ = ("buffer", "dropped", "finished_at", "run")

    def __init__(self, run: StreamRun, replay_size: int) -> None:
        self.run = run
        # (seq, JSON), or (seq, the event) for the rare event that is not JSON
        self.buffer: deque[tuple[int, bytes | Event]] = deque(maxlen=replay_size)
        self.dropped: int | None = None  # seq of the last event pushed out of the buffer
        self.finished_at: float | None = None


class _Replay(abc.ObserverBase[Event]):
    """The hub's sink on one stream: each event's JSON into its replay buffer.

    A plain observer, called straight from :class:`StreamRun`'s fan-out for every
    event (reactivex's ``Observer`` would add two calls per event; the run
    already ends each sink once).
    """

    __slots__ = ("_entry", "_hub", "_sid")

    def __init__(self, hub: StreamHub, sid: str, entry: _Entry) -> None:
        self._hub = hub
        self._sid = sid
        self._entry = entry

    def on_next(self, value: Event) -> None:
        buffer = self._entry.buffer
        if len(buffer) == buffer.maxlen:
            self._entry.dropped = buffer[0][0]
        try:
            data: bytes | Event = event_json(value)
        except PydanticSerializationError:  # a custom operator's non-JSON value
            data = value
        buffer.append((value.seq, data))
        if value.ends_stream:
            self._hub._mark_finished(self._sid, self._entry)

    def on_error(self, error: Exception) -> None:
        self._hub._mark_finished(self._sid, self._entry)

    def on_completed(self) -> None:
        self._hub._mark_finished(self._sid, self._entry)


class StreamHub:
    """A registry of this process's streams with replay buffers; see the module docstring.

    ``replay_size`` is each stream's default buffer length (events);
    ``keep_finished`` (seconds) and ``max_finished`` bound how long and how
    many finished streams stay (memory: at most ``replay_size`` events per
    live stream and per kept finished stream); ``clock`` (default ``time.monotonic``) is
    injectable for tests.

    Errors: ``ValueError`` if ``replay_size`` < 1, ``keep_finished`` < 0 or
    ``max_finished`` < 0.
    """

    def __init__(
        self,
        *,
        replay_size: int = 4096,
        keep_finished: float = 300.0,
        max_finished: int = 128,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if replay_size < 1:
            raise ValueError(f"replay_size must be >= 1, got {replay_size!r}")
        if keep_finished < 0 or max_finished < 0:
            raise ValueError("keep_finished and max_finished must be >= 0")
        self.replay_size = replay_size
        self.keep_finished = keep_finished
        self.max_finished = max_finished
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._finished: OrderedDict[str, float] = OrderedDict()  # id -> finished_at, oldest first

    def register(
        self, run: StreamRun, *, stream_id: str | None = None, replay_size: int | None = None
    ) -> str:
        """Attach a replay buffer to ``run`` (before ``run.start()``); return the stream id.

        The id is ``stream_id``, else ``run.stream_id``.

        Errors: ``ValueError`` if the run has started, has no id, or the id is
        already registered; ``ValueError`` for ``replay_size`` < 1.
        """
        self.prune()
        if run.started:
            raise ValueError("register a stream before run.start(): it would miss events")
        sid = stream_id or run.stream_id
        if not sid:
            raise ValueError("the stream has no id: pass stream_id= or StreamRun(..., stream_id=)")
        if sid in self._entries:
            raise ValueError(f"stream {sid!r} is already registered")
        size = self.replay_size if replay_size is None else replay_size
        if size < 1:
            raise ValueError(f"replay_size must be >= 1, got {size!r}")
        entry = _Entry(run, size)
        self._entries[sid] = entry
        run.subscribe(_Replay(self, sid, entry))
        return sid

    def get(self, stream_id: str) -> StreamRun | None:
        """The run registered as ``stream_id``, or ``None``."""
        self.prune()
        entry = self._entries.get(stream_id)
        return None if entry is None else entry.run

    def __contains__(self, stream_id: object) -> bool:
        self.prune()
        return stream_id in self._entries

    def __len__(self) -> int:
        self.prune()
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        self.prune()
        return iter(list(self._entries))

    def live(self) -> list[str]:
        """The ids of the streams that have not finished."""
        self.prune()
        return [sid for sid, entry in self._entries.items() if entry.finished_at is None]

    def snapshot(self, stream_id: str, limit: int | None = None) -> list[Event]:
        """The stream's events in its replay buffer so far, oldest first (the first ``limit``).

        A look at a stream without following it (the inspector): a stream
        longer than its buffer has lost its oldest events here; the store has them all.

        Errors: :class:`StreamNotFoundError` for an unknown id.
        """
        entry = self._entry(stream_id)
        held = list(entry.buffer) if limit is None else list(islice(entry.buffer, limit))
        return [load_event(data) if isinstance(data, bytes) else data for _, data in held]

    def buffered(self, stream_id: str) -> int:
        """How many events of the stream its replay buffer holds.

        Errors: :class:`StreamNotFoundError` for an unknown id.
        """
        return len(self._entry(stream_id).buffer)

    def cancel(self, stream_id: str, reason: str = "cancelled") -> bool:
        """Cancel a live stream (its sinks get ``cancelled``); ``False`` if it had ended.

        Errors: :class:`StreamNotFoundError` for an unknown id.
        """
        entry = self._entry(stream_id)
        if entry.finished_at is not None or entry.run.terminal is not None:
            return False
        entry.run.cancel(reason)
        return True

    def events(
        self, stream_id: str, after: int | None = None, *, maxsize: int = 256
    ) -> AsyncIterator[Event]:
        """The stream's events with ``seq`` > ``after`` (all if ``None``): buffered, then live.

        Checks happen now, not at the first iteration, so an HTTP handler can
        answer with an error status. Iterate the result to its end or close it
        (``aclose``): it holds a live reader (``maxsize`` bounds its buffer, as
        in :meth:`StreamRun.iterate`) until then. Like that one, it has
        ``deliver_to``: the live events can go straight to a consumer.

        Errors: :class:`StreamNotFoundError` for an unknown id;
        :class:`ResumeGapError` if events after ``after`` were already dropped
        from the replay buffer.
        """
        entry = self._entry(stream_id)
        live: BufferedObserver[Event] | None = None
        subscription: abc.DisposableBase | None = None
        if entry.finished_at is None:
            live = BufferedObserver(maxsize, flow=entry.run.flow)
            subscription = entry.run.observe(live)
        # Same synchronous step as attaching the live reader: nothing arrives in between.
        replay = list(entry.buffer)
        if entry.dropped is not None and (after is None or after < entry.dropped):
            if subscription is not None:
                subscription.dispose()
            oldest = replay[0][0] if replay else None
            raise ResumeGapError(stream_id, after, oldest, entry.dropped)
        return _Reader(replay, live, subscription, -1 if after is None else after)

    def prune(self) -> int:
        """Drop the finished streams kept too long or beyond ``max_finished``; return how many."""
        now = self._clock()
        dropped = 0
        finished = self._finished
        while finished:
            sid, finished_at = next(iter(finished.items()))
            if len(finished) <= self.max_finished and now - finished_at < self.keep_finished:
                break
            del finished[sid]
            self._entries.pop(sid, None)
            dropped += 1
        return dropped

    def _entry(self, stream_id: str) -> _Entry:
        self.prune()
        entry = self._entries.get(stream_id)
        if entry is None:
            raise StreamNotFoundError(stream_id)
        return entry

    def _mark_finished(self, stream_id: str, entry: _Entry) -> None:
        if entry.finished_at is None and self._entries.get(stream_id) is entry:
            entry.finished_at = self._clock()
            self._finished[stream_id] = entry.finished_at


class _Reader(AsyncIterator[Event]):
    """:meth:`StreamHub.events`' reader: the replayed events after ``after``, then the live ones.

    An event whose ``seq`` is not above the last one read is skipped, both
    in ``async for`` and on the way through :meth:`deliver_to`. The live
    reader's events go straight to a consumer (``deliver_to``) only once the
    replay has been read: never ahead of it.
    """

    def __init__(
        self,
        replay: list[tuple[int, bytes | Event]],
        live: BufferedObserver[Event] | None,
        subscription: abc.DisposableBase | None,
        after: int,
    ) -> None:
        self._replay: Iterator[tuple[int, bytes | Event]] | None = iter(replay)
        self._live = live
        self._live_items = live.__aiter__() if live is not None else None
        self._subscription = subscription
        self._last = after
        self._replayed = 0
        self._ended = False
        self._consumer: Consumer | None = None

    def __aiter__(self) -> _Reader:
        return self

    async def __anext__(self) -> Event:
        try:
            if self._replay is not None:
                for seq, data in self._replay:
                    self._replayed += 1
                    if self._replayed % TURN_MESSAGES == 0:  # a long replay lets others run
                        await asyncio.sleep(0)
                    if seq > self._last:
                        self._last = seq
                        return load_event(data) if isinstance(data, bytes) else data
                self._replay = None
                self.deliver_to(self._consumer)  # live from here on
            live = self._live_items
            while live is not None and not self._ended:
                event = await anext(live)
                if event.seq > self._last:
                    self._last = event.seq
                    self._ended = is_terminal(event)
                    return event
            raise StopAsyncIteration
        except BaseException:  # the end, the stream's error, or cancelled
            self._close()
            raise

    def deliver_to(self, consumer: Consumer | None) -> None:
        """Hand live events to ``consumer`` (see :meth:`BufferedObserver.deliver_to`)."""
        self._consumer = consumer
        if self._replay is None and self._live is not None:
            self._live.deliver_to(None if consumer is None else self._take)

    def _take(self, event: Event) -> bool:
        if event.seq <= self._last:
            return True  # read already: skipped
        assert self._consumer is not None
        if not self._consumer(event):
            return False
        self._last = event.seq
        return True

    async def aclose(self) -> None:
        """Stop reading (the live reader is detached)."""
        try:
            if self._live_items is not None:
                await self._live_items.aclose()
        finally:
            self._close()

    def _close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.dispose()
        if self._live is not None:
            self._live.deliver_to(None)
            self._live.close()  # a reader that leaves while behind no longer holds the source
