"""The ``openai`` dialect: Chat Completions ``chat.completion.chunk`` objects.

Any OpenAI client reads a processed stream as if it came from
``POST /chat/completions`` with ``stream=True``:

* a choice's first delta also carries ``"role": "assistant"`` (the ``started``
  event writes nothing); an upstream's opening ``content: ""`` passes through,
  so the first chunk is ``delta: {"role": "assistant", "content": ""}`` as the
  API sends it;
* text, reasoning and refusal deltas become ``delta.content``,
  ``delta.reasoning_content`` and ``delta.refusal``;
* a tool call's start becomes ``delta.tool_calls[{index, id, type: "function",
  function: {name, arguments: ""}}]``, its argument fragments
  ``delta.tool_calls[{index, function: {arguments}}]``;
* ``choice.finished`` sets ``finish_reason``; ``usage`` becomes a last chunk
  with ``choices: []`` and ``usage`` (only with ``include_usage``, as the API
  does for ``stream_options: {"include_usage": true}``; Responses API usage
  names are translated);
* ``finished`` ends with ``data: [DONE]``; ``error`` ends with
  ``data: {"error": {"message", "type", "code"}}``, which the ``openai`` SDK's
  stream raises as ``openai.APIError`` (the SDK does so for any chunk with an
  ``error`` key; ``event: error`` is only checked on Assistants ``thread.``
  events); ``cancelled`` ends with nothing, no ``[DONE]``.

Every chunk has ``id: chatcmpl-<stream_id>``, ``created`` (unix seconds, when
the dialect was made) and ``model`` (the ``started`` event's).
"""

from __future__ import annotations

import time
from typing import Any

from pydantic_core import to_json

from pipeline.core.events import (
    Cancelled,
    ChoiceFinished,
    EventBase,
    Finished,
    ReasoningDelta,
    RefusalDelta,
    Started,
    StreamError,
    TextDelta,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallInvalid,
    ToolCallStarted,
    UsageReport,
)
from sinks.dialects.dialect_base import Dialect, data_frame

__all__ = ["OpenAIDialect", "chat_usage"]

_ROLE = {"role": "assistant"}
# A text delta's frame after the choice's first: id, the chunk's head, choice, the text's JSON.
_TEXT_FRAME = (
    b'id: %d\ndata: %b[{"index":%d,"delta":{"content":%b},'
    b'"logprobs":null,"finish_reason":null}]}\n\n'
)


def chat_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Usage in Chat Completions names (``prompt_tokens``, ...), from either API's."""
    if "prompt_tokens" in usage or "input_tokens" not in usage:
        return usage
    if "cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage:
        # Anthropic's: input_tokens leaves out the tokens read from and written to the cache
        cached = usage.get("cache_read_input_tokens") or 0
        prompt = (
            usage.get("input_tokens", 0) + cached + (usage.get("cache_creation_input_tokens") or 0)
        )
        output = usage.get("output_tokens", 0)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": output,
            "total_tokens": prompt + output,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
    out: dict[str, Any] = {
        "prompt_tokens": usage.get("input_tokens", 0),
        "completion_tokens": usage.get("output_tokens", 0),
        "total_tokens": usage.get(
            "total_tokens", usage.get("input_tokens", 0) + usage.get("output_tokens", 0)
        ),
    }
    if "input_tokens_details" in usage:
        out["prompt_tokens_details"] = usage["input_tokens_details"]
    if "output_tokens_details" in usage:
        out["completion_tokens_details"] = usage["output_tokens_details"]
    return out


