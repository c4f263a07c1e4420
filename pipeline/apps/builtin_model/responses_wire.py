"""The Responses API wire format: typed events, and the ``response`` object.

A stream is ``response.created``, ``response.in_progress``, then one output
item per part of the answer -- a reasoning item (summary text deltas), a
message (output text deltas), one function call per tool call (arguments
deltas) -- each framed by ``response.output_item.added`` / ``.done``, and
last ``response.completed`` (or ``response.incomplete`` for a ``length`` or
``content_filter`` finish) with the usage. Every event has an ``event:``
line naming its type and a ``sequence_number`` rising from 0. A mid-stream
error is an ``error`` event. ``n`` does not exist in this API: one answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipeline.apps.builtin_model.answer_script import Answer, PlannedToolCall
from pipeline.apps.builtin_model.wire_frames import Frame, Meta, dumps

__all__ = ["ResponsesWriter", "response_object", "responses_usage"]

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


class ResponsesWriter:
    """Makes the Responses API events of one answer."""

    def __init__(self, answer: Answer, meta: Meta) -> None:
        self.answer = answer
        self.meta = meta
        self._seq = 0
        self._final: dict[str, Any] = {}

    def frames(self) -> Iterator[Frame]:
        """Yield every event of the stream, the terminal ``response.*`` event last."""
        yield self._event("response.created", False, response=self.response("in_progress", []))
        yield self._event("response.in_progress", False, response=self.response("in_progress", []))
        done: list[dict[str, Any]] = []
        index = 0
        if self.answer.reasoning:
            yield from self._reasoning(index, done)
            index += 1
        if self.answer.text is not None:
            yield from self._message(index, done)
            index += 1
        for call in self.answer.tool_calls:
            yield from self._function_call(index, call, done)
            index += 1
        final = self.response(self._status(), done, responses_usage(self.answer, self.meta))
        self._final = final
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        yield self._event(kind, response=final)

    def error(self, error: dict[str, Any]) -> Frame:
        """Return the ``error`` event that reports ``error``."""
        return self._event(
            "error", check=False, code=error.get("code"), message=error["message"], param=None
        )

    def response(
        self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Return the ``response`` object in ``status`` with ``output`` so far."""
        reason = _INCOMPLETE.get(self.answer.finish_reason)
        return {
            "id": self.meta.id("resp"),
            "object": "response",
            "created_at": self.meta.created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": reason} if status == "incomplete" else None,
            "instructions": None,
            "max_output_tokens": None,
            "metadata": {},
            "model": self.meta.model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "store": False,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": self.meta.tools,
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "user": None,
        }

    def final(self) -> dict[str, Any]:
        """Return the finished ``response`` object (the non-streamed body)."""
        for _ in self.frames():
            pass
        return self._final

    def _status(self) -> str:
        return "incomplete" if self.answer.finish_reason in _INCOMPLETE else "completed"

    def _event(self, kind: str, token: bool = False, check: bool = True, **fields: Any) -> Frame:
        payload = {"type": kind, **fields, "sequence_number": self._seq}
        self._seq += 1
        return Frame(dumps(payload), event=kind, token=token, check=check)

    def _reasoning(self, index: int, done: list[dict[str, Any]]) -> Iterator[Frame]:
        item_id = self.meta.id("rs")
        item: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": []}
        yield self._event("response.output_item.added", output_index=index, item=item)
        where: dict[str, Any] = {"item_id": item_id, "output_index": index, "summary_index": 0}
        part = {"type": "summary_text", "text": ""}
        yield self._event("response.reasoning_summary_part.added", **where, part=part)
        for piece in self.answer.reasoning:
            yield self._event("response.reasoning_summary_text.delta", True, **where, delta=piece)
        text = "".join(self.answer.reasoning)
        yield self._event("response.reasoning_summary_text.done", **where, text=text)
        part = {"type": "summary_text", "text": text}
        yield self._event("response.reasoning_summary_part.done", **where, part=part)
        item = {**item, "summary": [part]}
        done.append(item)
        yield self._event("response.output_item.done", output_index=index, item=item)

    def _message(self, index: int, done: list[dict[str, Any]]) -> Iterator[Frame]:
        item_id = self.meta.id("msg")
        item: dict[str, Any] = {
            "id": item_id,
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        yield self._event("response.output_item.added", output_index=index, item=item)
        where: dict[str, Any] = {"item_id": item_id, "output_index": index, "content_index": 0}
        part: dict[str, Any] = {"type": "output_text", "text": ""}
        part |= {"annotations": [], "logprobs": []}
        yield self._event("response.content_part.added", **where, part=part)
        for piece in self.answer.text or ():
            yield self._event("response.output_text.delta", True, **where, delta=piece, logprobs=[])
        text = "".join(self.answer.text or ())
        yield self._event("response.output_text.done", **where, text=text, logprobs=[])
        part = {**part, "text": text}
        yield self._event("response.content_part.done", **where, part=part)
        item = {**item, "status": self._status(), "content": [part]}
        done.append(item)
        yield self._event("response.output_item.done", output_index=index, item=item)

    def _function_call(
        self, index: int, call: PlannedToolCall, done: list[dict[str, Any]]
    ) -> Iterator[Frame]:
        item_id = self.meta.id("fc", call.index)
        item: dict[str, Any] = {
            "id": item_id,
            "type": "function_call",
            "status": "in_progress",
            "arguments": "",
            "call_id": call.id or self.meta.id("call", 0, call.index),
            "name": call.name,
        }
        yield self._event("response.output_item.added", output_index=index, item=item)
        where: dict[str, Any] = {"item_id": item_id, "output_index": index}
        for fragment in call.fragments:
            yield self._event(
                "response.function_call_arguments.delta", True, **where, delta=fragment
            )
        args = call.arguments
        yield self._event(
            "response.function_call_arguments.done", **where, name=call.name, arguments=args
        )
        item = {**item, "status": "completed", "arguments": call.arguments}
        done.append(item)
        yield self._event("response.output_item.done", output_index=index, item=item)


def responses_usage(answer: Answer, meta: Meta) -> dict[str, Any]:
    """Return the Responses API ``usage`` object of an answer."""
    output = answer.tokens_per_choice
    return {
        "input_tokens": meta.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": len(answer.reasoning)},
        "total_tokens": meta.prompt_tokens + output,
    }


def response_object(answer: Answer, meta: Meta) -> dict[str, Any]:
    """Return the non-streamed ``response`` body of an answer."""
    return ResponsesWriter(answer, meta).final()
