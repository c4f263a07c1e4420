"""Throttled flush batching: events in, lists of events out, one list per transport write.

Every event up to and including the first content event (a non-empty text,
reasoning or refusal delta, or a tool-call start or delta) goes out at once
as a one-element batch, so time to first token never waits for a timer.
After it, events are buffered; the buffer goes out ``interval`` seconds after
its first event arrived, or as soon as it holds ``max_batch`` events. A
terminal event, ``on_error`` and ``on_completed`` flush at once. Nothing is
dropped or reordered. One timer at most, none while idle.

With ``interval`` = 3 frames (``F`` is the terminal ``finished`` event)::

    -s-a-b-c-----d-F-|
    -s-a----x------y-|    s = [s], a = [a], x = [b, c], y = [d, F]

Example::

    events.pipe(batch_flush(0.05)).subscribe(lambda batch: send(batch))

Errors: an upstream error goes to ``on_error`` after the buffered events are
flushed. ``ValueError`` at creation if ``interval`` < 0 or ``max_batch`` < 1.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SerialDisposable

from pipeline.core.events import (
    Event,
    is_content,
    is_terminal,
)
from pipeline.core.scheduling import default_scheduler

__all__ = ["batch_flush"]


def batch_flush(
    interval: float = 0.05, max_batch: int = 64, *, scheduler: abc.SchedulerBase | None = None
) -> Callable[[Observable[Event]], Observable[list[Event]]]:
    """Batch events for a transport: first token at once, later ones per ``interval``.

    ``scheduler`` runs the flush timer; default: the subscribe-time scheduler,
    else an :class:`AsyncIOScheduler` on the running loop, else
    :class:`TimeoutScheduler` (unlike reactivex's own time operators, which
    go straight to ``TimeoutScheduler``: a sink on an event loop should not
    be called from a timer thread).
    """
    if interval < 0:
        raise ValueError(f"interval must be >= 0 seconds, got {interval!r}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch!r}")

    def _batch_flush(source: Observable[Event]) -> Observable[list[Event]]:
        def subscribe(
            observer: abc.ObserverBase[list[Event]], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            _scheduler = scheduler or scheduler_ or default_scheduler()
            lock = threading.RLock()
            timer = SerialDisposable()
            buffer: list[Event] = []
            generation = 0  # which buffer the pending timer belongs to
            immediate = True  # until the first content event has gone out
            stopped = False

            def flush() -> None:
                # Called with the lock held: emitting under it keeps batches in order
                # when a timer fires on another thread.
                nonlocal buffer, generation
                generation += 1
                timer.disposable = Disposable()
                if buffer:
                    batch, buffer = buffer, []
                    observer.on_next(batch)

            def on_timer(_: abc.SchedulerBase, state: Any = None) -> None:
                with lock:
                    if not stopped and state == generation:
                        flush()

            def on_next(event: Event) -> None:
                nonlocal immediate
                with lock:
                    if stopped:
                        return
                    if immediate:
                        immediate = not is_content(event)
                        observer.on_next([event])
                        return
                    buffer.append(event)
                    if len(buffer) >= max_batch or is_terminal(event):
                        flush()
                    elif len(buffer) == 1:
                        timer.disposable = _scheduler.schedule_relative(
                            interval, on_timer, generation
                        )

            def on_error(error: Exception) -> None:
                nonlocal stopped
                with lock:
                    if stopped:
                        return
                    flush()
                    stopped = True
                    observer.on_error(error)

            def on_completed() -> None:
                nonlocal stopped
                with lock:
                    if stopped:
                        return
                    flush()
                    stopped = True
                    observer.on_completed()

            def dispose() -> None:
                nonlocal stopped
                with lock:
                    stopped = True
                    timer.dispose()

            subscription = source.subscribe(on_next, on_error, on_completed, scheduler=scheduler_)
            return CompositeDisposable(subscription, Disposable(dispose))

        return Observable(subscribe)

    return _batch_flush
