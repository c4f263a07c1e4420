"""Normalizer for Chat Completions chunks (``chat.completion.chunk``).

Survives the quirks seen in real recordings: a first chunk with empty
``choices`` (Azure prompt filter results); usage in a chunk with empty
``choices`` or repeated on every chunk; extra chunks after usage (moderation);
a tool call delta with no ``index``; tool call indexes starting at 1; a tool
call's id and name repeated in every delta or sent as null later; arguments
sent whole, or ``null``; interleaved choices (``n`` > 1); ``reasoning`` or
``reasoning_content`` deltas; ``refusal`` deltas; a top-level ``error`` object
mid-stream.
"""

from __future__ import annotations

import json
from typing import Any

from operators._stamp import Stamper
from pipeline.core.errors import MalformedChunkError, UpstreamStreamError
from pipeline.core.events import (
    ChoiceFinished,
    EventBase,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallStarted,
    UsageReport,
)

__all__ = ["ChatNormalizer", "error_from_payload"]


class _Call:
    __slots__ = ("id", "index", "name", "started")

    def __init__(self, index: int) -> None:
        self.index = index
        self.id: str | None = None
        self.name: str | None = None
        self.started = False


class _Choice:
    __slots__ = ("calls", "finish_reason", "last_call", "seen_content", "seen_refusal")

    def __init__(self) -> None:
        self.calls: dict[int, _Call] = {}
        self.last_call: _Call | None = None
        self.finish_reason: str | None = None
        self.seen_content = False
        self.seen_refusal = False


# Anthropic's error types (``{"type": "error", "error": {"type": ...}}``) and the HTTP
# status each stands for: an ``overloaded_error`` mid-stream is a 529, retryable.
_ERROR_TYPE_STATUS = {
    "overloaded_error": 529,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
}


def error_from_payload(payload: Any) -> UpstreamStreamError:
    """Build the exception for an upstream error object (``{"error": {...}}`` or its body)."""
    err = payload.get("error", payload) if isinstance(payload, dict) else payload
    if not isinstance(err, dict):
        return UpstreamStreamError(str(err) or "upstream error")
    message = err.get("message") or err.get("type") or "upstream error"
    status = err.get("status_code") or err.get("status")
    code = err.get("code")
    if isinstance(code, int) and status is None and 100 <= code < 600:
        status = code
    kind = err.get("type")
    if status is None and code is None and kind in _ERROR_TYPE_STATUS:
        status, code = _ERROR_TYPE_STATUS[kind], kind
    return UpstreamStreamError(
        str(message),
        status=status if isinstance(status, int) else None,
        code=None if code is None else str(code),
        payload=err,
    )


class ChatNormalizer:
    """Turns parsed Chat Completions chunks into events; one instance per stream.

    ``emit(cls, choice, t, **fields)`` is the caller's event factory: it stamps
    stream id and sequence numbers.
    """

    __slots__ = ("_last_usage", "choices")

    def __init__(self) -> None:
        self.choices: dict[int, _Choice] = {}
        self._last_usage: Any = None

    def feed(self, chunk: dict[str, Any], t: float, out: list[EventBase], emit: Stamper) -> None:
        """Append the events of one chunk to ``out``; raise on an error payload."""
        choices = chunk.get("choices")
        if choices:
            if not isinstance(choices, list):
                raise MalformedChunkError("'choices' is not a list", json.dumps(chunk))
            for c in choices:
                self._choice(c, t, out, emit)
        usage = chunk.get("usage")
        if usage is None:
            x_groq = chunk.get("x_groq")
            if isinstance(x_groq, dict):
                usage = x_groq.get("usage")
        if isinstance(usage, dict) and usage != self._last_usage:
            self._last_usage = usage
            out.append(emit(UsageReport, 0, t, usage=usage))
        error = chunk.get("error")
        if error:
            raise error_from_payload(error)

    def _choice(self, c: Any, t: float, out: list[EventBase], emit: Stamper) -> None:
        if not isinstance(c, dict):
            raise MalformedChunkError("a choice is not an object", json.dumps(c))
        index = c.get("index") or 0
        state = self.choices.get(index)
        if state is None:
            state = self.choices[index] = _Choice()
        delta = c.get("delta")
        if not delta:
            pass
        elif len(delta) == 1 and "content" in delta:
            # The commonest delta (text only): what the general case below does with it.
            content = delta["content"]
            if isinstance(content, str) and (content or not state.seen_content):
                state.seen_content = True
                out.append(emit.text(TextDelta, index, t, content))
        elif len(delta) == 1 and "tool_calls" in delta:
            calls = delta["tool_calls"]
            if calls:
                for call in calls:
                    self._tool_call(state, index, call, t, out, emit)
        else:
            get = delta.get
            reasoning = get("reasoning")
            if reasoning is None:
                reasoning = get("reasoning_content")
            if reasoning and isinstance(reasoning, str):
                out.append(emit.text(ReasoningDelta, index, t, reasoning))
            content = get("content")
            if isinstance(content, str) and (content or not state.seen_content):
                state.seen_content = True
                out.append(emit.text(TextDelta, index, t, content))
            refusal = get("refusal")
            if isinstance(refusal, str) and (refusal or not state.seen_refusal):
                state.seen_refusal = True
                out.append(emit.text(RefusalDelta, index, t, refusal))
            calls = get("tool_calls")
            if calls:
                for call in calls:
                    self._tool_call(state, index, call, t, out, emit)
        finish = c.get("finish_reason")
        if finish and finish != state.finish_reason:
            state.finish_reason = finish
            out.append(emit(ChoiceFinished, index, t, finish_reason=finish))

    def _tool_call(
        self, state: _Choice, choice: int, tc: Any, t: float, out: list[EventBase], emit: Stamper
    ) -> None:
        if not isinstance(tc, dict):
            raise MalformedChunkError("a tool call delta is not an object", json.dumps(tc))
        fn = tc.get("function") or {}
        call_id = tc.get("id")
        name = fn.get("name")
        index = tc.get("index")
        if index is None:
            # No index: a new id starts a new call, anything else continues the last one.
            last = state.last_call
            if last is None or (call_id and last.id and call_id != last.id):
                index = len(state.calls)
            else:
                index = last.index
        call = state.calls.get(index)
        if call is None:
            call = state.calls[index] = _Call(index)
        state.last_call = call
        if call_id and call.id is None:
            call.id = call_id
        if name and call.name is None:
            call.name = name
        args = fn.get("arguments")
        if args is not None and not isinstance(args, str):
            args = json.dumps(args, ensure_ascii=False)
        if not call.started and (call.name is not None or args):
            call.started = True
            out.append(emit(ToolCallStarted, choice, t, index=index, id=call.id, name=call.name))
        if args:
            out.append(emit.tool_delta(choice, t, index, args))
