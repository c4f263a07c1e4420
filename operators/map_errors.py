"""Error-to-event mapping: an upstream exception becomes a terminal ``error`` event.

Every sink then sees a failure as data, and every stream ends with exactly one
terminal event: an error after a terminal event is only logged, events after
a terminal event are dropped, and a stream that completes without a terminal
event gets a retryable ``connection`` error.

    -started-text-#   becomes   -started-text-error|

Example::

    events = source.pipe(extract_deltas(sid), map_errors(sid))

Errors: none reach ``on_error``; see :func:`classify` for how each exception
becomes a :class:`pipeline.core.events.StreamError`. Messages are scrubbed of API
keys and ``Authorization`` values.
"""

from __future__ import annotations

import email.utils
import importlib
import logging
import math
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple
from weakref import WeakSet

import openai
from reactivex import Observable, abc
from reactivex.scheduler import TimeoutScheduler

from pipeline.core.errors import (
    MalformedChunkError,
    StreamTimeoutError,
    UpstreamError,
    UpstreamStreamError,
)
from pipeline.core.events import (
    ErrorKind,
    Event,
    StreamError,
    is_content,
    is_terminal,
)

__all__ = [
    "ErrorInfo",
    "classify",
    "is_error_mapped",
    "map_errors",
    "mark_error_mapped",
    "scrub",
]

log = logging.getLogger(__name__)

_MAX_MESSAGE = 1000
_SECRETS = [
    # sk-..., sk-proj-...: OpenAI-style keys anywhere in the text
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"), "sk-***"),
    # Authorization: Bearer <token>
    (re.compile(r"(?i)\b(bearer)\s+[^\s\"',;]+"), r"\1 ***"),
    # authorization=..., api-key: ..., "x-api-key": "..."
    (
        re.compile(
            r"(?i)\b(authorization|api[-_]?key)(['\"]?\s*[:=]\s*['\"]?)(?!bearer\b)[^\s\"',;&]+"
        ),
        r"\1\2***",
    ),
    # ?key=... in a URL
    (re.compile(r"(?i)([?&](?:key|access_token|token)=)[^&\s\"']+"), r"\1***"),
]


def _http_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """The timeout and transport exception classes of httpx2 (used by openai) and httpx."""
    timeouts: list[type[Exception]] = []
    transports: list[type[Exception]] = []
    for name in ("httpx2", "httpx"):
        try:
            module: Any = importlib.import_module(name)
        except ImportError:
            continue
        timeouts.append(module.TimeoutException)
        transports.append(module.TransportError)
    return tuple(timeouts), tuple(transports)


_TIMEOUTS, _TRANSPORTS = _http_errors()


class ErrorInfo(NamedTuple):
    """How an exception is reported: the fields of a :class:`StreamError`."""

    kind: ErrorKind
    message: str
    status: int | None = None
    code: str | None = None
    retryable: bool = False
    retry_after: float | None = None  # seconds the upstream asked to wait (Retry-After)


def scrub(message: str) -> str:
    """Remove API keys and authorization values from ``message``; cap its length."""
    for pattern, replacement in _SECRETS:
        message = pattern.sub(replacement, message)
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "..."
    return message


def _body_error(body: object) -> dict[str, Any]:
    """The error object of an API error body: ``{"error": {...}}`` or the object itself."""
    if isinstance(body, dict):
        inner = body.get("error")
        return inner if isinstance(inner, dict) else body
    return {}


def _status_info(exc: openai.APIStatusError) -> ErrorInfo:
    status = exc.status_code
    error = _body_error(exc.body)
    code = error.get("code", exc.code)
    detail = error.get("message")
    message = detail if isinstance(detail, str) and detail else exc.message
    retryable = status in (408, 409, 429) or status >= 500
    return ErrorInfo(
        "http",
        f"HTTP {status} from the upstream: {message}",
        status,
        None if code is None else str(code),
        retryable,
        _retry_after(exc.response.headers),
    )


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            value = float(ms) / 1000
            return value if math.isfinite(value) and value >= 0 else None
        raw = headers.get("retry-after")
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            when = email.utils.parsedate_to_datetime(raw)
            value = max(0.0, when.timestamp() - time.time())
        return value if math.isfinite(value) and value >= 0 else None
    except (AttributeError, TypeError, ValueError, OverflowError):
        return None


