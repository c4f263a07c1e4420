"""Bridges between observables and async iterators (aiostream streams).

* :func:`from_async_iterable` -- an async iterable becomes a cold observable:
  each subscription starts a task on the running event loop that reads it;
  disposing the subscription cancels the task, and the iterator is closed
  (``aclose``) on the way out.
* :func:`from_observable` -- an observable becomes an aiostream stream
  (``async for``, ``|`` pipes), read through a bounded buffer
  (:class:`BufferedObserver`). Leaving the iteration disposes the
  subscription, which cancels the upstream request.
* :class:`BufferReader` -- a live stream's reader (what
  :meth:`pipeline.runtime.multicast.StreamRun.iterate` returns): ``async
  for`` over a :class:`BufferedObserver`, or, for a consumer that can take
  an event at once (``deliver_to``, the buffer's: the SSE responder
  writing to a client that keeps up), each event handed over in the
  producer's own step, with no buffer, task switch or generator in between.

reactivex has no backpressure: when the consumer is slower than the producer
the buffer fills. A full buffer holds its stream's flow gate, when it has
one (:mod:`pipeline.core.flow_control`: the HTTP source stops reading the
upstream until the reader catches up), never blocks the producer and never
drops an event: text, reasoning, refusal and tool-argument deltas that
still arrive are appended to the last one in the buffer, in constant time
(the merged event keeps the sequence number of its last part), and only if
nothing can be merged does the buffer grow past its bound, with a warning.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from typing import Any, TypeAlias, TypeVar

from aiostream import operator, streamcontext
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from pipeline.core.events import ReasoningDelta, RefusalDelta, TextDelta, ToolCallDelta
from pipeline.core.flow_control import FlowGate

__all__ = [
    "DEFAULT_MAX_BYTES",
    "BufferReader",
    "BufferedObserver",
    "Consumer",
    "finally_call",
    "from_async_iterable",
    "from_observable",
    "merge_deltas",
]

T = TypeVar("T")
log = logging.getLogger(__name__)

Consumer: TypeAlias = Callable[[Any], bool]
"""Takes an item in the producer's step (``True``), or leaves it to the async reader (``False``)."""


def _loop_for(scheduler: abc.SchedulerBase | None) -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        loop = getattr(scheduler, "_loop", None)
        if isinstance(loop, asyncio.AbstractEventLoop):
            return loop
        raise RuntimeError(
            "this source reads with asyncio: subscribe to it from a running event loop "
            "or pass an AsyncIOScheduler"
        ) from None


