"""The pieces the mock's wire formats share: frames, their SSE encoding, error bodies.

A :class:`Frame` is one server-sent event before encoding. ``token`` marks a
content-bearing frame (it counts toward "after N tokens" and waits the token
interval); ``check`` marks a point where a fault may strike.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

__all__ = [
    "ERROR_DEFAULTS",
    "Frame",
    "Meta",
    "StreamWriter",
    "dumps",
    "encode",
    "error_object",
    "malformed",
]


class Frame(NamedTuple):
    """One server-sent event: ``payload`` is its data (JSON text or ``[DONE]``)."""

    payload: str
    event: str | None = None
    token: bool = False
    check: bool = True


class StreamWriter(Protocol):
    """Makes the frames of one streamed answer in one API's wire format."""

    def frames(self) -> Iterator[Frame]:
        """Return an iterator of the answer's frames, in order."""

    def error(self, error: dict[str, Any]) -> Frame:
        """Return the frame that reports ``error`` mid-stream."""


@dataclass(frozen=True, slots=True)
class Meta:
    """Per-request facts the wire formats need: ids, model, clock, prompt size."""

    suffix: str
    model: str
    created: int
    prompt_tokens: int = 1
    include_usage: bool = False
    tools: list[Any] = field(default_factory=list)

    def id(self, prefix: str, *parts: int) -> str:
        """Return an id like ``chatcmpl-mock000001`` or ``call_mock000001_0_1``."""
        sep = "-" if prefix == "chatcmpl" else "_"
        return prefix + sep + "_".join([self.suffix, *map(str, parts)])


def dumps(obj: Any) -> str:
    """Serialize ``obj`` to compact JSON (one line: JSON escapes line breaks)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def encode(frame: Frame) -> bytes:
    """Encode a frame as ``event: <type>`` (if any) and ``data: <payload>`` lines."""
    head = f"event: {frame.event}\n" if frame.event else ""
    return f"{head}data: {frame.payload}\n\n".encode()


def malformed(frame: Frame) -> Frame:
    """Return ``frame`` with its payload cut in half: never valid JSON."""
    return frame._replace(payload=frame.payload[: max(1, len(frame.payload) // 2)])


# status: (type, code, message) as the OpenAI API sends them
ERROR_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", "invalid_request", "The request was invalid (mock)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (mock)."),
    403: ("invalid_request_error", "forbidden", "You are not allowed to do this (mock)."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist (mock)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached, try again later (mock)."),
    500: ("server_error", "server_error", "The server had an error processing the request (mock)."),
    503: ("server_error", "service_unavailable", "The server is overloaded, retry later (mock)."),
}


def error_object(
    status: int | None, message: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """Return an OpenAI-shaped error object (``message``, ``type``, ``param``, ``code``)."""
    default = ERROR_DEFAULTS.get(status or 500)
    if default is None:
        kind = "invalid_request_error" if status is not None and status < 500 else "server_error"
        default = (kind, None, f"The mock failed with status {status}.")
    kind, default_code, default_message = default
    return {
        "message": message or default_message,
        "type": kind,
        "param": None,
        "code": code or default_code,
    }
