"""The ``anthropic`` dialect: Anthropic Messages stream events.

The ``anthropic`` SDK's ``messages.stream()`` (and ``create(stream=True)``)
reads a processed stream as if it came from ``POST /v1/messages``:

* ``message_start`` (the message with no content), then one block after the
  other, each ``content_block_start`` / ``content_block_delta``... /
  ``content_block_stop``, numbered from 0, then ``message_delta`` (stop
  reason, stop sequence, usage) and ``message_stop``;
* a ``block.started`` event opens a block as the upstream started it (so an
  Anthropic upstream's blocks come back as they were: ``caller``,
  ``redacted_thinking`` data, server tool blocks and their ``block.delta``
  deltas); with no such event (a Chat Completions or Responses upstream) a
  block opens when the kind of content changes: text, thinking, each tool call;
* text becomes ``text_delta``, reasoning ``thinking_delta``, a reasoning
  signature ``signature_delta``, a citation ``citations_delta``, a tool
  call's fragments ``input_json_delta``; a refusal is text, with stop reason
  ``refusal``;
* the stop reason is the upstream's own when it said one (``stop_reason``
  event), else the finish reason translated (``stop`` -> ``end_turn``,
  ``length`` -> ``max_tokens``, ``tool_calls`` -> ``tool_use``,
  ``content_filter`` -> ``refusal``); usage is translated from the other
  APIs' names (cached prompt tokens become ``cache_read_input_tokens``);
* ``error`` ends with ``event: error`` and ``{"type": "error", "error":
  {"type": "overloaded_error" | "rate_limit_error" | "api_error", ...}}``,
  which the SDK raises as ``APIStatusError``; ``cancelled`` ends with nothing.

:meth:`AnthropicDialect.message` is the message so far, as the SDK's
``get_final_message()`` would build it: the body of a non-streamed answer.

Where this differs from the API: from an upstream of another API,
``message_start`` carries zero usage (the counts arrive with its last
events); ``message_delta`` carries all of them, so the SDK's final message
has them. An Anthropic upstream's ``message_start`` usage passes as it was.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import to_json

from pipeline.core.events import (
    BlockDelta,
    BlockStarted,
    Cancelled,
    ChoiceFinished,
    Citation,
    EventBase,
    Finished,
    ReasoningDelta,
    ReasoningSignature,
    RefusalDelta,
    Started,
    StopReason,
    StreamError,
    TextDelta,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallInvalid,
    ToolCallStarted,
    UsageReport,
)
from sinks.dialects.dialect_base import Dialect

__all__ = ["AnthropicDialect", "anthropic_stop_reason", "anthropic_usage"]

_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_KIND = {"text": "text", "reasoning": "thinking", "tool_call": "tool_use"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_stop_reason(finish_reason: str | None) -> str | None:
    """A Chat Completions finish reason in Anthropic's words (an Anthropic one kept)."""
    if finish_reason is None:
        return None
    return _STOP.get(finish_reason, finish_reason)


