"""Normalizer for Anthropic Messages stream events (``message_start``, ``content_block_*``...).

Every content block is announced by a ``block.started`` event (its position in
the message, its kind, the block as it started) so block order survives; then:

* ``text`` blocks: ``text_delta`` becomes text deltas, ``citations_delta`` a
  ``citation`` event;
* ``thinking`` blocks: ``thinking_delta`` becomes reasoning deltas,
  ``signature_delta`` a ``reasoning.signature`` event (what a client sends
  back to continue the conversation);
* ``tool_use`` blocks become tool calls numbered in the order they appear
  (``input_json_delta`` their argument fragments; a call with no fragment
  gets ``{}``, its final input);
* any other block (``redacted_thinking``, ``server_tool_use``,
  ``web_search_tool_result``, ``mcp_tool_use``...) is carried as it is: the
  block in ``block.started``, its deltas as ``block.delta`` events;
* ``message_delta`` gives the usage (``message_start``'s, cache creation and
  cache read tokens included, updated with the cumulative counts) and the
  stop reason: a ``stop_reason`` event keeps Anthropic's own
  (``end_turn``, ``stop_sequence`` with the sequence, ``pause_turn``...) and
  ``choice.finished`` says it in Chat Completions words (``stop``,
  ``length``, ``tool_calls``, ``content_filter``);
* ``ping`` is ignored; ``error`` (``overloaded_error``...) raises.

The padding real streams carry (spaces before a payload's last brace) is
plain JSON whitespace: nothing to do.
"""

from __future__ import annotations

import json
from typing import Any

from operators._chat_normalizer import error_from_payload
from operators._stamp import Stamper
from pipeline.core.errors import MalformedChunkError
from pipeline.core.events import (
    BlockDelta,
    BlockStarted,
    ChoiceFinished,
    Citation,
    EventBase,
    ReasoningDelta,
    ReasoningSignature,
    StopReason,
    TextDelta,
    ToolCallStarted,
    UsageReport,
)

__all__ = ["ANTHROPIC_EVENT_TYPES", "AnthropicNormalizer", "finish_reason_of"]

#: The ``type`` of every Anthropic Messages stream event (what detection looks for).
ANTHROPIC_EVENT_TYPES = frozenset(
    {
        "message_start",
        "message_delta",
        "message_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "ping",
    }
)

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# What a block's start holds that arrives through events of its own: emptied in
# the ``block.started`` copy, so a client that re-encodes it does not get it twice.
_EMPTY = frozenset({"text", "thinking", "signature", "input"})


def finish_reason_of(stop_reason: str | None) -> str | None:
    """Anthropic's stop reason in Chat Completions words (unknown ones kept as they are)."""
    if stop_reason is None:
        return None
    return _FINISH.get(stop_reason, stop_reason)


class _Block:
    __slots__ = ("args", "kind", "tool")

    def __init__(self, kind: str, tool: int | None) -> None:
        self.kind = kind
        self.tool = tool  # the tool call's index, for a tool_use block
        self.args = False  # whether a fragment of its input was sent


