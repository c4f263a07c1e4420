"""Error classification: how any exception of a stream is reported as a ``StreamError``.

:func:`classify` maps an exception (the ``openai`` and ``anthropic`` SDKs' HTTP errors, httpx
timeouts and transport errors, rxllm's own :mod:`pipeline.core.errors`) to an
:class:`ErrorInfo`: the kind, a scrubbed message, the HTTP status and code,
whether a retry may help, and how long the upstream asked to wait. The
error-to-event operator, the runner and failover all classify through it.
"""

from __future__ import annotations

import email.utils
import importlib
import math
import time
from typing import Any, NamedTuple

import openai

from pipeline.core.errors import (
    MalformedChunkError,
    StreamTimeoutError,
    UpstreamError,
    UpstreamStreamError,
)
from pipeline.core.events import ErrorKind
from pipeline.core.redaction import redact_text

__all__ = ["ErrorInfo", "classify", "scrub"]

_MAX_MESSAGE = 1000


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


def _anthropic_errors() -> tuple[type[Exception], type[Exception], type[Exception]] | None:
    """The ``anthropic`` SDK's status, timeout and connection errors (None: not installed)."""
    try:
        module: Any = importlib.import_module("anthropic")
    except ImportError:  # pragma: no cover - a dependency, but only Anthropic upstreams need it
        return None
    return module.APIStatusError, module.APITimeoutError, module.APIConnectionError


_ANTHROPIC = _anthropic_errors()


class ErrorInfo(NamedTuple):
    """How an exception is reported: the fields of a :class:`StreamError`."""

    kind: ErrorKind
    message: str
    status: int | None = None
    code: str | None = None
    retryable: bool = False
    retry_after: float | None = None  # seconds the upstream asked to wait (Retry-After)


def scrub(message: str) -> str:
    """``message`` with its secrets masked (:func:`pipeline.core.redaction.redact_text`), capped."""
    message = redact_text(message)
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "..."
    return message


def _body_error(body: object) -> dict[str, Any]:
    """The error object of an API error body: ``{"error": {...}}`` or the object itself."""
    if isinstance(body, dict):
        inner = body.get("error")
        return inner if isinstance(inner, dict) else body
    return {}


def _status_info(exc: Any) -> ErrorInfo:
    """An HTTP error status of either SDK (Anthropic's bodies name a ``type``, not a ``code``)."""
    status = exc.status_code
    error = _body_error(exc.body)
    code = error.get("code", getattr(exc, "code", None))
    kind = error.get("type")
    if "code" not in error and isinstance(kind, str) and kind.endswith("_error"):
        code = kind  # overloaded_error, rate_limit_error...
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
    elif _ANTHROPIC is not None and isinstance(exc, _ANTHROPIC):
        if isinstance(exc, _ANTHROPIC[0]):
            info = _status_info(exc)
        elif isinstance(exc, _ANTHROPIC[1]):
            info = ErrorInfo("timeout", "the request to the upstream timed out", retryable=True)
        else:
            cause = f" ({type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ else ""
            info = ErrorInfo("connection", f"{exc}{cause}", retryable=True)
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
