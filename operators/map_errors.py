"""Error-to-event mapping: an upstream exception becomes a terminal ``error`` event.

Every sink then sees a failure as data, and every stream ends with exactly one
terminal event: an error after a terminal event is only logged, events after
a terminal event are dropped, and a stream that completes without a terminal
event gets a retryable ``connection`` error.

    -started-text-#   becomes   -started-text-error|

Example::

    events = source.pipe(extract_deltas(sid), map_errors(sid))

Errors: none reach ``on_error``; :func:`pipeline.core.error_info.classify` says
how each exception becomes a :class:`pipeline.core.events.StreamError`. Messages are scrubbed of API
keys and ``Authorization`` values.
"""

from __future__ import annotations

import logging

from reactivex import abc
from reactivex.scheduler import TimeoutScheduler

from operators._fused import Fusable, Link, Stage, StageBase
from pipeline.core.error_info import ErrorInfo, classify, scrub
from pipeline.core.events import (
    Event,
    StreamError,
    is_content,
)
from pipeline.core.ids import new_stream_id

__all__ = ["map_errors"]

log = logging.getLogger(__name__)


class _MapErrors(StageBase):
    """One subscription of :func:`map_errors`."""

    __slots__ = (
        "content",
        "downstream",
        "last",
        "scheduler",
        "started",
        "stream_id",
        "terminal",
        "warned",
    )

    def __init__(
        self, downstream: Stage[Event], scheduler: abc.SchedulerBase, stream_id: str | None
    ) -> None:
        super().__init__()
        self.downstream = downstream
        self.scheduler = scheduler
        self.stream_id = stream_id
        self.started = scheduler.now
        self.last: Event | None = None
        self.terminal: Event | None = None
        self.content = False
        self.warned = False

    def error_event(self, info: ErrorInfo) -> StreamError:
        last = self.last
        sid = last.stream_id if last else self.stream_id or new_stream_id()
        return StreamError(
            stream_id=sid,
            seq=last.seq + 1 if last else 0,
            t=(self.scheduler.now - self.started).total_seconds(),
            kind=info.kind,
            message=info.message,
            status=info.status,
            code=info.code,
            retryable=info.retryable,
            after_first_token=self.content,
            retry_after=info.retry_after,
        )

    def on_next(self, event: Event) -> None:
        if self.stopped:
            return
        terminal = self.terminal
        if terminal is not None:
            if not self.warned:
                self.warned = True
                log.warning(
                    "stream %s: dropping %s event(s) after its terminal %s event",
                    terminal.stream_id,
                    event.type,
                    terminal.type,
                )
            return
        self.last = event
        if not self.content:
            self.content = is_content(event)
        if event.ends_stream:
            self.terminal = event
        self.downstream.on_next(event)

    def on_error(self, exc: Exception) -> None:
        if self.stopped:
            return
        self.stopped = True
        terminal = self.terminal
        if terminal is not None:
            log.debug(
                "stream %s: error after its terminal event ignored: %s",
                terminal.stream_id,
                scrub(repr(exc)),
            )
        else:
            info = classify(exc)
            if info.kind == "internal":
                log.warning("stream failed: %s", info.message, exc_info=exc)
            self.downstream.on_next(self.error_event(info))
        self.downstream.on_completed()

    def on_completed(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self.terminal is None:
            message = "stream ended without a terminal event"
            info = ErrorInfo("connection", message, retryable=True)
            self.downstream.on_next(self.error_event(info))
        self.downstream.on_completed()


class _MapErrorsOperator(Fusable[Event, Event]):
    name = "map_errors"

    def __init__(self, stream_id: str | None, scheduler: abc.SchedulerBase | None) -> None:
        self.stream_id = stream_id
        self.scheduler = scheduler

    def stage(self, downstream: Stage[Event], link: Link) -> _MapErrors:
        scheduler = self.scheduler or link.scheduler or TimeoutScheduler.singleton()
        return _MapErrors(downstream, scheduler, self.stream_id)


def map_errors(
    stream_id: str | None = None, *, scheduler: abc.SchedulerBase | None = None
) -> Fusable[Event, Event]:
    """Turn an upstream exception into a terminal :class:`StreamError` event, then complete.

    ``stream_id`` names the error event's stream when no event arrived before
    the failure (default: a new uuid). ``scheduler`` measures the event's
    ``t`` (seconds since subscription); default: the subscribe-time
    scheduler, else :class:`TimeoutScheduler`.
    """
    return _MapErrorsOperator(stream_id, scheduler)
