"""The accumulated result of a stream: its final message per choice, built event by event.

Linear in the stream's size: text pieces are kept in lists and joined once,
when the result is asked for. :class:`Accumulator` is fed event by event (the
store's sink, the server, the terminal chat); :func:`operators.accumulate` is
the operator over it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

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
    is_content,
)

__all__ = ["Accumulator", "ChoiceResult", "Result", "Status", "ToolCallResult"]

Status = Literal["running", "finished", "error", "cancelled"]


class ToolCallResult(BaseModel):
    """One assembled tool call; ``arguments`` is the raw JSON text as sent."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    parsed: Any = None
    error: str | None = None


class ChoiceResult(BaseModel):
    """One choice's final message; a field never sent stays ``None``."""

    index: int
    content: str | None = None
    refusal: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCallResult] = []
    finish_reason: str | None = None


class Result(BaseModel):
    """The final message of a stream and how it ended."""

    stream_id: str | None = None
    model: str | None = None
    response_id: str | None = None
    status: Status = "running"
    choices: list[ChoiceResult] = []
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    cancel_reason: str | None = None
    first_token_at: float | None = None
    duration: float | None = None
    events: int = 0
    content_events: int = 0

    def assembled(self) -> dict[str, Any]:
        """The ``rxllm assemble`` shape: choices, usage and error only."""
        return {
            "choices": [
                {
                    "index": c.index,
                    "content": c.content,
                    "refusal": c.refusal,
                    "reasoning": c.reasoning,
                    "tool_calls": [
                        {"id": tc.id, "name": tc.name, "arguments": tc.arguments}
                        for tc in c.tool_calls
                    ],
                    "finish_reason": c.finish_reason,
                }
                for c in self.choices
            ],
            "usage": self.usage,
            "error": self.error,
        }


class _Call:
    __slots__ = ("error", "id", "index", "name", "parsed", "parts")

    def __init__(self, index: int, id: str | None, name: str | None) -> None:
        self.index = index
        self.id = id
        self.name = name
        self.parts: list[str] = []
        self.parsed: Any = None
        self.error: str | None = None


class _Choice:
    __slots__ = ("calls", "content", "finish_reason", "reasoning", "refusal")

    def __init__(self) -> None:
        self.content: list[str] | None = None
        self.refusal: list[str] | None = None
        self.reasoning: list[str] | None = None
        self.calls: dict[int, _Call] = {}
        self.finish_reason: str | None = None


class Accumulator:
    """Feed events with :meth:`add`; read the final message with :meth:`result`."""

    def __init__(self) -> None:
        self._choices: dict[int, _Choice] = {}
        self._result = Result()
        # Counted here, not on the pydantic model (its ``__setattr__`` costs more
        # than the rest of ``add``), and written into the result by ``result()``.
        self._events = 0
        self._content_events = 0
        self._first_token_at: float | None = None

    def _choice(self, index: int) -> _Choice:
        choice = self._choices.get(index)
        if choice is None:
            choice = self._choices[index] = _Choice()
        return choice

    def add(self, event: EventBase) -> None:
        """Take one event into account."""
        self._events += 1
        if type(event) is TextDelta:  # the commonest event, first
            if event.text:
                self._content_events += 1
                if self._first_token_at is None:
                    self._first_token_at = event.t
            c = self._choices.get(event.choice) or self._choice(event.choice)
            if c.content is None:
                c.content = []
            c.content.append(event.text)
            if self._result.stream_id is None:
                self._result.stream_id = event.stream_id
            return
        if type(event) is ToolCallDelta:  # the commonest event of a tool-call stream
            self._content_events += 1
            if self._first_token_at is None:
                self._first_token_at = event.t
            calls = (self._choices.get(event.choice) or self._choice(event.choice)).calls
            call = calls.get(event.index)
            if call is None:
                call = calls[event.index] = _Call(event.index, None, None)
            call.parts.append(event.arguments)
            if self._result.stream_id is None:
                self._result.stream_id = event.stream_id
            return
        r = self._result
        if is_content(event):
            self._content_events += 1
            if self._first_token_at is None:
                self._first_token_at = event.t
        if isinstance(event, TextDelta):
            c = self._choice(event.choice)
            if c.content is None:
                c.content = []
            c.content.append(event.text)
        elif isinstance(event, ToolCallDelta):
            calls = self._choice(event.choice).calls
            call = calls.get(event.index)
            if call is None:
                call = calls[event.index] = _Call(event.index, None, None)
            call.parts.append(event.arguments)
        elif isinstance(event, ReasoningDelta):
            c = self._choice(event.choice)
            if c.reasoning is None:
                c.reasoning = []
            c.reasoning.append(event.text)
        elif isinstance(event, RefusalDelta):
            c = self._choice(event.choice)
            if c.refusal is None:
                c.refusal = []
            c.refusal.append(event.text)
        elif isinstance(event, ToolCallStarted):
            calls = self._choice(event.choice).calls
            if event.index not in calls:
                calls[event.index] = _Call(event.index, event.id, event.name)
        elif isinstance(event, ToolCallCompleted | ToolCallInvalid):
            calls = self._choice(event.choice).calls
            call = calls.get(event.index)
            if call is None:
                call = calls[event.index] = _Call(event.index, event.id, event.name)
            if not call.parts and event.arguments:
                call.parts.append(event.arguments)  # completed without streamed fragments
            if isinstance(event, ToolCallCompleted):
                call.parsed = event.parsed
            else:
                call.error = event.error
        elif isinstance(event, ChoiceFinished):
            self._choice(event.choice).finish_reason = event.finish_reason
        elif isinstance(event, UsageReport):
            r.usage = event.usage
        elif isinstance(event, Started):
            r.stream_id, r.model, r.response_id = event.stream_id, event.model, event.response_id
            if event.usage is not None and r.usage is None:
                r.usage = event.usage  # what the start said, until the usage arrives
            self._choice(event.choice)
        elif isinstance(event, Finished):
            r.status, r.duration = "finished", event.t
        elif isinstance(event, StreamError):
            r.status, r.duration = "error", event.t
            r.error = event.model_dump(
                include={"kind", "message", "status", "code", "retryable", "after_first_token"}
            )
        elif isinstance(event, Cancelled):
            r.status, r.duration, r.cancel_reason = "cancelled", event.t, event.reason
        if r.stream_id is None:
            r.stream_id = event.stream_id

    def result(self) -> Result:
        """The final message so far (a new object each call; joins the text once)."""
        choices = [
            ChoiceResult(
                index=index,
                content=None if c.content is None else "".join(c.content),
                refusal=None if c.refusal is None else "".join(c.refusal),
                reasoning=None if c.reasoning is None else "".join(c.reasoning),
                tool_calls=[
                    ToolCallResult(
                        index=call.index,
                        id=call.id,
                        name=call.name,
                        arguments="".join(call.parts),
                        parsed=call.parsed,
                        error=call.error,
                    )
                    for call in sorted(c.calls.values(), key=lambda call: call.index)
                ],
                finish_reason=c.finish_reason,
            )
            for index, c in sorted(self._choices.items())
        ]
        update: dict[str, Any] = {"choices": choices}
        # Only what was counted, as when the counters were set on the model itself
        # (its ``model_fields_set`` stays the same).
        if self._events:
            update["events"] = self._events
        if self._content_events:
            update["content_events"] = self._content_events
            update["first_token_at"] = self._first_token_at
        return self._result.model_copy(update=update)
