"""The ``responses`` dialect: OpenAI Responses API stream events.

The ``openai`` SDK's ``responses.stream()`` and ``responses.create(stream=True)``
read a processed stream as if it came from ``POST /responses``:

* ``response.created`` and ``response.in_progress`` (the response with no
  output), then one output item after the other, each framed by
  ``response.output_item.added`` / ``response.output_item.done``: a
  ``reasoning`` item (``response.reasoning_summary_text.delta``...), a
  ``message`` item (``response.content_part.added``,
  ``response.output_text.delta``..., its ``.done`` events), one
  ``function_call`` item per tool call
  (``response.function_call_arguments.delta``... ``.done``);
* last ``response.completed`` (or ``response.incomplete`` for a ``length``
  or ``content_filter`` finish) with the whole response: every output item
  as done, the usage in Responses names, the status;
* ``error`` ends with an ``error`` event then ``response.failed``;
  ``cancelled`` ends with nothing.

Every event has ``sequence_number`` rising from 0 and ``id: <seq>`` of the
event it came from. :meth:`ResponsesDialect.response` is the response so far:
the body of a non-streamed answer.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic_core import to_json

from pipeline.core.events import (
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
    StreamError,
    TextDelta,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallInvalid,
    ToolCallStarted,
    UsageReport,
)
from sinks.dialects.dialect_base import Dialect

__all__ = ["ResponsesDialect", "responses_usage"]

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
_ITEM_KINDS = {"text": "message", "reasoning": "reasoning", "tool_call": "function_call"}


def responses_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Usage in Responses names, from any API's (Responses' own kept as they are)."""
    if "input_tokens_details" in usage:
        return usage
    if "cache_read_input_tokens" in usage or (
        "input_tokens" in usage and "prompt_tokens" not in usage
    ):  # Anthropic: input_tokens leaves out the cached ones
        cached = usage.get("cache_read_input_tokens") or 0
        written = usage.get("cache_creation_input_tokens") or 0
        prompt = (usage.get("input_tokens") or 0) + cached + written
        output = usage.get("output_tokens") or 0
        return {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + output,
        }
    prompt = usage.get("prompt_tokens") or 0
    output = usage.get("completion_tokens") or 0
    details = usage.get("prompt_tokens_details") or {}
    out_details = usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": details.get("cached_tokens") or 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": out_details.get("reasoning_tokens") or 0},
        "total_tokens": usage.get("total_tokens") or prompt + output,
    }


class _Item:
    __slots__ = ("annotations", "index", "item", "kind", "parts")

    def __init__(self, index: int, kind: str, item: dict[str, Any]) -> None:
        self.index = index
        self.kind = kind  # reasoning | message | refusal | function_call
        self.item = item
        self.parts: list[str] = []
        self.annotations: list[dict[str, Any]] = []