class AnthropicNormalizer:
    """Turns parsed Anthropic Messages stream events into events; one instance per stream."""

    __slots__ = ("_blocks", "_tools", "_usage", "finish_reason")

    def __init__(self) -> None:
        self._blocks: dict[int, _Block] = {}
        self._tools = 0
        self._usage: dict[str, Any] = {}
        self.finish_reason: str | None = None

    def start(self, message: dict[str, Any]) -> None:
        """Keep what ``message_start``'s message says (its usage so far)."""
        usage = message.get("usage")
        if isinstance(usage, dict):
            self._usage = dict(usage)

    def feed(self, data: dict[str, Any], t: float, out: list[EventBase], emit: Stamper) -> None:
        """Append the events of one stream event to ``out``; raise on an error."""
        kind = data.get("type")
        if kind == "content_block_delta":
            self._delta(data, t, out, emit)
        elif kind == "content_block_start":
            self._block(data, t, out, emit)
        elif kind == "content_block_stop":
            block = self._blocks.get(_index(data))
            if block is not None and block.tool is not None and not block.args:
                block.args = True
                out.append(emit.tool_delta(0, t, block.tool, "{}"))
        elif kind == "message_delta":
            self._message_delta(data, t, out, emit)
        elif kind == "message_start":
            message = data.get("message")
            if isinstance(message, dict):
                self.start(message)
        elif kind == "error":
            raise error_from_payload(data)
        # ping, message_stop and event types added later: nothing to say

    def _block(self, data: dict[str, Any], t: float, out: list[EventBase], emit: Stamper) -> None:
        index = _index(data)
        block = data.get("content_block")
        if not isinstance(block, dict):
            raise MalformedChunkError("content_block is not an object", json.dumps(data))
        btype = str(block.get("type"))
        if btype == "text":
            kind = "text"
        elif btype == "thinking":
            kind = "reasoning"
        elif btype == "tool_use":
            kind = "tool_call"
        else:
            kind = btype
        tool = None
        if kind == "tool_call":
            tool = self._tools
            self._tools += 1
        state = self._blocks[index] = _Block(kind, tool)
        if kind in ("text", "reasoning", "tool_call"):
            started = {k: v for k, v in block.items() if k not in _EMPTY}
            for key in _EMPTY & block.keys():
                started[key] = {} if key == "input" else ""
        else:
            started = dict(block)
        citations = block.get("citations") if kind == "text" else None
        if citations:
            started["citations"] = []
        out.append(emit(BlockStarted, 0, t, index=index, kind=kind, block=started))
        if kind == "text":
            text = block.get("text")
            if isinstance(text, str) and text:
                out.append(emit.text(TextDelta, 0, t, text))
            for citation in citations or ():
                out.append(emit(Citation, 0, t, index=index, citation=citation))
        elif kind == "reasoning":
            thinking = block.get("thinking")
            if isinstance(thinking, str) and thinking:
                out.append(emit.text(ReasoningDelta, 0, t, thinking))
            signature = block.get("signature")
            if isinstance(signature, str) and signature:
                out.append(emit(ReasoningSignature, 0, t, index=index, signature=signature))
        elif tool is not None:
            out.append(
                emit(ToolCallStarted, 0, t, index=tool, id=block.get("id"), name=block.get("name"))
            )
            given = block.get("input")
            if given:  # sent whole at the start, as some compatible servers do
                state.args = True
                out.append(emit.tool_delta(0, t, tool, json.dumps(given, ensure_ascii=False)))

    def _delta(self, data: dict[str, Any], t: float, out: list[EventBase], emit: Stamper) -> None:
        index = _index(data)
        delta = data.get("delta")
        if not isinstance(delta, dict):
            raise MalformedChunkError("delta is not an object", json.dumps(data))
        dtype = delta.get("type")
        block = self._blocks.get(index)
        if dtype == "text_delta":
            text = delta.get("text")
            if isinstance(text, str) and text:
                out.append(emit.text(TextDelta, 0, t, text))
        elif dtype == "thinking_delta":
            text = delta.get("thinking")
            if isinstance(text, str) and text:
                out.append(emit.text(ReasoningDelta, 0, t, text))
        elif dtype == "input_json_delta" and block is not None and block.tool is not None:
            fragment = delta.get("partial_json")
            if isinstance(fragment, str) and fragment:
                block.args = True
                out.append(emit.tool_delta(0, t, block.tool, fragment))
        elif dtype == "signature_delta":
            signature = delta.get("signature")
            if isinstance(signature, str):
                out.append(emit(ReasoningSignature, 0, t, index=index, signature=signature))
        elif dtype == "citations_delta":
            citation = delta.get("citation")
            if isinstance(citation, dict):
                out.append(emit(Citation, 0, t, index=index, citation=citation))
        else:  # a delta of a block carried as it is (server tools...), or a new kind
            out.append(emit(BlockDelta, 0, t, index=index, delta=delta))

    def _message_delta(
        self, data: dict[str, Any], t: float, out: list[EventBase], emit: Stamper
    ) -> None:
        """The stop reason, then the usage: the order Chat Completions streams them in
        (the openai SDK keeps the usage of the last chunk that has one)."""
        delta = data.get("delta")
        reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        if isinstance(delta, dict) and reason is not None:
            rest = {k: v for k, v in delta.items() if k not in ("stop_reason", "stop_sequence")}
            out.append(
                emit(
                    StopReason,
                    0,
                    t,
                    reason=str(reason),
                    sequence=delta.get("stop_sequence"),
                    details={k: v for k, v in rest.items() if v is not None} or None,
                )
            )
            finish = finish_reason_of(str(reason))
            if finish != self.finish_reason:
                self.finish_reason = finish
                out.append(emit(ChoiceFinished, 0, t, finish_reason=finish))
        usage = data.get("usage")
        if isinstance(usage, dict):
            # Cumulative counts: they replace message_start's; absent ones keep them.
            self._usage.update({k: v for k, v in usage.items() if v is not None})
            out.append(emit(UsageReport, 0, t, usage=dict(self._usage)))


def _index(data: dict[str, Any]) -> int:
    index = data.get("index")
    return index if isinstance(index, int) else 0