def from_async_iterable(
    source: AsyncIterable[T] | Callable[[], AsyncIterable[T]],
) -> Observable[T]:
    """Make a cold observable from an async iterable (or a factory of them).

    With a factory, every subscription gets its own iterator; with an iterable,
    only the first subscription can read it. The reading task belongs to the
    subscription: disposing cancels it and the iterator is closed.

    Errors: an exception raised by the iterator goes to ``on_error``.
    """

    def subscribe(
        observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        loop = _loop_for(scheduler)
        iterable = source() if callable(source) else source

        async def pump() -> None:
            try:
                async with streamcontext(iterable) as items:
                    async for item in items:
                        observer.on_next(item)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                observer.on_error(exc)
                return
            observer.on_completed()

        task = loop.create_task(pump())

        def cancel() -> None:
            task.cancel()

        return Disposable(cancel)

    return Observable(subscribe)


def merge_deltas(a: Any, b: Any) -> Any | None:
    """Merge two adjacent delta events into one, or return ``None`` if they can't be."""
    if type(a) is not type(b) or a.choice != b.choice:
        return None
    if isinstance(a, TextDelta | ReasoningDelta | RefusalDelta):
        return b.model_copy(update={"text": a.text + b.text})
    if isinstance(a, ToolCallDelta) and a.index == b.index:
        return b.model_copy(update={"arguments": a.arguments + b.arguments})
    return None


class _Merging:
    """Deltas merged at the buffer's tail: their pieces, joined once when read (not per piece)."""

    __slots__ = ("field", "last", "parts")

    def __init__(self, first: Any, field: str) -> None:
        self.field = field
        self.last = first
        self.parts: list[str] = [getattr(first, field)]

    def add(self, event: Any) -> None:
        self.last = event
        self.parts.append(getattr(event, self.field))

    def event(self) -> Any:
        return self.last.model_copy(update={self.field: "".join(self.parts)})


def _merge_field(a: Any, b: Any) -> str | None:
    """The field in which ``b`` can be appended to ``a`` (``None``: they don't merge)."""
    if type(a) is not type(b) or a.choice != b.choice:
        return None
    if isinstance(a, TextDelta | ReasoningDelta | RefusalDelta):
        return "text"
    if isinstance(a, ToolCallDelta) and a.index == b.index:
        return "arguments"
    return None


def _size(value: Any) -> int:
    """About how many bytes an item holds: its text, or a small constant."""
    if isinstance(value, TextDelta | ReasoningDelta | RefusalDelta):
        return len(value.text) + _OVERHEAD
    if isinstance(value, ToolCallDelta):
        return len(value.arguments) + _OVERHEAD
    return _OVERHEAD


_OVERHEAD = 64

DEFAULT_MAX_BYTES = 256 * 1024
"""A reader's buffer bound in bytes (of text) before it holds its stream's source."""


class BufferedObserver(abc.ObserverBase[T]):
    """An observer that buffers what it receives for an async reader.

    ``maxsize`` (items) and ``max_bytes`` (their text, about) bound the
    buffer. Past either bound, with a ``flow`` gate (its stream's
    :class:`pipeline.core.flow_control.FlowGate`), the reader holds the gate
    until it has read its buffer down to half of ``max_bytes``: the stream's
    source stops reading meanwhile. Whatever still arrives is appended to the
    last delta when it is of the same kind (in O(1): the pieces are joined
    once, when read), else the buffer grows past its bound, with a warning
    (once). Nothing is dropped. Iterate it with ``async for`` (once);
    :meth:`close` (done by the iteration's end) releases the gate.

    :meth:`deliver_to` sets a consumer that gets each value synchronously,
    instead of the buffer, while the buffer is empty and the consumer takes
    it: the iteration then never sees that value.
    """

    def __init__(
        self,
        maxsize: int = 256,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        flow: FlowGate | None = None,
    ) -> None:
        self._items: deque[Any] = deque()
        self._maxsize = maxsize
        self._max_bytes = max_bytes
        self._bytes = 0
        self._flow = flow
        self._holding = False
        self._wakeup = asyncio.Event()
        self._done = False
        self._error: BaseException | None = None
        self._warned = False
        self._consumer: Consumer | None = None
        self.merged = 0

    @property
    def buffered_bytes(self) -> int:
        """About how many bytes of text are waiting to be read."""
        return self._bytes

    def deliver_to(self, consumer: Consumer | None) -> None:
        """Hand values to ``consumer`` as they arrive while nothing is buffered (``None``: stop).

        ``consumer(value)`` runs in the producer's step and returns whether
        it took the value; if not, the value is buffered for the iteration
        (and so is every value after it until the iteration has emptied
        the buffer): values reach the reader in order, whichever way each
        one goes. The consumer must not raise.
        """
        self._consumer = consumer

    async def wait_buffered(self) -> None:
        """Wait until a value is buffered or the stream has ended.

        For a consumer that takes values with :meth:`deliver_to` and must
        also hear of those it did not get (buffered before it was set) and
        of the end; cancelling it leaves the iteration as it was.
        """
        while not self._items and not self._done:
            self._wakeup.clear()
            await self._wakeup.wait()

    def on_next(self, value: T) -> None:
        items = self._items
        consumer = self._consumer
        if consumer is not None and not items and consumer(value):
            return
        size = _size(value)
        if len(items) >= self._maxsize or self._bytes + size > self._max_bytes:
            if self._flow is not None and not self._holding:
                self._holding = True
                self._flow.hold()
            if items and self._merge(items[-1], value):
                self._bytes += size - _OVERHEAD
                return
            if len(items) >= self._maxsize and not self._warned:
                self._warned = True
                log.warning("a slow consumer's buffer is full of unmergeable events; it grows")
        items.append(value)
        self._bytes += size
        self._wakeup.set()

    def _merge(self, tail: Any, value: Any) -> bool:
        if isinstance(tail, _Merging):
            if _merge_field(tail.last, value) != tail.field:
                return False
            tail.add(value)
        else:
            field = _merge_field(tail, value)
            if field is None:
                return False
            merging = _Merging(tail, field)
            merging.add(value)
            self._items[-1] = merging
        self.merged += 1
        return True

    def on_error(self, error: Exception) -> None:
        self._error = error
        self._done = True
        self._wakeup.set()

    def on_completed(self) -> None:
        self._done = True
        self._wakeup.set()

    def close(self) -> None:
        """The reader is gone: release the gate if it holds it."""
        if self._holding:
            self._holding = False
            assert self._flow is not None
            self._flow.release()

    def _pop(self) -> T:
        item = self._items.popleft()
        if isinstance(item, _Merging):
            item = item.event()
        self._bytes -= _size(item)
        if self._holding and self._bytes <= self._max_bytes // 2:
            self.close()
        result: T = item
        return result

    async def __aiter__(self) -> AsyncGenerator[T, None]:
        try:
            while True:
                while self._items:
                    yield self._pop()
                if self._done:
                    if self._error is not None:
                        raise self._error
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
        finally:
            self.close()


@operator
async def from_observable(source: Observable[T], maxsize: int = 256) -> AsyncIterator[T]:
    """Read an observable as an aiostream stream through a bounded buffer.

    Leaving the iteration (``break``, an exception, closing the stream)
    disposes the subscription.

    Example::

        async with from_observable(events).stream() as items:
            async for event in items:
                ...
    """
    buffer: BufferedObserver[T] = BufferedObserver(maxsize)
    subscription = source.subscribe(buffer)
    try:
        async for item in buffer:
            yield item
    finally:
        subscription.dispose()


def finally_call(items: AsyncIterator[T], callback: Callable[[], None]) -> AsyncIterator[T]:
    """Yield ``items``, then call ``callback`` however the reading ends.

    For a reader's bookkeeping (the server counts who reads a live stream):
    the callback runs when the items end, when the reader raises, and when
    the reader stops early and the generator is closed. A reader with
    ``deliver_to`` (:class:`BufferReader`, the hub's) keeps it: the
    result forwards it.
    """
    return _Finally(items, callback)


class _Finally(AsyncIterator[T]):
    """:func:`finally_call`'s reader: ``items``, then ``callback`` once, however it ends."""

    def __init__(self, items: AsyncIterator[T], callback: Callable[[], None]) -> None:
        self._items = items
        self._callback: Callable[[], None] | None = callback
        # The inner reader's, when it has one (see BufferedObserver.deliver_to).
        self.deliver_to: Callable[[Consumer | None], None] | None = getattr(
            items, "deliver_to", None
        )

    def __aiter__(self) -> _Finally[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await anext(self._items)
        except BaseException:
            self._done()
            raise

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._items, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._done()

    def _done(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


class BufferReader(_Finally[T]):
    """Reads a :class:`BufferedObserver` with ``async for``; ``on_close`` runs once at its end.

    The end is the buffer's (completed, or its error raised), or
    :meth:`aclose` (a reader that leaves early); ``on_close`` is what the
    owner undoes then (detaching the buffer from its stream), and the buffer
    is closed after it. Unlike an async generator, it can be read in several
    ``async for`` loops one after the other (a server reads the first
    events, then streams the rest), and its ``deliver_to`` and ``wait_buffered``
    are the buffer's.
    """

    def __init__(self, buffer: BufferedObserver[T], on_close: Callable[[], None]) -> None:
        def close() -> None:
            on_close()
            buffer.close()

        super().__init__(buffer.__aiter__(), close)
        self._buffer = buffer
        self.deliver_to = buffer.deliver_to
        self.wait_buffered = buffer.wait_buffered

    async def aclose(self) -> None:
        """Stop reading: the consumer is let go, the buffer closed (its gate released)."""
        self._buffer.deliver_to(None)
        await super().aclose()
