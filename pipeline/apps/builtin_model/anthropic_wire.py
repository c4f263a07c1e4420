"""The Anthropic Messages wire format: stream events and the ``message`` object.

A stream is ``message_start`` (the message with no content and the input
usage), then one content block per part of the answer -- a ``thinking``
block (``thinking_delta`` pieces, then a ``signature_delta``), a ``text``
block (``text_delta`` pieces), one ``tool_use`` block per tool call
(``input_json_delta`` fragments, the first one empty as the API sends it) --
each framed by ``content_block_start`` / ``content_block_stop``, a ``ping``
after the first block starts, then ``message_delta`` (stop reason, usage) and
``message_stop``. Every event has an ``event:`` line naming its type. A
mid-stream error is ``event: error`` with ``{"type": "error", "error":
{"type": "overloaded_error" | "api_error" | ..., "message"}}``. ``n`` does not
exist in this API: one answer.

The thinking signature is made up (a digest of the thinking): the mock does
not check the signatures it is sent back.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from typing import Any

from pipeline.apps.builtin_model.answer_script import Answer, PlannedToolCall
from pipeline.apps.builtin_model.wire_frames import Frame, Meta, dumps

__all__ = ["AnthropicWriter", "anthropic_error", "anthropic_message", "anthropic_usage"]

_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# HTTP status -> the error type the API names it with
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def anthropic_error(status: int, error: dict[str, Any]) -> dict[str, Any]:
    """The Anthropic error body for an OpenAI-shaped error object and its status."""
    code = error.get("code")
    if isinstance(code, str) and code.endswith("_error"):
        kind = code
    else:
        kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": error.get("message", "")}}


def anthropic_usage(answer: Answer, meta: Meta) -> dict[str, Any]:
    """Return the ``usage`` object of an answer."""
    return {
        "input_tokens": meta.prompt_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": answer.tokens_per_choice,
    }


def _signature(thinking: str) -> str:
    return base64.b64encode(hashlib.sha256(thinking.encode()).digest()).decode()


class AnthropicWriter:
    """Makes the Anthropic Messages stream events of one answer."""

    def __init__(self, answer: Answer, meta: Meta) -> None:
        self.answer = answer
        self.meta = meta
        self._index = 0

    def frames(self) -> Iterator[Frame]:
        """Yield every event of the stream, ``message_stop`` last."""
        message = self._message([], None)
        message["usage"] = {**anthropic_usage(self.answer, self.meta), "output_tokens": 1}
        yield self._event("message_start", False, message=message)
        answer = self.answer
        first = True
        if answer.reasoning:
            yield from self._thinking()
            first = False
        if answer.text is not None:
            yield from self._text(ping=first)
            first = False
        for call in answer.tool_calls:
            yield from self._tool_use(call, ping=first)
            first = False
        delta = {"stop_reason": _STOP.get(answer.finish_reason), "stop_sequence": None}
        usage = {"output_tokens": answer.tokens_per_choice}
        yield self._event("message_delta", delta=delta, usage=usage)
        yield self._event("message_stop", check=False)

    def error(self, error: dict[str, Any]) -> Frame:
        """Return the ``event: error`` frame that reports ``error`` (an OpenAI-shaped object)."""
        return Frame(dumps(anthropic_error(500, error)), event="error", check=False)

    def message(self) -> dict[str, Any]:
        """Return the whole ``message`` (the non-streamed body)."""
        answer = self.answer
        content: list[dict[str, Any]] = []
        if answer.reasoning:
            thinking = "".join(answer.reasoning)
            content.append(
                {"type": "thinking", "thinking": thinking, "signature": _signature(thinking)}
            )
        if answer.text is not None:
            content.append({"type": "text", "text": "".join(answer.text)})
        for call in answer.tool_calls:
            content.append(
                {
                    "type": "tool_use",
                    "id": self._call_id(call),
                    "name": call.name,
                    "input": _parse(call.arguments),
                }
            )
        return self._message(content, _STOP.get(answer.finish_reason))

    def _message(self, content: list[dict[str, Any]], stop: str | None) -> dict[str, Any]:
        return {
            "id": self.meta.id("msg"),
            "type": "message",
            "role": "assistant",
            "model": self.meta.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": anthropic_usage(self.answer, self.meta),
        }

    def _call_id(self, call: PlannedToolCall) -> str:
        return call.id or self.meta.id("toolu", call.index)

    def _event(self, kind: str, token: bool = False, check: bool = True, **fields: Any) -> Frame:
        return Frame(dumps({"type": kind, **fields}), event=kind, token=token, check=check)

    def _block(self, block: dict[str, Any], ping: bool) -> Iterator[Frame]:
        yield self._event("content_block_start", index=self._index, content_block=block)
        if ping:
            yield Frame(dumps({"type": "ping"}), event="ping", check=False)

    def _delta(self, delta: dict[str, Any], token: bool = True) -> Frame:
        return self._event("content_block_delta", token, index=self._index, delta=delta)

    def _stop(self) -> Iterator[Frame]:
        yield self._event("content_block_stop", index=self._index)
        self._index += 1

    def _thinking(self) -> Iterator[Frame]:
        yield from self._block({"type": "thinking", "thinking": "", "signature": ""}, True)
        for piece in self.answer.reasoning:
            yield self._delta({"type": "thinking_delta", "thinking": piece})
        signature = _signature("".join(self.answer.reasoning))
        yield self._delta({"type": "signature_delta", "signature": signature}, token=False)
        yield from self._stop()

    def _text(self, ping: bool) -> Iterator[Frame]:
        yield from self._block({"type": "text", "text": ""}, ping)
        for piece in self.answer.text or ():
            yield self._delta({"type": "text_delta", "text": piece})
        yield from self._stop()

    def _tool_use(self, call: PlannedToolCall, ping: bool) -> Iterator[Frame]:
        block = {"type": "tool_use", "id": self._call_id(call), "name": call.name, "input": {}}
        yield from self._block(block, ping)
        yield self._delta({"type": "input_json_delta", "partial_json": ""}, token=False)
        for fragment in call.fragments:
            yield self._delta({"type": "input_json_delta", "partial_json": fragment})
        yield from self._stop()


def _parse(arguments: str) -> Any:
    try:
        return json.loads(arguments) if arguments else {}
    except ValueError:
        return {}


def anthropic_message(answer: Answer, meta: Meta) -> dict[str, Any]:
    """Return the non-streamed ``message`` body of an answer."""
    return AnthropicWriter(answer, meta).message()
