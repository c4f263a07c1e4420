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
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import Disposable, SerialDisposable
from reactivex.scheduler.scheduler import Scheduler

from operators._fused import Fusable, Link, Stage, StageBase
from pipeline.core.errors import StreamTimeoutError
from pipeline.core.events import Event, is_content
from pipeline.core.scheduling import default_scheduler

__all__ = ["timeouts"]


def _check(name: str, value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")


class _Timeouts(StageBase):
    """One subscription of :func:`timeouts`: its timers and what it has seen."""

    __slots__ = (
        "clock",
        "content",
        "downstream",
        "first_token",
        "idle",
        "idle_span",
        "last_event",
        "lock",
        "scheduler",
        "timer",
        "total",
        "total_timer",
        "upstream",
    )

    def __init__(
        self,
        downstream: Stage[Event],
        link: Link,
        scheduler: abc.SchedulerBase,
        first_token: float | None,
        idle: float | None,
        total: float | None,
    ) -> None:
        super().__init__()
        self.downstream = downstream
        self.upstream = link.upstream
        self.scheduler = scheduler
        # The scheduler's time, read at every event with an idle limit: reactivex's own
        # clock (Scheduler.now: datetime.now(UTC)) is called directly, without the
        # property's two Python frames; a scheduler with a clock of its own is asked.
        self.clock: Callable[[], datetime] = (
            partial(datetime.now, UTC)
            if type(scheduler).now is Scheduler.now
            else partial(getattr, scheduler, "now")
        )
        self.first_token = first_token
        self.idle = idle
        self.total = total
        self.lock = threading.RLock()
        # One timer for first_token, then idle; one for total.
        self.timer = SerialDisposable()
        self.total_timer = SerialDisposable()
        self.content = False
        # The idle timer is not re-armed per event (that would schedule a timer per
        # token): it fires ``idle`` after it was armed and re-arms itself for the rest
        # of the interval if an event arrived meanwhile.
        self.last_event = self.clock()
        self.idle_span = timedelta(seconds=idle) if idle is not None else timedelta(0)
        link.on_dispose(Disposable(self.dispose))
        with self.lock:
            if first_token is not None:
                self.timer.disposable = scheduler.schedule_relative(
                    first_token, self.on_first_token
                )
            if total is not None:
                self.total_timer.disposable = scheduler.schedule_relative(total, self.on_total)

    def _cancel_timers(self) -> None:
        self.timer.dispose()
        self.total_timer.dispose()

    def expire(self, which: str, seconds: float) -> None:
        self.stopped = True
        self._cancel_timers()
        self.upstream.dispose()  # cancels the request before anyone hears of the timeout
        self.downstream.on_error(StreamTimeoutError(which, seconds))

    def on_first_token(self, _: abc.SchedulerBase, state: Any = None) -> None:
        with self.lock:
            if not self.stopped and not self.content:
                assert self.first_token is not None
                self.expire("first_token", self.first_token)

    def on_idle(self, _: abc.SchedulerBase, state: Any = None) -> None:
        with self.lock:
            if self.stopped:
                return
            assert self.idle is not None
            quiet = self.clock() - self.last_event
            if quiet >= self.idle_span:
                self.expire("idle", self.idle)
            else:
                self.timer.disposable = self.scheduler.schedule_relative(
                    self.idle_span - quiet, self.on_idle
                )

    def on_total(self, _: abc.SchedulerBase, state: Any = None) -> None:
        with self.lock:
            if not self.stopped:
                assert self.total is not None
                self.expire("total", self.total)

    def on_next(self, event: Event) -> None:
        with self.lock:
            if self.stopped:
                return
            if self.content:
                if self.idle is not None:
                    self.last_event = self.clock()
            elif is_content(event):
                self.content = True
                if self.idle is not None:
                    self.last_event = self.clock()
                    self.timer.disposable = self.scheduler.schedule_relative(
                        self.idle_span, self.on_idle
                    )
                else:
                    self.timer.disposable = Disposable()
            if event.ends_stream:
                self._cancel_timers()
            self.downstream.on_next(event)

    def on_error(self, error: Exception) -> None:
        with self.lock:
            if self.stopped:
                return
            self.stopped = True
            self._cancel_timers()
            self.downstream.on_error(error)

    def on_completed(self) -> None:
        with self.lock:
            if self.stopped:
                return
            self.stopped = True
            self._cancel_timers()
            self.downstream.on_completed()

    def dispose(self) -> None:
        with self.lock:
            self.stopped = True
            self._cancel_timers()


class _TimeoutsOperator(Fusable[Event, Event]):
    name = "timeouts"

    def __init__(
        self,
        first_token: float | None,
        idle: float | None,
        total: float | None,
        scheduler: abc.SchedulerBase | None,
    ) -> None:
        self.first_token = first_token
        self.idle = idle
        self.total = total
        self.scheduler = scheduler

    def stage(self, downstream: Stage[Event], link: Link) -> _Timeouts:
        scheduler = self.scheduler or link.scheduler or default_scheduler()
        return _Timeouts(downstream, link, scheduler, self.first_token, self.idle, self.total)

    def __call__(self, source: Observable[Event]) -> Observable[Event]:
        if self.first_token is None and self.idle is None and self.total is None:
            return source
        return super().__call__(source)


def timeouts(
    first_token: float | None = None,
    idle: float | None = None,
    total: float | None = None,
    *,
    scheduler: abc.SchedulerBase | None = None,
) -> Fusable[Event, Event]:
    """Fail the stream with :class:`StreamTimeoutError` when a time limit expires.

    ``scheduler`` runs the timers; default: the subscribe-time scheduler,
    else an :class:`AsyncIOScheduler` on the running loop, else
    :class:`TimeoutScheduler`. With no limit given, the source is returned
    unchanged.
    """
    _check("first_token", first_token)
    _check("idle", idle)
    _check("total", total)
    return _TimeoutsOperator(first_token, idle, total, scheduler)
