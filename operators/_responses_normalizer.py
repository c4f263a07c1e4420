"""Normalizer for Responses API stream events (``response.*``).

Message text becomes text deltas, reasoning summary (and reasoning text)
becomes reasoning deltas, function calls become tool calls numbered in the
order they appear; ``response.completed`` / ``response.incomplete`` give usage
and the finish reason; ``response.failed`` and ``error`` events raise.

Each output item is announced by a ``block.started`` event (its output
index, its kind, the item as added: its id...), so a Responses client gets
the items back as they were; an item of a kind no other event carries
(``web_search_call``, ``file_search_call``...) is carried whole, as it is
done. A reasoning item's ``encrypted_content`` (what a client sends back to
continue without storing) becomes a ``reasoning.signature`` event, and an
output text's annotation (``url_citation``...) a ``citation`` event.
"""

from __future__ import annotations

from typing import Any

from operators._chat_normalizer import error_from_payload
from operators._stamp import Stamper
from pipeline.core.events import (
    BlockStarted,
    ChoiceFinished,
    Citation,
    EventBase,
    ReasoningDelta,
    ReasoningSignature,
    RefusalDelta,
    TextDelta,
    ToolCallStarted,
    UsageReport,
)

__all__ = ["ResponsesNormalizer"]

_TEXT: dict[str, type[TextDelta | RefusalDelta | ReasoningDelta]] = {
    "response.output_text.delta": TextDelta,
    "response.refusal.delta": RefusalDelta,
    "response.reasoning_summary_text.delta": ReasoningDelta,
    "response.reasoning_text.delta": ReasoningDelta,
}

_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}

# Output items whose content other events carry, and the block kind each one is
_KINDS = {"message": "text", "reasoning": "reasoning", "function_call": "tool_call"}


class ResponsesNormalizer:
    """Turns parsed Responses API events into events; one instance per stream."""

    __slots__ = ("_calls", "finish_reason", "model", "response_id")

    def __init__(self) -> None:
        self.model: str | None = None
        self.response_id: str | None = None
        self.finish_reason: str | None = None
        # output_index -> [tool index, got any argument delta]
        self._calls: dict[int, list[Any]] = {}

    def feed(self, data: dict[str, Any], t: float, out: list[EventBase], emit: Stamper) -> None:
        """Append the events of one Responses event to ``out``; raise on an error."""
        kind = data.get("type")
        cls = _TEXT.get(kind) if isinstance(kind, str) else None
        if cls is not None:
            text = data.get("delta")
            if isinstance(text, str) and text:
                out.append(emit.text(cls, 0, t, text))
            return
        if kind == "response.output_text.annotation.added":
            annotation = data.get("annotation")
            position = data.get("output_index")
            if isinstance(annotation, dict):
                index = position if isinstance(position, int) else 0
                out.append(emit(Citation, 0, t, index=index, citation=annotation))
            return
        if kind == "response.function_call_arguments.delta":
            call = self._calls.get(data.get("output_index", -1))
            delta = data.get("delta")
            if call is not None and isinstance(delta, str) and delta:
                call[1] = True
                out.append(emit.tool_delta(0, t, call[0], delta))
        elif kind == "response.output_item.added":
            item = data.get("item") or {}
            block = _KINDS.get(str(item.get("type")))
            if block is not None:
                position = data.get("output_index")
                position = position if isinstance(position, int) else 0
                out.append(emit(BlockStarted, 0, t, index=position, kind=block, block=item))
            if item.get("type") == "function_call":
                index = len(self._calls)
                self._calls[data.get("output_index", index)] = [index, False]
                call_id = item.get("call_id") or item.get("id")
                name = item.get("name")
                out.append(emit(ToolCallStarted, 0, t, index=index, id=call_id, name=name))
                if item.get("arguments"):
                    self._calls[data.get("output_index", index)][1] = True
                    out.append(emit.tool_delta(0, t, index, item["arguments"]))
        elif kind == "response.output_item.done":
            item = data.get("item") or {}
            position = data.get("output_index")
            position = position if isinstance(position, int) else 0
            kind_of = item.get("type")
            if kind_of == "reasoning" and isinstance(item.get("encrypted_content"), str):
                signature = item["encrypted_content"]
                out.append(emit(ReasoningSignature, 0, t, index=position, signature=signature))
            elif isinstance(kind_of, str) and kind_of not in _KINDS:
                out.append(emit(BlockStarted, 0, t, index=position, kind=kind_of, block=item))
        elif kind == "response.function_call_arguments.done":
            # Arguments sent whole, with no delta before: emit them as one delta.
            call = self._calls.get(data.get("output_index", -1))
            args = data.get("arguments")
            if call is not None and not call[1] and isinstance(args, str) and args:
                call[1] = True
                out.append(emit.tool_delta(0, t, call[0], args))
        elif kind in ("response.completed", "response.incomplete"):
            response = data.get("response") or {}
            usage = response.get("usage")
            if isinstance(usage, dict):
                out.append(emit(UsageReport, 0, t, usage=usage))
            if kind == "response.completed":
                finish = "tool_calls" if self._calls else "stop"
            else:
                reason = (response.get("incomplete_details") or {}).get("reason")
                reason = reason if isinstance(reason, str) else "incomplete"
                finish = _INCOMPLETE.get(reason, reason)
            self.finish_reason = finish
            out.append(emit(ChoiceFinished, 0, t, finish_reason=finish))
        elif kind == "response.failed":
            response = data.get("response") or {}
            raise error_from_payload(response.get("error") or {"message": "response failed"})
        elif kind == "error":
            raise error_from_payload(data)