class ResponsesDialect(Dialect):
    """Events as Responses API stream events; see the module docstring.

    ``request`` is the request's body: the response echoes its settings
    (``instructions``, ``tools``, ``temperature``...) as the API does.
    """

    name = "responses"

    def __init__(
        self,
        *,
        request: dict[str, Any] | None = None,
        model: str | None = None,
        response_id: str | None = None,
        created: int | None = None,
    ) -> None:
        super().__init__()
        self.request = request or {}
        self.model = model
        self.response_id = response_id
        self.created = int(time.time()) if created is None else created
        self._seq = 0
        self._started = False
        self._open: _Item | None = None
        self._items: list[_Item] = []
        self._tools: dict[int, _Item] = {}
        self._usage: dict[str, Any] | None = None
        self._finish: str | None = None
        self._status = "in_progress"
        self._error: dict[str, Any] | None = None
        self._api = "unknown"  # the upstream's API (the Started event's)

    def body(self) -> dict[str, Any]:
        """The body of a non-streamed answer: :meth:`response` once the stream has ended."""
        return self.response()

    def response(self) -> dict[str, Any]:
        """The response so far: the non-streamed body, or ``response.completed``'s."""
        request = self.request
        finish = self._finish
        return {
            "id": self._id(),
            "object": "response",
            "created_at": self.created,
            "status": self._status,
            "background": False,
            "error": self._error,
            "incomplete_details": (
                {"reason": _INCOMPLETE.get(finish or "", finish)}
                if self._status == "incomplete"
                else None
            ),
            "instructions": request.get("instructions"),
            "max_output_tokens": request.get("max_output_tokens"),
            "metadata": request.get("metadata") or {},
            "model": self.model or request.get("model") or "",
            "output": [item.item for item in self._items],
            "parallel_tool_calls": request.get("parallel_tool_calls", True),
            "previous_response_id": request.get("previous_response_id"),
            "reasoning": request.get("reasoning") or {"effort": None, "summary": None},
            "store": request.get("store", False),
            "temperature": request.get("temperature", 1.0),
            "text": request.get("text") or {"format": {"type": "text"}},
            "tool_choice": request.get("tool_choice", "auto"),
            "tools": request.get("tools") or [],
            "top_p": request.get("top_p", 1.0),
            "truncation": request.get("truncation", "disabled"),
            "usage": None if self._usage is None else responses_usage(self._usage),
            "user": request.get("user"),
        }

    def _id(self) -> str:
        return self.response_id or "resp_rxllm"

    # -- encoding -----------------------------------------------------------------

    def encode(self, event: EventBase) -> bytes:
        if self.done:
            return b""
        seq = event.seq
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            out = self._ensure(seq, "message")
            item = self._open
            assert item is not None
            item.parts.append(event.text)
            where = self._where(item)
            return out + self._event(
                seq,
                "response.output_text.delta",
                **where,
                content_index=0,
                delta=event.text,
                logprobs=[],
            )
        if isinstance(event, ToolCallDelta):
            out, item = self._call(seq, event.index, None, None)
            return out + self._arguments(seq, item, event.arguments)
        if isinstance(event, ReasoningDelta):
            if not event.text:
                return b""
            out = self._ensure(seq, "reasoning")
            item = self._open
            assert item is not None
            out += self._summary_part(seq, item)
            item.parts.append(event.text)
            return out + self._event(
                seq,
                "response.reasoning_summary_text.delta",
                **self._where(item),
                summary_index=0,
                delta=event.text,
            )
        if isinstance(event, BlockStarted):
            if self._api != "responses" or event.block is None:
                return b""  # another API's blocks: items open as their content arrives
            kind = _ITEM_KINDS.get(event.kind)
            if kind is None:
                return self._whole(seq, dict(event.block))
            return self._open_item(seq, kind, event.block)
        if isinstance(event, Citation):
            if self._api != "responses":
                return b""  # another API's citation has no Responses annotation shape
            out = self._ensure(seq, "message")
            item = self._open
            assert item is not None
            item.annotations.append(event.citation)
            return out + self._event(
                seq,
                "response.output_text.annotation.added",
                **self._where(item),
                content_index=0,
                annotation_index=len(item.annotations) - 1,
                annotation=event.citation,
            )
        if isinstance(event, ReasoningSignature):
            for item in reversed(self._items):
                if item.kind == "reasoning":
                    item.item["encrypted_content"] = event.signature
                    break
            return b""
        if isinstance(event, Started):
            self._api = event.api
            if self.model is None and event.model:
                self.model = event.model
            if self.response_id is None:
                rid = event.response_id
                self.response_id = (
                    rid if rid and event.api == "responses" else f"resp_{event.stream_id}"
                )
            return self._start(seq)
        if isinstance(event, ToolCallStarted):
            out, _ = self._call(seq, event.index, event.id, event.name)
            return out
        if isinstance(event, ToolCallCompleted | ToolCallInvalid):
            out, item = self._call(seq, event.index, event.id, event.name)
            if item.parts or not event.arguments:
                return out
            return out + self._arguments(seq, item, event.arguments)
        if isinstance(event, RefusalDelta):
            if not event.text:
                return b""
            out = self._ensure(seq, "refusal")  # a message whose part is a refusal
            item = self._open
            assert item is not None
            item.parts.append(event.text)
            return out + self._event(
                seq,
                "response.refusal.delta",
                **self._where(item),
                content_index=0,
                delta=event.text,
            )
        if isinstance(event, UsageReport):
            self._usage = dict(event.usage)
            return b""
        if isinstance(event, ChoiceFinished):
            if event.choice == 0:
                self._finish = event.finish_reason
            return b""
        if isinstance(event, Finished):
            self.done = True
            if event.finish_reason is not None:
                self._finish = event.finish_reason
            out = self._start(seq) + self._close(seq)
            self._status = "incomplete" if self._finish in _INCOMPLETE else "completed"
            kind = "response.completed" if self._status == "completed" else "response.incomplete"
            return out + self._event(seq, kind, response=self.response())
        if isinstance(event, StreamError):
            self.done = True
            out = self._start(seq)
            code = event.code or event.kind
            out += self._event(seq, "error", code=code, message=event.message, param=None)
            self._status = "failed"
            self._error = {"code": code, "message": event.message}
            return out + self._event(seq, "response.failed", response=self.response())
        if isinstance(event, Cancelled):
            self.done = True
        return b""

    def _event(self, seq: int, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, **fields, "sequence_number": self._seq}
        self._seq += 1
        return b"id: %d\nevent: %b\ndata: %b\n\n" % (seq, kind.encode(), to_json(payload))

    def _where(self, item: _Item) -> dict[str, Any]:
        return {"item_id": item.item.get("id"), "output_index": item.index}

    def _arguments(self, seq: int, item: _Item, arguments: str) -> bytes:
        """A piece of a function call's arguments: kept for the item, written as a delta."""
        item.parts.append(arguments)
        return self._event(
            seq, "response.function_call_arguments.delta", **self._where(item), delta=arguments
        )

    def _start(self, seq: int) -> bytes:
        if self._started:
            return b""
        self._started = True
        response = self.response()
        return self._event(seq, "response.created", response=response) + self._event(
            seq, "response.in_progress", response=response
        )

    def _ensure(self, seq: int, kind: str) -> bytes:
        """Open a ``message`` or ``reasoning`` item unless the open one is of that kind."""
        if self._open is not None and self._open.kind == kind:
            return b""
        return self._open_item(seq, kind, None)

    def _open_item(self, seq: int, kind: str, given: dict[str, Any] | None) -> bytes:
        """Close the open item; open one of ``kind``: ``given`` (the upstream's) or made up."""
        out = self._start(seq) + self._close(seq)
        index = len(self._items)
        suffix = f"{self._id().removeprefix('resp_')}_{index}"
        item: dict[str, Any]
        if given is not None:
            item = dict(given)
        elif kind in ("message", "refusal"):
            item = {
                "id": f"msg_{suffix}",
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
        elif kind == "reasoning":
            item = {"id": f"rs_{suffix}", "type": "reasoning", "summary": []}
        else:
            item = {
                "id": f"fc_{suffix}",
                "type": "function_call",
                "status": "in_progress",
                "arguments": "",
                "call_id": f"call_{suffix}",
                "name": "",
            }
        opened = _Item(index, kind, item)
        self._items.append(opened)
        self._open = opened
        out += self._event(seq, "response.output_item.added", output_index=index, item=dict(item))
        if kind == "message":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += self._event(
                seq,
                "response.content_part.added",
                **self._where(opened),
                content_index=0,
                part=part,
            )
        elif kind == "refusal":
            part = {"type": "refusal", "refusal": ""}
            out += self._event(
                seq,
                "response.content_part.added",
                **self._where(opened),
                content_index=0,
                part=part,
            )
        # a reasoning item's summary part opens with its first text (it may have none)
        return out

    def _summary_part(self, seq: int, item: _Item) -> bytes:
        if item.parts:
            return b""
        part = {"type": "summary_text", "text": ""}
        return self._event(
            seq,
            "response.reasoning_summary_part.added",
            **self._where(item),
            summary_index=0,
            part=part,
        )

    def _call(
        self, seq: int, index: int, call_id: str | None, name: str | None
    ) -> tuple[bytes, _Item]:
        """The item of tool call ``index``: one opened for it already, or a new one."""
        found = self._tools.get(index)
        if found is not None:
            return b"", found
        out = b""
        opened = self._open
        if opened is None or opened.kind != "function_call" or opened in self._tools.values():
            suffix = f"{self._id().removeprefix('resp_')}_{len(self._items)}"
            given = {
                "id": f"fc_{suffix}",
                "type": "function_call",
                "status": "in_progress",
                "arguments": "",
                "call_id": call_id or f"call_{suffix}",
                "name": name or "",
            }
            out = self._open_item(seq, "function_call", given)
            opened = self._open
            assert opened is not None
        self._tools[index] = opened
        return out, opened

    def _whole(self, seq: int, item: dict[str, Any]) -> bytes:
        """An item no other event carries (a built-in tool's call), added and done at once."""
        out = self._start(seq) + self._close(seq)
        index = len(self._items)
        self._items.append(_Item(index, str(item.get("type")), item))
        out += self._event(seq, "response.output_item.added", output_index=index, item=item)
        return out + self._event(seq, "response.output_item.done", output_index=index, item=item)

    def _close(self, seq: int) -> bytes:
        item, self._open = self._open, None
        if item is None:
            return b""
        where = self._where(item)
        text = "".join(item.parts)
        out = b""
        if item.kind == "message":
            part = {
                "type": "output_text",
                "text": text,
                "annotations": item.annotations,
                "logprobs": [],
            }
            out += self._event(
                seq, "response.output_text.done", **where, content_index=0, text=text, logprobs=[]
            )
            out += self._event(
                seq, "response.content_part.done", **where, content_index=0, part=part
            )
            item.item = {**item.item, "status": "completed", "content": [part]}
        elif item.kind == "refusal":
            part = {"type": "refusal", "refusal": text}
            out += self._event(seq, "response.refusal.done", **where, content_index=0, refusal=text)
            out += self._event(
                seq, "response.content_part.done", **where, content_index=0, part=part
            )
            item.item = {**item.item, "status": "completed", "content": [part]}
        elif item.kind == "reasoning":
            if item.parts:
                part = {"type": "summary_text", "text": text}
                out += self._event(
                    seq, "response.reasoning_summary_text.done", **where, summary_index=0, text=text
                )
                out += self._event(
                    seq, "response.reasoning_summary_part.done", **where, summary_index=0, part=part
                )
                item.item = {**item.item, "summary": [part]}
        else:
            name = item.item.get("name")
            out += self._event(
                seq, "response.function_call_arguments.done", **where, name=name, arguments=text
            )
            item.item = {**item.item, "status": "completed", "arguments": text}
        return out + self._event(
            seq, "response.output_item.done", output_index=item.index, item=item.item
        )
