"""Exceptions raised inside a pipeline.

The tree::

    RxllmError
    ├── UpstreamError            the upstream failed
    │   ├── UpstreamStreamError  an error payload arrived mid-stream (``event: error``
    │   │                        or a top-level ``error`` object in a chunk)
    │   └── MalformedChunkError  a chunk could not be parsed or understood
    ├── StreamTimeoutError       a first-token, idle or total timeout expired
    ├── UntranslatableError      (runtime.translate) a request field another API cannot carry
    ├── ResumeGapError           (runtime.stream_hub) a resume asked for events no longer kept
    ├── StreamNotFoundError      (runtime.stream_hub) no stream with that id in this process
    ├── RecordingError           (runtime.replay) a recording file has a bad line
    └── NoKeyAvailable           (runtime.key_pool) every key is cooling down or removed

Exceptions of the ``openai`` SDK (``APIStatusError``, ``APIConnectionError``,
``APITimeoutError``) pass through unchanged; the error-to-event operator
(:func:`operators.map_errors`) turns any of them into a
:class:`pipeline.core.events.StreamError` event.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MalformedChunkError",
    "RxllmError",
    "StreamTimeoutError",
    "UntranslatableError",
    "UpstreamError",
    "UpstreamStreamError",
]


class RxllmError(Exception):
    """Base class of every exception rxllm raises."""


class UpstreamError(RxllmError):
    """The upstream failed."""


class UpstreamStreamError(UpstreamError):
    """The upstream sent an error payload in the middle of the stream.

    ``payload`` is the provider's error object as sent (message, type, code...).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.payload = payload or {}


class MalformedChunkError(UpstreamError):
    """A chunk of the stream could not be parsed; ``raw`` keeps what arrived."""

    def __init__(self, message: str, raw: str) -> None:
        super().__init__(f"{message}: {raw[:200]!r}")
        self.raw = raw


class StreamTimeoutError(RxllmError):
    """A timeout expired; ``which`` is ``first_token``, ``idle`` or ``total``."""

    def __init__(self, which: str, seconds: float) -> None:
        super().__init__(f"{which} timeout of {seconds:g}s expired")
        self.which = which
        self.seconds = seconds


class UntranslatableError(RxllmError, ValueError):
    """A request field cannot be carried into another API; ``field`` names it (``tools[2]``).

    Raised before any upstream call, so a server answers it with a 400 naming the field.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"'{field}' {reason}")
        self.field = field
        self.reason = reason
