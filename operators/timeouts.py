"""Timeouts: a stream that is too slow fails with :class:`StreamTimeoutError`.

Three independent limits, each ``None`` to switch it off:

* ``first_token`` -- no content event (a non-empty text, reasoning or
  refusal delta, a tool-call start or delta) within this many seconds of
  subscription;
* ``idle`` -- no event at all for this many seconds once the first content
  event has arrived (before it, ``first_token`` is the limit);
* ``total`` -- the stream has not ended this many seconds after subscription.

When a limit expires the upstream subscription is disposed first (which
cancels the HTTP request, so the upstream sees its connection close), then
``StreamTimeoutError(which, seconds)`` goes to ``on_error``. Place it before
:func:`operators.map_errors`, which turns that into a retryable ``error``
event of kind ``timeout``. A terminal event stops every timer.

With ``first_token`` = 3 frames (``s`` is ``started``, ``a`` content)::

    -s--------a-|
    -s--#             StreamTimeoutError("first_token", 3)

Example::

    source.pipe(extract_deltas(sid), timeouts(first_token=10, idle=30), map_errors(sid))

Errors: upstream errors pass through unchanged. ``ValueError`` at creation
if a limit is not a positive number.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import (
    CompositeDisposable,
    Disposable,
    SerialDisposable,
    SingleAssignmentDisposable,
)

from pipeline.core.errors import StreamTimeoutError
from pipeline.core.events import Event, is_content, is_terminal
from pipeline.core.scheduling import default_scheduler

__all__ = ["timeouts"]


def _check(name: str, value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")


def timeouts(
    first_token: float | None = None,
    idle: float | None = None,
    total: float | None = None,
    *,
    scheduler: abc.SchedulerBase | None = None,
) -> Callable[[Observable[Event]], Observable[Event]]:
    """Fail the stream with :class:`StreamTimeoutError` when a time limit expires.

    ``scheduler`` runs the timers; default: the subscribe-time scheduler,
    else an :class:`AsyncIOScheduler` on the running loop, else
    :class:`TimeoutScheduler`. With no limit given, the source is returned
    unchanged.
    """
    _check("first_token", first_token)
    _check("idle", idle)
    _check("total", total)

    def _timeouts(source: Observable[Event]) -> Observable[Event]:
        if first_token is None and idle is None and total is None:
            return source

        def subscribe(
            observer: abc.ObserverBase[Event], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            _scheduler = scheduler or scheduler_ or default_scheduler()
            lock = threading.RLock()
            upstream = SingleAssignmentDisposable()
            # One timer for first_token, then idle; one for total.
            timer = SerialDisposable()
            total_timer = SerialDisposable()
            content = False
            stopped = False
            # The idle timer is not re-armed per event (that would schedule a timer per
            # token): it fires ``idle`` after it was armed and re-arms itself for the rest
            # of the interval if an event arrived meanwhile.
            last_event = _scheduler.now
            idle_span = timedelta(seconds=idle) if idle is not None else timedelta(0)

            def expire(which: str, seconds: float) -> None:
                nonlocal stopped
                stopped = True
                timer.dispose()
                total_timer.dispose()
                upstream.dispose()  # cancels the request before anyone hears of the timeout
                observer.on_error(StreamTimeoutError(which, seconds))

            def on_first_token(_: abc.SchedulerBase, state: Any = None) -> None:
                with lock:
                    if not stopped and not content:
                        assert first_token is not None
                        expire("first_token", first_token)

            def on_idle(_: abc.SchedulerBase, state: Any = None) -> None:
                with lock:
                    if stopped:
                        return
                    assert idle is not None
                    quiet = _scheduler.now - last_event
                    if quiet >= idle_span:
                        expire("idle", idle)
                    else:
                        timer.disposable = _scheduler.schedule_relative(idle_span - quiet, on_idle)

            def on_total(_: abc.SchedulerBase, state: Any = None) -> None:
                with lock:
                    if not stopped:
                        assert total is not None
                        expire("total", total)

            def on_next(event: Event) -> None:
                nonlocal content, last_event
                with lock:
                    if stopped:
                        return
                    if content:
                        if idle is not None:
                            last_event = _scheduler.now
                    elif is_content(event):
                        content = True
                        if idle is not None:
                            last_event = _scheduler.now
                            timer.disposable = _scheduler.schedule_relative(idle_span, on_idle)
                        else:
                            timer.disposable = Disposable()
                    if is_terminal(event):
                        timer.dispose()
                        total_timer.dispose()
                    observer.on_next(event)

            def on_error(error: Exception) -> None:
                nonlocal stopped
                with lock:
                    if stopped:
                        return
                    stopped = True
                    timer.dispose()
                    total_timer.dispose()
                    observer.on_error(error)

            def on_completed() -> None:
                nonlocal stopped
                with lock:
                    if stopped:
                        return
                    stopped = True
                    timer.dispose()
                    total_timer.dispose()
                    observer.on_completed()

            def dispose() -> None:
                nonlocal stopped
                with lock:
                    stopped = True
                    timer.dispose()
                    total_timer.dispose()

            with lock:
                if first_token is not None:
                    timer.disposable = _scheduler.schedule_relative(first_token, on_first_token)
                if total is not None:
                    total_timer.disposable = _scheduler.schedule_relative(total, on_total)
            upstream.disposable = source.subscribe(
                on_next, on_error, on_completed, scheduler=scheduler_
            )
            return CompositeDisposable(upstream, Disposable(dispose))

        return Observable(subscribe)

    return _timeouts
