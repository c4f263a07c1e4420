"""Bridges between observables and async iterators (aiostream streams).

* :func:`from_async_iterable` -- an async iterable becomes a cold observable:
  each subscription starts a task on the running event loop that reads it;
  disposing the subscription cancels the task, and the iterator is closed
  (``aclose``) on the way out.
* :func:`from_observable` -- an observable becomes an aiostream stream
  (``async for``, ``|`` pipes), read through a bounded buffer
  (:class:`BufferedObserver`). Leaving the iteration disposes the
  subscription, which cancels the upstream request.

reactivex has no backpressure: when the consumer is slower than the producer
the buffer fills. A full buffer never blocks the producer and never drops an
event: adjacent text, reasoning, refusal and tool-argument deltas are merged
(the merged event keeps the sequence number of its last part), and only if
nothing can be merged does the buffer grow past its bound, with a warning.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any, TypeVar

from aiostream import operator, streamcontext
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from pipeline.core.events import ReasoningDelta, RefusalDelta, TextDelta, ToolCallDelta

__all__ = ["BufferedObserver", "from_async_iterable", "from_observable", "merge_deltas"]

T = TypeVar("T")
log = logging.getLogger(__name__)


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


class BufferedObserver(abc.ObserverBase[T]):
    """An observer that buffers what it receives for an async reader.

    ``maxsize`` bounds the buffer; see the module docstring for what happens
    when it is full. Iterate it with ``async for`` (once).
    """

    def __init__(self, maxsize: int = 256) -> None:
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._wakeup = asyncio.Event()
        self._done = False
        self._error: BaseException | None = None
        self._warned = False
        self.merged = 0

    def on_next(self, value: T) -> None:
        if len(self._items) >= self._maxsize:
            self._compact()
        self._items.append(value)
        self._wakeup.set()

    def on_error(self, error: Exception) -> None:
        self._error = error
        self._done = True
        self._wakeup.set()

    def on_completed(self) -> None:
        self._done = True
        self._wakeup.set()

    def _compact(self) -> None:
        out: deque[T] = deque()
        for item in self._items:
            merged = merge_deltas(out[-1], item) if out else None
            if merged is None:
                out.append(item)
            else:
                out[-1] = merged
                self.merged += 1
        self._items = out
        if len(out) >= self._maxsize and not self._warned:
            self._warned = True
            log.warning("a slow consumer's buffer is full of unmergeable events; it grows")

    async def __aiter__(self) -> AsyncIterator[T]:
        while True:
            while self._items:
                yield self._items.popleft()
            if self._done:
                if self._error is not None:
                    raise self._error
                return
            self._wakeup.clear()
            await self._wakeup.wait()


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
