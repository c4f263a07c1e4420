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
from collections.abc import Callable

from reactivex import Observable, abc
from reactivex.scheduler import TimeoutScheduler

from pipeline.core.error_info import ErrorInfo, classify, scrub
from pipeline.core.events import (
    Event,
    StreamError,
    is_content,
    is_terminal,
)
from pipeline.core.ids import new_stream_id

__all__ = ["map_errors"]

log = logging.getLogger(__name__)


def map_errors(
    stream_id: str | None = None, *, scheduler: abc.SchedulerBase | None = None
) -> Callable[[Observable[Event]], Observable[Event]]:
    """Turn an upstream exception into a terminal :class:`StreamError` event, then complete.

    ``stream_id`` names the error event's stream when no event arrived before
    the failure (default: a new uuid). ``scheduler`` measures the event's
    ``t`` (seconds since subscription); default: the subscribe-time
    scheduler, else :class:`TimeoutScheduler`.
    """

    def _map_errors(source: Observable[Event]) -> Observable[Event]:
        def subscribe(
            observer: abc.ObserverBase[Event], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            _scheduler = scheduler or scheduler_ or TimeoutScheduler.singleton()
            started = _scheduler.now
            last: Event | None = None
            terminal: Event | None = None
            content = False
            warned = False

            def error_event(info: ErrorInfo) -> StreamError:
                sid = last.stream_id if last else stream_id or new_stream_id()
                return StreamError(
                    stream_id=sid,
                    seq=last.seq + 1 if last else 0,
                    t=(_scheduler.now - started).total_seconds(),
                    kind=info.kind,
                    message=info.message,
                    status=info.status,
                    code=info.code,
                    retryable=info.retryable,
                    after_first_token=content,
                    retry_after=info.retry_after,
                )

            def on_next(event: Event) -> None:
                nonlocal last, terminal, content, warned
                if terminal is not None:
                    if not warned:
                        warned = True
                        log.warning(
                            "stream %s: dropping %s event(s) after its terminal %s event",
                            terminal.stream_id,
                            event.type,
                            terminal.type,
                        )
                    return
                last = event
                content = content or is_content(event)
                if is_terminal(event):
                    terminal = event
                observer.on_next(event)

            def on_error(exc: Exception) -> None:
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
                    observer.on_next(error_event(info))
                observer.on_completed()

            def on_completed() -> None:
                if terminal is None:
                    message = "stream ended without a terminal event"
                    observer.on_next(error_event(ErrorInfo("connection", message, retryable=True)))
                observer.on_completed()

            return source.subscribe(on_next, on_error, on_completed, scheduler=scheduler_)

        return Observable(subscribe)

    return _map_errors
