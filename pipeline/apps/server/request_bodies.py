"""Reading and validating request bodies: every mistake is a clear 4xx JSON error."""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from pipeline.apps.server.api_errors import ApiError
from pipeline.apps.server.ui_messages import ui_to_chat_messages
from pipeline.core.redaction import is_secret_name

__all__ = [
    "TIMEOUT_HEADERS",
    "ChatRequest",
    "MessagesRequest",
    "ResponsesRequest",
    "UIChatRequest",
    "continue_header",
    "header_timeouts",
    "read_json",
    "to_openai_messages",
    "validate",
]

M = TypeVar("M", bound=BaseModel)


class ChatRequest(BaseModel):
    """A Chat Completions request: the fields rxllm reads; the rest pass through."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    tools: list[dict[str, Any]] | None = None

    def upstream_params(self) -> dict[str, Any]:
        """The parameters to send upstream (secrets dropped, ``stream`` set by the source)."""
        params = self.model_dump(exclude={"stream"}, exclude_none=True)
        return {name: value for name, value in params.items() if not is_secret_name(name)}


class ResponsesRequest(ChatRequest):
    """A Responses API request: the fields rxllm reads; the rest pass through."""

    messages: list[dict[str, Any]] | None = None  # type: ignore[assignment]
    input: str | list[Any]


class MessagesRequest(ChatRequest):
    """An Anthropic Messages request: the fields rxllm reads; the rest pass through."""

    max_tokens: int = Field(ge=1)


class UIChatRequest(BaseModel):
    """A Vercel AI SDK ``useChat`` request: UI messages with ``parts``."""

    model_config = ConfigDict(extra="allow")

    messages: list[dict[str, Any]] = Field(min_length=1)
    model: str | None = None


async def read_json(request: Request, max_body: int) -> dict[str, Any]:
    """Read a JSON object body of at most ``max_body`` bytes."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_body:
        raise ApiError(413, f"request body is larger than {max_body} bytes", code="body_too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise ApiError(
                413, f"request body is larger than {max_body} bytes", code="body_too_large"
            )
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    return body


def continue_header(request: Request) -> bool | None:
    """``x-rxllm-continue: true | false``: continuation after the first token, this request.

    ``None`` when absent (as configured); anything else is a 400.
    """
    value = request.headers.get("x-rxllm-continue")
    if value is None:
        return None
    flag = value.strip().lower()
    if flag not in ("true", "false", "1", "0"):
        raise ApiError(400, "x-rxllm-continue must be true or false", param="x-rxllm-continue")
    return flag in ("true", "1")


TIMEOUT_HEADERS = {
    "x-rxllm-first-token-timeout": "first_token_timeout",
    "x-rxllm-idle-timeout": "idle_timeout",
    "x-rxllm-total-timeout": "total_timeout",
}
"""The request headers that set a request's upstream timeouts (seconds), by timeout."""


def header_timeouts(request: Request) -> dict[str, float]:
    """This request's timeouts (seconds) from its ``x-rxllm-*-timeout`` headers.

    Errors: a 400 naming the header for a value that is not a positive,
    finite number of seconds.
    """
    timeouts: dict[str, float] = {}
    for header, name in TIMEOUT_HEADERS.items():
        value = request.headers.get(header)
        if value is not None:
            try:
                seconds = float(value)
            except ValueError:
                seconds = -1.0
            if not (seconds > 0 and math.isfinite(seconds)):
                raise ApiError(
                    400, f"{header} must be a positive, finite number of seconds", param=header
                )
            timeouts[name] = seconds
    return timeouts


def validate(model: type[M], body: dict[str, Any]) -> M:
    """Validate ``body``; the first problem becomes a 400 naming the field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        if first["type"] == "missing":
            message = f"missing required field '{param}'"
        else:
            message = f"invalid field '{param}': {first['msg']}"
        raise ApiError(400, message, param=param, code="invalid_request") from None


def to_openai_messages(ui_messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Convert AI SDK UI messages (``parts``) or plain ``content`` messages to OpenAI ones.

    As the AI SDK's ``convertToModelMessages`` and its OpenAI provider do:
    see :mod:`pipeline.apps.server.ui_messages`.
    """
    return ui_to_chat_messages(ui_messages)
