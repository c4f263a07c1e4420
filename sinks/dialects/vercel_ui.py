"""The ``vercel`` dialect: the Vercel AI SDK UI message stream protocol, v1.

A Next.js front end with ``useChat`` (AI SDK 5 and later) reads it. The
response carries ``x-vercel-ai-ui-message-stream: v1``; every frame is
``data: <part JSON>`` (with ``id: <seq>``), the stream ends with
``data: [DONE]``. Parts, with the field names of the SDK's
``uiMessageChunkSchema`` (strict objects: no other key is sent)::

    started               {"type":"start","messageId"}, {"type":"start-step"}
    text, refusal         {"type":"text-start","id"}, {"type":"text-delta","id","delta"}
    reasoning             {"type":"reasoning-start","id"}, {"type":"reasoning-delta",...}
                          (a text or reasoning part ends with "-end" when another begins)
    tool_call.started     {"type":"tool-input-start","toolCallId","toolName"}
    tool_call.delta       {"type":"tool-input-delta","toolCallId","inputTextDelta"}
    tool_call.completed   {"type":"tool-input-available","toolCallId","toolName","input"}
    tool_call.invalid     {"type":"tool-input-error","toolCallId","toolName","input","errorText"}
    finished              {"type":"finish-step"}, {"type":"finish"}, [DONE]
    error                 {"type":"error","errorText"}, [DONE]
    cancelled             {"type":"abort"}, [DONE]

Where it knowingly differs: a UI message is one message, so only choice 0
is sent (other choices of an ``n`` > 1 request are dropped); a refusal is
sent as text (the protocol has no refusal part); ``usage`` and
``choice.finished`` are not sent (``finish`` takes no ``finishReason`` in AI
SDK 5, whose strict schema would reject it). A stream read from its middle
(a resume) begins with ``start`` anyway, so the client sees a valid stream;
the AI SDK's own resume asks for the whole stream again (resume ``after``
nothing).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pydantic_core import to_json

from pipeline.core.events import (
    Cancelled,
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
)
from sinks.dialects.dialect_base import Dialect, data_frame

__all__ = ["VercelDialect"]

_DONE = b"[DONE]"


class VercelDialect(Dialect):
    """Events as AI SDK UI message stream parts; see the module docstring.

    ``message_id`` is the ``start`` part's ``messageId`` (default
    ``msg-<stream_id>``).

    Example::

        SSEResponse(events, dialect=VercelDialect())   # for useChat
    """

    name = "vercel"
    headers: Mapping[str, str] = MappingProxyType({"x-vercel-ai-ui-message-stream": "v1"})

    def __init__(self, *, message_id: str | None = None) -> None:
        super().__init__()
        self.message_id = message_id
        self._started = False
        self._open: tuple[str, str] | None = None  # ("text" | "reasoning", part id)
        self._calls: dict[int, tuple[str, str]] = {}  # index -> (toolCallId, toolName)

    def encode(self, event: EventBase) -> bytes:
        if self.done or event.choice != 0:
            return b""
        seq = event.seq
        parts: list[dict[str, Any] | bytes] = []
        if not self._started:
            self._started = True
            message_id = self.message_id or f"msg-{event.stream_id}"
            parts += [{"type": "start", "messageId": message_id}, {"type": "start-step"}]
        if isinstance(event, TextDelta | RefusalDelta | ReasoningDelta):
            if event.text:
                kind = "reasoning" if isinstance(event, ReasoningDelta) else "text"
                part_id = self._part(kind, seq, parts)
                parts.append({"type": f"{kind}-delta", "id": part_id, "delta": event.text})
        elif isinstance(event, ToolCallStarted):
            self._end_part(parts)
            self._start_call(event.index, event.id, event.name, parts)
        elif isinstance(event, ToolCallDelta):
            call_id, _ = self._call(event.index, None, None, parts)
            delta = {"type": "tool-input-delta", "toolCallId": call_id}
            parts.append({**delta, "inputTextDelta": event.arguments})
        elif isinstance(event, ToolCallCompleted):
            self._end_part(parts)
            call_id, name = self._call(event.index, event.id, event.name, parts)
            parts.append(
                {
                    "type": "tool-input-available",
                    "toolCallId": call_id,
                    "toolName": name,
                    "input": _input(event),
                }
            )
        elif isinstance(event, ToolCallInvalid):
            self._end_part(parts)
            call_id, name = self._call(event.index, event.id, event.name, parts)
            parts.append(
                {
                    "type": "tool-input-error",
                    "toolCallId": call_id,
                    "toolName": name,
                    "input": event.arguments,
                    "errorText": event.error,
                }
            )
        elif isinstance(event, Finished):
            self._end_part(parts)
            parts += [{"type": "finish-step"}, {"type": "finish"}, _DONE]
        elif isinstance(event, StreamError):
            self._end_part(parts)
            parts += [{"type": "error", "errorText": event.message}, _DONE]
        elif isinstance(event, Cancelled):
            self._end_part(parts)
            parts += [{"type": "abort"}, _DONE]
        elif not isinstance(event, Started):
            pass  # usage, choice.finished: no part
        if isinstance(event, Finished | StreamError | Cancelled):
            self.done = True
        return b"".join(
            data_frame(seq, part if isinstance(part, bytes) else to_json(part)) for part in parts
        )

    def close(self) -> bytes:
        if self.done:
            return b""
        self.done = True
        parts: list[dict[str, Any] | bytes] = []
        if self._started:
            self._end_part(parts)
            parts.append({"type": "abort"})
        parts.append(_DONE)
        return b"".join(
            data_frame(None, part if isinstance(part, bytes) else to_json(part)) for part in parts
        )

    def _part(self, kind: str, seq: int, parts: list[dict[str, Any] | bytes]) -> str:
        """The id of the open ``kind`` part, opening one (and ending another) if needed."""
        if self._open is not None and self._open[0] == kind:
            return self._open[1]
        self._end_part(parts)
        part_id = f"{kind}-{seq}"
        self._open = (kind, part_id)
        parts.append({"type": f"{kind}-start", "id": part_id})
        return part_id

    def _end_part(self, parts: list[dict[str, Any] | bytes]) -> None:
        if self._open is not None:
            kind, part_id = self._open
            parts.append({"type": f"{kind}-end", "id": part_id})
            self._open = None

    def _start_call(
        self, index: int, id: str | None, name: str | None, parts: list[dict[str, Any] | bytes]
    ) -> tuple[str, str]:
        call = self._calls[index] = (id or f"call-{index}", name or "")
        parts.append({"type": "tool-input-start", "toolCallId": call[0], "toolName": call[1]})
        return call

    def _call(
        self, index: int, id: str | None, name: str | None, parts: list[dict[str, Any] | bytes]
    ) -> tuple[str, str]:
        """The call at ``index``; a call never started is started now (the SDK needs it)."""
        call = self._calls.get(index)
        if call is None:
            self._end_part(parts)
            call = self._start_call(index, id, name, parts)
        return call


def _input(event: ToolCallCompleted) -> Any:
    if event.parsed is not None:
        return event.parsed
    try:
        return json.loads(event.arguments) if event.arguments else {}
    except ValueError:
        return event.arguments
