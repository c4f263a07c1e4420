"""Reading and validating request bodies: every mistake is a clear 4xx JSON error.

Decided here, before any upstream call, so that a client's mistake is never
answered as an upstream failure (a 502 a client would retry):

* the body: at most ``max_body`` bytes, read within ``timeout`` seconds (408),
  JSON without ``NaN``/``Infinity`` (not JSON), nested at most
  :data:`MAX_DEPTH` levels, with no lone UTF-16 surrogate (it cannot be
  encoded to send on);
* a Chat Completions request (:func:`check_chat_request`): ``stream`` a real
  boolean (``"yes"`` is not ``true``), ``tools`` as the tool-call assembly
  will read them (a name, a valid JSON schema), ``extra_body`` an object;
  ``timeout`` and ``extra_query`` -- request options of the OpenAI SDK that
  set the gateway's own upstream timeout and the upstream URL's query -- are
  refused unless the operator allows them (``--allow-request-options``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from operators.assemble_tool_calls import check_tools
from pipeline.apps.server.api_errors import ApiError
from pipeline.apps.server.ui_messages import ui_to_chat_messages
from pipeline.core.redaction import is_secret_name

__all__ = [
    "MAX_DEPTH",
    "REQUEST_OPTIONS",
    "TIMEOUT_HEADERS",
    "ChatRequest",
    "MessagesRequest",
    "ResponsesRequest",
    "UIChatRequest",
    "check_chat_request",
    "continue_header",
    "header_timeouts",
    "parse_json",
    "read_json",
    "to_openai_messages",
    "validate",
]

log = logging.getLogger(__name__)

MAX_DEPTH = 64
"""How deeply a request body's arrays and objects may nest."""

REQUEST_OPTIONS = ("timeout", "extra_query")
"""Body fields the OpenAI SDK reads as request options of the gateway's own upstream call."""

_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")

M = TypeVar("M", bound=BaseModel)


class ChatRequest(BaseModel):
    """A Chat Completions request: the fields rxllm reads; the rest pass through."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = Field(default=False, strict=True)
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


async def read_json(
    request: Request,
    max_body: int,
    *,
    read_timeout: float | None = None,
    on_timeout: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Read a JSON object body of at most ``max_body`` bytes within ``read_timeout`` seconds.

    ``on_timeout`` is called (to count it) before the 408 for a body that
    did not arrive in time.
    """
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_body:
        raise ApiError(413, f"request body is larger than {max_body} bytes", code="body_too_large")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(read_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_body:
                    raise ApiError(
                        413, f"request body is larger than {max_body} bytes", code="body_too_large"
                    )
                chunks.append(chunk)
    except TimeoutError:
        client = request.client
        log.warning(
            "request body from %s not received within %gs (%d bytes so far): 408",
            f"{client.host}:{client.port}" if client else "?",
            read_timeout,
            size,
        )
        if on_timeout is not None:
            on_timeout()
        raise ApiError(
            408, f"the request body did not arrive within {read_timeout:g}s", code="body_timeout"
        ) from None
    return parse_json(b"".join(chunks))


def _not_json(name: str) -> Any:
    raise ApiError(
        400,
        f"request body is not valid JSON: {name} is not a JSON number",
        code="invalid_json",
    )


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: a JSON number, but no float holds it
        raise ApiError(
            400,
            f"request body is not valid JSON: the number {text[:40]} is too large",
            code="invalid_json",
        )
    return value


def parse_json(raw: bytes) -> dict[str, Any]:
    """Parse a request body: a JSON object, no ``NaN``, not too deep, no lone surrogate."""
    try:
        body = json.loads(raw, parse_constant=_not_json, parse_float=_finite)
    except RecursionError:
        body = None
        deep = True
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    else:
        # Counting brackets is cheap; the walk runs only when they could nest that deep.
        deep = raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _too_deep(body, MAX_DEPTH)
    if deep:
        raise ApiError(
            400,
            f"request body is nested more than {MAX_DEPTH} levels deep",
            code="invalid_json",
        )
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    if _SURROGATE_ESCAPE.search(raw):  # a \ud800 escape: paired ones became one character
        try:
            json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise ApiError(
                400,
                "request body holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape "
                "without its pair), which is not text",
                code="invalid_json",
            ) from None
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


def _too_deep(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def check_chat_request(req: ChatRequest, *, allow_request_options: bool = False) -> None:
    """Check what :func:`validate` cannot: tools, request options; a 400 naming the field."""
    if req.tools is not None:
        try:
            check_tools(req.tools)
        except (TypeError, ValueError) as exc:
            raise ApiError(400, f"invalid field 'tools': {exc}", param="tools") from None
    extra = req.model_extra or {}
    if "extra_body" in extra and not isinstance(extra["extra_body"], dict):
        raise ApiError(400, "invalid field 'extra_body': must be an object", param="extra_body")
    for name in REQUEST_OPTIONS:
        if name not in extra:
            continue
        if not allow_request_options:
            raise ApiError(
                400,
                f"'{name}' is a setting of the gateway, not of a request"
                + (": send the x-rxllm-*-timeout headers" if name == "timeout" else ""),
                param=name,
            )
        value = extra[name]
        if name == "timeout" and not (
            type(value) in (int, float) and value > 0 and math.isfinite(value)
        ):
            raise ApiError(
                400, "invalid field 'timeout': must be a positive number of seconds", param=name
            )
        if name == "extra_query" and not (
            isinstance(value, dict)
            and all(type(v) in (str, int, float, bool) for v in value.values())
        ):
            raise ApiError(
                400,
                "invalid field 'extra_query': must be an object of strings and numbers",
                param=name,
            )


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