def _upstream_info(exc: UpstreamStreamError | openai.APIError) -> ErrorInfo:
    if isinstance(exc, UpstreamStreamError):
        status, code = exc.status, exc.code
    else:
        status, code = None, exc.code
    retryable = status is not None and (status == 429 or status >= 500)
    # The upstream's own words, unchanged: the kind already says where they came from.
    message = exc.message or "the upstream sent an error without a message"
    return ErrorInfo("upstream", message, status, code, retryable)


def classify(exc: BaseException) -> ErrorInfo:
    """Say what kind of failure ``exc`` is, whether it is retryable, and why (scrubbed).

    ``openai.APITimeoutError`` is a subclass of ``APIConnectionError`` and the
    httpx timeouts are ``TransportError`` subclasses: timeouts are tested first.
    """
    info: ErrorInfo
    if isinstance(exc, openai.APIStatusError):
        info = _status_info(exc)
    elif isinstance(exc, openai.APITimeoutError):
        info = ErrorInfo("timeout", "the request to the upstream timed out", retryable=True)
    elif isinstance(exc, openai.APIConnectionError):
        cause = f" ({type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ else ""
        info = ErrorInfo("connection", f"{exc.message}{cause}", retryable=True)
    elif isinstance(exc, openai.APIResponseValidationError):
        info = ErrorInfo("malformed", f"the upstream's response is invalid: {exc.message}")
    elif isinstance(exc, openai.APIError | UpstreamStreamError):  # an error payload mid-stream
        info = _upstream_info(exc)
    elif isinstance(exc, MalformedChunkError):
        info = ErrorInfo("malformed", str(exc))
    elif isinstance(exc, UpstreamError):  # e.g. the stream ended before any data
        info = ErrorInfo("connection", str(exc), retryable=True)
    elif isinstance(exc, StreamTimeoutError):
        info = ErrorInfo("timeout", str(exc), retryable=True)
    elif isinstance(exc, (*_TIMEOUTS, TimeoutError)):
        info = ErrorInfo("timeout", f"{type(exc).__name__}: {exc}", retryable=True)
    elif isinstance(exc, (*_TRANSPORTS, OSError)):
        info = ErrorInfo("connection", f"{type(exc).__name__}: {exc}", retryable=True)
    else:
        info = ErrorInfo("internal", f"{type(exc).__name__}: {exc}")
    return info._replace(message=scrub(info.message))


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
                sid = last.stream_id if last else stream_id or uuid.uuid4().hex
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

        mapped: Observable[Event] = Observable(subscribe)
        _MAPPED.add(mapped)
        return mapped

    return _map_errors


_MAPPED: WeakSet[Observable[Any]] = WeakSet()


def is_error_mapped(events: Observable[Any]) -> bool:
    """Whether ``events`` is the output of :func:`map_errors`.

    Such a stream already ends with exactly one terminal event and nothing
    after it, so applying :func:`map_errors` again would change nothing;
    :class:`pipeline.runtime.multicast.StreamRun` uses this to skip the second layer.
    """
    return events in _MAPPED


def mark_error_mapped(events: Observable[Any]) -> None:
    """Declare that ``events`` keeps :func:`map_errors`' promise without being its output.

    For a source built only from ``map_errors`` outputs that keeps their
    promise itself (:func:`pipeline.runtime.failover.failover`: every event of an
    attempt comes through ``llm_stream``, the failover ends with one terminal
    event, never calls ``on_error`` and sends nothing after the end).
    """
    _MAPPED.add(events)
