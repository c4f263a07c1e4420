"""Multicast: one upstream request feeds every sink.

A :class:`StreamRun` holds one stream of events. Sinks subscribe first
(observers with :meth:`StreamRun.subscribe`, async readers with
:meth:`StreamRun.iterate`); :meth:`StreamRun.start` then connects the source,
so no sink misses the first event. :meth:`StreamRun.cancel` (a sink's request,
a client gone, a timeout) disposes the upstream subscription, which cancels
the upstream request, and every remaining sink still receives the terminal
``cancelled`` event. Whatever happens, each sink sees exactly one terminal
event, then completion.

Example::

    run = StreamRun(llm_stream(sources.chat_completions(client, **request)), errors_mapped=True)
    run.subscribe(store_sink)
    events = run.iterate()          # an async reader, buffered
    run.start()
    async for event in events: ...

The fan-out is a plain loop over the attached sinks, not a reactivex
``Subject``: a ``Subject`` wraps each observer in an ``AutoDetachObserver``
with its own disposable and lock, and subscribes through reactivex's
trampoline scheduler (a cost per sink when a stream is opened, and a few
more layers per event and sink); the sinks are attached once per stream and
called for every chunk. (The figures are in bench/README.md.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import Disposable, SerialDisposable

from operators.map_errors import map_errors
from pipeline.core.events import Cancelled, Event, EventBase
from pipeline.core.flow_control import CURRENT_FLOW, FlowGate
from pipeline.runtime.async_bridges import BufferedObserver, BufferReader

__all__ = ["StreamRun"]

log = logging.getLogger(__name__)


class _Sink(abc.DisposableBase):
    """One attached observer; disposing detaches it (idempotent)."""

    __slots__ = ("_run", "on_completed", "on_error", "on_next")

    def __init__(
        self,
        run: StreamRun,
        on_next: Callable[[Event], None],
        on_error: Callable[[Exception], None] | None,
        on_completed: Callable[[], None] | None,
    ) -> None:
        self._run: StreamRun | None = run
        self.on_next = on_next
        self.on_error = on_error
        self.on_completed = on_completed

    def dispose(self) -> None:
        run, self._run = self._run, None
        if run is not None:
            run._detach(self)


class StreamRun:
    """One upstream stream multicast to several sinks; see the module docstring."""

    def __init__(
        self,
        events: Observable[Event],
        stream_id: str | None = None,
        *,
        errors_mapped: bool = False,
    ) -> None:
        # Every stream ends with one terminal event: map_errors guarantees it. A caller
        # whose source already keeps that promise (llm_stream's output, a failover)
        # says so with errors_mapped=True and saves a second layer per event.
        self._source = events if errors_mapped else events.pipe(map_errors(stream_id))
        self._sinks: tuple[_Sink, ...] = ()  # replaced, never changed in place: safe to loop
        self._ended = False  # completed: sinks attached later get only the end
        self._error: Exception | None = None  # what it ended with, if with an error
        self._upstream = SerialDisposable()
        self._started_at: float | None = None
        self._last: EventBase | None = None
        self._terminal: EventBase | None = None
        self._done: asyncio.Event | None = None  # made by wait(): most runs are never waited for
        self.stream_id = stream_id
        self.cancel_reason: str | None = None
        self.flow = FlowGate()  # held by a reader that falls behind; the source waits on it

    @property
    def started(self) -> bool:
        """Whether :meth:`start` was called."""
        return self._started_at is not None

    @property
    def last_event(self) -> EventBase | None:
        """The last event sent to the sinks."""
        return self._last

    @property
    def terminal(self) -> EventBase | None:
        """The terminal event, once the stream has ended."""
        return self._terminal

    @property
    def events(self) -> Observable[Event]:
        """The multicast stream (hot: subscribe before :meth:`start`)."""

        def subscribe(
            observer: abc.ObserverBase[Event], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            return self.observe(observer)

        return Observable(subscribe)

    @property
    def sink_count(self) -> int:
        """How many sinks and readers are attached now."""
        return len(self._sinks)

    def subscribe(self, observer: abc.ObserverBase[Event] | Any) -> abc.DisposableBase:
        """Attach a sink (an observer, or an ``on_next`` callable) before :meth:`start`.

        A sink that raises is detached (and the exception logged): one broken
        sink never stops the others. Disposing the result detaches the sink.
        """
        if self.started:
            log.warning("a sink subscribed to stream %s after it started", self.stream_id)
        return self.observe(observer)

    def observe(self, observer: abc.ObserverBase[Event] | Any) -> abc.DisposableBase:
        """Attach an observer (or an ``on_next`` callable) now, started or not.

        What :meth:`subscribe` does, without its warning: for a reader that
        joins a live stream on purpose (:meth:`pipeline.runtime.stream_hub.StreamHub.events`
        replays what it missed). After the end it gets only the completion.
        """
        if isinstance(observer, abc.ObserverBase):
            return self._attach(observer.on_next, observer.on_error, observer.on_completed)
        return self._attach(observer, None, None)

    def iterate(self, maxsize: int = 256) -> BufferReader[Event]:
        """Attach an async reader now; iterate it later. Closing it detaches only it.

        The reader's buffer holds this stream's :attr:`flow` gate while it
        is full: a reader that does not keep up slows the upstream read. The
        reader is a :class:`pipeline.runtime.async_bridges.BufferReader`: a
        consumer that keeps up can take the events in the emitting step
        (``deliver_to``), as the SSE responder does.
        """
        buffer: BufferedObserver[Event] = BufferedObserver(maxsize, flow=self.flow)
        return BufferReader(buffer, self.observe(buffer).dispose)

    def _attach(
        self,
        on_next: Callable[[Event], None],
        on_error: Callable[[Exception], None] | None,
        on_completed: Callable[[], None] | None,
    ) -> abc.DisposableBase:
        if self._ended:  # what a late subscriber to a completed Subject gets
            if self._error is not None:
                if on_error is not None:
                    on_error(self._error)
            elif on_completed is not None:
                on_completed()
            return Disposable()
        sink = _Sink(self, on_next, on_error, on_completed)
        self._sinks = (*self._sinks, sink)
        return sink

    def _detach(self, sink: _Sink) -> None:
        self._sinks = tuple(s for s in self._sinks if s is not sink)

    def _stop(self, error: Exception | None) -> None:
        if self._ended:
            return
        self._ended, self._error = True, error
        sinks, self._sinks = self._sinks, ()
        for sink in sinks:
            try:
                if error is None:
                    if sink.on_completed is not None:
                        sink.on_completed()
                elif sink.on_error is not None:
                    sink.on_error(error)
            except Exception:
                log.exception("a sink of stream %s failed at its end", self.stream_id)

    def start(self) -> None:
        """Connect the source: the upstream request starts now."""
        if self.started:
            raise RuntimeError("this stream has already started")
        self._started_at = time.monotonic()
        # A source that supports it reads the gate now (see pipeline.core.flow_control).
        token = CURRENT_FLOW.set(self.flow)
        try:
            self._upstream.disposable = self._source.subscribe(
                self._on_next, self._on_error, self._on_completed
            )
        finally:
            CURRENT_FLOW.reset(token)

    def cancel(self, reason: str = "cancelled") -> None:
        """Cancel upstream; the sinks get a terminal ``cancelled`` event (once)."""
        if self._terminal is not None:
            return
        self.cancel_reason = reason
        self._upstream.dispose()
        last = self._last
        seq = 0 if last is None else last.seq + 1
        stream_id = self.stream_id or (last.stream_id if last is not None else "")
        elapsed = 0.0 if self._started_at is None else time.monotonic() - self._started_at
        t = max(elapsed, last.t if last is not None else 0.0)
        self._on_next(Cancelled(stream_id=stream_id, seq=seq, t=t, reason=reason))
        self._on_completed()

    async def wait(self) -> EventBase:
        """Wait for the terminal event and return it."""
        if self._terminal is None and not self._ended:
            if self._done is None:
                self._done = asyncio.Event()
            await self._done.wait()
        assert self._terminal is not None
        return self._terminal

    def _on_next(self, event: Event) -> None:
        if self._terminal is not None:
            return
        self._last = event
        if self.stream_id is None:
            self.stream_id = event.stream_id
        if event.ends_stream:
            self._terminal = event
        # The fan-out, here rather than in a method of its own: it runs for every event.
        for sink in self._sinks:
            try:
                sink.on_next(event)
            except Exception:
                log.exception("a sink of stream %s failed; it is detached", self.stream_id)
                sink.dispose()

    def _on_error(self, error: Exception) -> None:
        # map_errors turns upstream errors into events; this is a sink's own bug.
        log.error("stream %s failed in a sink: %r", self.stream_id, error)
        self._stop(error)
        self._finish()

    def _on_completed(self) -> None:
        self._stop(None)
        self._finish()

    def _finish(self) -> None:
        if self._done is not None:
            self._done.set()
        self._upstream.disposable = Disposable()