class OpenAIDialect(Dialect):
    """Events as ``chat.completion.chunk`` objects; see the module docstring.

    ``include_usage`` sends the usage chunk; ``model``, ``created`` and
    ``completion_id`` override what the stream says (useful when resuming
    after the ``started`` event).

    Example::

        SSEResponse(events, dialect=OpenAIDialect(include_usage=True))
    """

    name = "openai"

    def __init__(
        self,
        *,
        include_usage: bool = False,
        model: str | None = None,
        created: int | None = None,
        completion_id: str | None = None,
    ) -> None:
        super().__init__()
        self.include_usage = include_usage
        self.model = model
        self.created = int(time.time()) if created is None else created
        self.completion_id = completion_id
        self._prefix: bytes | None = None
        self._roles: set[int] = set()
        self._calls: set[tuple[int, int]] = set()
        self._finished: set[int] = set()

    def encode(self, event: EventBase) -> bytes:
        if self.done:
            return b""
        prefix = self._prefix
        if prefix is not None and type(event) is TextDelta and event.choice in self._roles:
            # Most chunks of a stream: written by hand, the same bytes as _delta's (which
            # builds two dicts and a list per chunk to serialize them).
            return _TEXT_FRAME % (event.seq, prefix, event.choice, to_json(event.text))
        if self.completion_id is None:
            self.completion_id = f"chatcmpl-{event.stream_id}"
        seq, choice = event.seq, event.choice
        if isinstance(event, TextDelta):
            # An explicit "" is sent through: the client then sees "" rather than null.
            return self._delta(seq, choice, {"content": event.text})
        if isinstance(event, ToolCallDelta):
            call = {"index": event.index, "function": {"arguments": event.arguments}}
            return self._delta(seq, choice, {"tool_calls": [call]})
        if isinstance(event, ReasoningDelta):
            if not event.text:
                return b""
            return self._delta(seq, choice, {"reasoning_content": event.text})
        if isinstance(event, RefusalDelta):
            return self._delta(seq, choice, {"refusal": event.text}) if event.text else b""
        if isinstance(event, ToolCallStarted):
            self._calls.add((choice, event.index))
            return self._delta(seq, choice, {"tool_calls": [_call(event, "")]})
        if isinstance(event, ToolCallCompleted | ToolCallInvalid):
            if (choice, event.index) in self._calls:
                return b""  # its arguments were streamed already
            self._calls.add((choice, event.index))
            return self._delta(seq, choice, {"tool_calls": [_call(event, event.arguments)]})
        if isinstance(event, Started):
            if self.model is None:
                self.model = event.model
                self._prefix = None
            return b""
        if isinstance(event, ChoiceFinished):
            return self._finish(seq, choice, event.finish_reason)
        if isinstance(event, UsageReport):
            if not self.include_usage:
                return b""
            return self._chunk(seq, [], to_json(chat_usage(event.usage)))
        if isinstance(event, Finished):
            self.done = True
            out = b""
            if event.finish_reason is not None and 0 not in self._finished:
                out = self._finish(seq, 0, event.finish_reason)
            return out + data_frame(seq, b"[DONE]")
        if isinstance(event, StreamError):
            self.done = True
            error = {"message": event.message, "type": event.kind, "code": event.code}
            return data_frame(seq, to_json({"error": error}))
        if isinstance(event, Cancelled):
            self.done = True
        return b""

    def _delta(self, seq: int, choice: int, delta: dict[str, Any]) -> bytes:
        if choice not in self._roles:  # the role travels with a choice's first delta
            self._roles.add(choice)
            delta = {**_ROLE, **delta}
        return self._chunk(seq, [_choice(choice, delta, None)])

    def _role(self, seq: int, choice: int) -> bytes:
        if choice in self._roles:
            return b""
        self._roles.add(choice)
        return self._chunk(seq, [_choice(choice, _ROLE, None)])

    def _finish(self, seq: int, choice: int, reason: str | None) -> bytes:
        self._finished.add(choice)
        out = self._role(seq, choice)
        return out + self._chunk(seq, [_choice(choice, {}, reason)])

    def _chunk(self, seq: int, choices: list[dict[str, Any]], usage: bytes | None = None) -> bytes:
        prefix = self._prefix
        if prefix is None:
            head = {
                "id": self.completion_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model or "",
            }
            prefix = self._prefix = to_json(head)[:-1] + b',"choices":'
        body = prefix + to_json(choices)
        body += b"}" if usage is None else (b',"usage":' + usage + b"}")
        return data_frame(seq, body)


def _choice(index: int, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _call(
    event: ToolCallStarted | ToolCallCompleted | ToolCallInvalid, arguments: str
) -> dict[str, Any]:
    call: dict[str, Any] = {"index": event.index, "type": "function"}
    if event.id is not None:
        call["id"] = event.id
    call["function"] = {"name": event.name, "arguments": arguments}
    return call