def anthropic_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Usage in Anthropic names, from any API's (Anthropic's own kept as they are)."""
    if "cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage:
        return usage
    if "prompt_tokens" in usage:  # Chat Completions
        details = usage.get("prompt_tokens_details") or {}
        prompt, output = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    elif "input_tokens_details" in usage or "total_tokens" in usage:  # Responses
        details = usage.get("input_tokens_details") or {}
        prompt, output = usage.get("input_tokens") or 0, usage.get("output_tokens") or 0
    else:
        return usage
    cached = details.get("cached_tokens") or 0 if isinstance(details, dict) else 0
    return {
        "input_tokens": max(0, prompt - cached),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": output,
    }


def _error_type(event: StreamError) -> str:
    if event.code and event.code.endswith("_error"):
        return event.code
    if event.status is not None:
        if event.status in _ERROR_TYPES:
            return _ERROR_TYPES[event.status]
        if event.status >= 500:
            return "api_error"
    return "overloaded_error" if event.kind == "timeout" else "api_error"


class _Block:
    __slots__ = ("args", "index", "kind", "snapshot", "tool")

    def __init__(self, index: int, kind: str, snapshot: dict[str, Any]) -> None:
        self.index = index  # its position in the message, as sent
        self.kind = kind  # text | reasoning | tool_call | a provider block type
        self.snapshot = snapshot  # the block as get_final_message() builds it
        self.tool: int | None = None  # the tool call it carries
        self.args: list[str] = []  # its input's fragments (tool and server tool blocks)


class AnthropicDialect(Dialect):
    """Events as Anthropic Messages stream events; see the module docstring.

    ``model`` and ``message_id`` override what the stream says.
    """

    name = "anthropic"

    def __init__(self, *, model: str | None = None, message_id: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.message_id = message_id
        self._started = False
        self._open: _Block | None = None
        self._blocks: list[_Block] = []
        self._tools: dict[int, _Block] = {}  # tool call index -> its block
        self._usage: dict[str, Any] = {}
        self._stop_reason: str | None = None
        self._stop_sequence: str | None = None
        self._stop_details: dict[str, Any] | None = None
        self._refused = False
        self._api = "unknown"  # the upstream's API (the Started event's)
        self._start_usage: dict[str, Any] | None = None  # an Anthropic upstream's, as it began

    # -- the message, as the SDK accumulates it ---------------------------------

    def body(self) -> dict[str, Any]:
        """The body of a non-streamed answer: :meth:`message` once the stream has ended."""
        return self.message()

    def message(self) -> dict[str, Any]:
        """The message so far: what ``get_final_message()`` returns, as JSON."""
        content = []
        for block in self._blocks:
            snapshot = dict(block.snapshot)
            if block.args or block.kind in ("tool_call", "server_tool_use", "mcp_tool_use"):
                snapshot["input"] = _parse_input("".join(block.args), snapshot.get("input"))
            content.append(snapshot)
        usage = {"input_tokens": 0, "output_tokens": 0, **anthropic_usage(self._usage)}
        body: dict[str, Any] = {
            "id": self._message_id(),
            "type": "message",
            "role": "assistant",
            "model": self.model or "",
            "content": content,
            "stop_reason": self._stop(),
            "stop_sequence": self._stop_sequence,
            "usage": usage,
        }
        if self._stop_details:
            body.update(self._stop_details)
        return body

    def _message_id(self) -> str:
        return self.message_id or "msg_rxllm"

    def _stop(self) -> str | None:
        if self._refused and self._stop_reason in (None, "end_turn"):
            return "refusal"
        return self._stop_reason

    # -- encoding -----------------------------------------------------------------

    def encode(self, event: EventBase) -> bytes:
        if self.done:
            return b""
        seq = event.seq
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            out = self._ensure(seq, "text")
            assert self._open is not None
            self._open.snapshot["text"] += event.text
            return out + self._delta(seq, {"type": "text_delta", "text": event.text})
        if isinstance(event, ToolCallDelta):
            out, block = self._tool_block(seq, event.index, None, None)
            block.args.append(event.arguments)
            delta = {"type": "input_json_delta", "partial_json": event.arguments}
            return out + self._delta(seq, delta, block)
        if isinstance(event, ReasoningDelta):
            if not event.text:
                return b""
            out = self._ensure(seq, "reasoning")
            assert self._open is not None
            self._open.snapshot["thinking"] += event.text
            return out + self._delta(seq, {"type": "thinking_delta", "thinking": event.text})
        if isinstance(event, Started):
            self._api = event.api
            if event.api == "anthropic" and event.usage is not None:
                self._start_usage = dict(event.usage)
            if event.model and self.model is None:
                self.model = event.model
            if self.message_id is None:
                rid = event.response_id
                self.message_id = (
                    rid if rid and event.api == "anthropic" else f"msg_{event.stream_id}"
                )
            return self._start(seq)
        if isinstance(event, BlockStarted):
            if self._api == "anthropic":
                out = self._start(seq) + self._close(seq)
                return out + self._open_block(seq, event.kind, event.block)
            if event.kind not in _KIND:
                return b""  # another API's item with no Anthropic block (a built-in tool's call)
            # another API's item boundary: the open block ends; a text or thinking block
            # opens here (a tool call's opens with its id and name, at tool_call.started)
            out = self._start(seq) + self._close(seq)
            if event.kind == "tool_call":
                return out
            return out + self._open_block(seq, event.kind, None)
        if isinstance(event, ToolCallStarted):
            out, _ = self._tool_block(seq, event.index, event.id, event.name)
            return out
        if isinstance(event, ReasoningSignature):
            out = self._ensure(seq, "reasoning")
            assert self._open is not None
            self._open.snapshot["signature"] = event.signature
            return out + self._delta(seq, {"type": "signature_delta", "signature": event.signature})
        if isinstance(event, Citation):
            if self._api != "anthropic":
                return b""  # another API's citation has no Anthropic citation shape
            out = self._ensure(seq, "text")
            assert self._open is not None
            citations = self._open.snapshot.get("citations") or []
            self._open.snapshot["citations"] = [*citations, event.citation]
            return out + self._delta(seq, {"type": "citations_delta", "citation": event.citation})
        if isinstance(event, BlockDelta):
            opened = self._open
            if opened is None:
                return b""
            if event.delta.get("type") == "input_json_delta":
                opened.args.append(str(event.delta.get("partial_json") or ""))
            return self._delta(seq, event.delta)
        if isinstance(event, RefusalDelta):
            if not event.text:
                return b""
            self._refused = True
            return self.encode(TextDelta(stream_id=event.stream_id, seq=seq, text=event.text))
        if isinstance(event, ToolCallCompleted | ToolCallInvalid):
            out, block = self._tool_block(seq, event.index, event.id, event.name)
            if block.args or not event.arguments:
                return out
            block.args.append(event.arguments)  # arguments that came whole, never streamed
            delta = {"type": "input_json_delta", "partial_json": event.arguments}
            return out + self._delta(seq, delta, block)
        if isinstance(event, UsageReport):
            self._usage = dict(event.usage)
            return b""
        if isinstance(event, StopReason):
            self._stop_reason = event.reason
            self._stop_sequence = event.sequence
            self._stop_details = event.details
            return b""
        if isinstance(event, ChoiceFinished):
            if event.choice == 0 and self._stop_reason is None:
                self._stop_reason = anthropic_stop_reason(event.finish_reason)
            return b""
        if isinstance(event, Finished):
            self.done = True
            if self._stop_reason is None:
                self._stop_reason = anthropic_stop_reason(event.finish_reason) or "end_turn"
            out = self._start(seq) + self._close(seq)
            stop: dict[str, Any] = {
                "stop_reason": self._stop(),
                "stop_sequence": self._stop_sequence,
            }
            if self._stop_details:
                stop.update(self._stop_details)
            usage = {"output_tokens": 0, **anthropic_usage(self._usage)}
            out += self._frame(
                seq, "message_delta", {"type": "message_delta", "delta": stop, "usage": usage}
            )
            return out + self._frame(seq, "message_stop", {"type": "message_stop"})
        if isinstance(event, StreamError):
            self.done = True
            error = {"type": _error_type(event), "message": event.message}
            return self._frame(seq, "error", {"type": "error", "error": error})
        if isinstance(event, Cancelled):
            self.done = True
        return b""

    def _frame(self, seq: int, name: str, data: dict[str, Any]) -> bytes:
        return b"id: %d\nevent: %b\ndata: %b\n\n" % (seq, name.encode(), to_json(data))

    def _start(self, seq: int) -> bytes:
        if self._started:
            return b""
        self._started = True
        message = self.message()
        message["content"] = []
        message["stop_reason"] = None
        message["stop_sequence"] = None
        message["usage"] = self._start_usage or {"input_tokens": 0, "output_tokens": 0}
        return self._frame(seq, "message_start", {"type": "message_start", "message": message})

    def _close(self, seq: int) -> bytes:
        block, self._open = self._open, None
        if block is None:
            return b""
        return self._frame(
            seq, "content_block_stop", {"type": "content_block_stop", "index": block.index}
        )

    def _open_block(self, seq: int, kind: str, given: dict[str, Any] | None) -> bytes:
        if given is not None:
            start = dict(given)
        elif kind == "text":
            start = {"type": "text", "text": ""}
        elif kind == "reasoning":
            start = {"type": "thinking", "thinking": "", "signature": ""}
        elif kind == "tool_call":
            start = {"type": "tool_use", "id": "", "name": "", "input": {}}
        else:
            start = {"type": kind}
        block = _Block(len(self._blocks), kind, dict(start))
        self._blocks.append(block)
        self._open = block
        data = {"type": "content_block_start", "index": block.index, "content_block": start}
        return self._frame(seq, "content_block_start", data)

    def _ensure(self, seq: int, kind: str) -> bytes:
        """Open a block of ``kind`` unless the open one is of that kind."""
        if self._open is not None and self._open.kind == kind:
            return b""
        return self._start(seq) + self._close(seq) + self._open_block(seq, kind, None)

    def _tool_block(
        self, seq: int, index: int, call_id: str | None, name: str | None
    ) -> tuple[bytes, _Block]:
        """The block of tool call ``index``: the open one, or a new one."""
        block = self._tools.get(index)
        if block is not None:
            return b"", block
        out = b""
        opened = self._open
        if opened is None or opened.kind != "tool_call" or opened.tool is not None:
            given = None
            if call_id is not None or name is not None:
                given = {
                    "type": "tool_use",
                    "id": call_id or f"toolu_{index}",
                    "name": name or "",
                    "input": {},
                }
            out = self._start(seq) + self._close(seq) + self._open_block(seq, "tool_call", given)
            opened = self._open
            assert opened is not None
        opened.tool = index
        self._tools[index] = opened
        return out, opened

    def _delta(self, seq: int, delta: dict[str, Any], block: _Block | None = None) -> bytes:
        """A delta of ``block`` (default: the open one; a block already closed keeps its index)."""
        target = block or self._open
        assert target is not None
        data = {"type": "content_block_delta", "index": target.index, "delta": delta}
        return self._frame(seq, "content_block_delta", data)


def _parse_input(text: str, given: Any) -> Any:
    if not text:
        return given if given is not None else {}
    try:
        return json.loads(text)
    except ValueError:
        return given if given is not None else {}
