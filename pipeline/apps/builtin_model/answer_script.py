"""Scripted answers and faults of the mock model server.

A :class:`MockScript` says what the mock answers (text, reasoning, tool
calls, ``n`` choices, finish reason), how fast (``interval`` between tokens,
``stall``) and which faults it injects (an HTTP error status, a dropped
connection, an error event or a malformed chunk after N tokens, ``fail_first``).

A request picks its script with ``extra_body={"mock": {...}}``; its fields
override the server's default script field by field::

    extra_body={"mock": {"text": "Hello there", "interval": 0.01}}
    extra_body={"mock": {"tool_calls": [{"name": "f", "arguments": '{"x": 1}'}]}}
    extra_body={"mock": {"status": 429, "retry_after": 0.01}}
    extra_body={"mock": {"drop_after": 3}}
    extra_body={"mock": {"status": 503, "fail_first": 2, "fault_key": "t1"}}
    extra_body={"mock": {"text": "a b c", "drop_after": 2, "fail_first": 1, "fault_key": "t2"}}

The last one cuts the first request after two tokens; sent again with the
answer so far at the start of the assistant's turn, it continues from there.

A *token* is one content-bearing chunk: a piece of text, of reasoning or of a
tool call's arguments (each choice's counted separately). "After N tokens"
means once N tokens have been sent (0 = before the first).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.apps.builtin_model.tool_use import ToolPlan

__all__ = [
    "FAULT_FIELDS",
    "Answer",
    "FinishReason",
    "MockScript",
    "PlannedToolCall",
    "ToolCall",
    "count_words",
    "default_answer",
    "prompt_text",
    "split_tokens",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]

FAULT_FIELDS: frozenset[str] = frozenset(
    {"status", "drop_after", "error_after", "malformed_after", "stall"}
)
"""Fields that inject a fault; ``fail_first`` gates all of them."""

_TOKEN = re.compile(r"\s*\S+")


def split_tokens(text: str) -> list[str]:
    """Split ``text`` into word tokens, each with its leading whitespace.

    ``"".join(split_tokens(text)) == text`` always holds: trailing whitespace
    joins the last token.
    """
    tokens = _TOKEN.findall(text)
    rest = len(text) - sum(map(len, tokens))
    if rest:
        if tokens:
            tokens[-1] += text[-rest:]
        else:
            tokens.append(text)
    return tokens


class ToolCall(BaseModel):
    """A scripted tool call: ``arguments`` is JSON text, or its fragments as a list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    arguments: str | list[str] = "{}"
    id: str | None = None


class MockScript(BaseModel):
    """What the mock answers, how fast, and which faults it injects.

    Answer: ``text`` (a string split into word tokens, or a list of tokens),
    ``reasoning`` (same), ``tool_calls`` (their arguments streamed in
    ``fragment_size`` pieces), ``n`` (default: the request's ``n``),
    ``finish_reason`` (default ``tool_calls`` or ``stop``). With no text and
    no tool calls scripted, the mock uses the request's tools as a model
    would (``use_tools``, on by default; see
    :mod:`pipeline.apps.builtin_model.tool_use`), else makes up a friendly
    answer from the last user message.

    Timing: ``interval`` seconds between tokens; ``stall`` seconds of silence
    once ``stall_after`` tokens are sent (0: before the first token).

    Faults: ``status`` (an HTTP error before the stream, with an OpenAI-shaped
    body, ``Retry-After`` from ``retry_after``, 1 s by default for 429);
    ``drop_after`` (close the TCP connection mid-body; with ``drop_reset``
    send a RST); ``error_after`` (an error event); ``malformed_after`` (one
    chunk of truncated JSON, then the stream goes on); ``error_message`` and
    ``error_code`` override the error's text. ``fail_first=K`` applies the
    faults only to the first K requests with the same ``fault_key`` (no
    fault given: they fail with 503).

    Continuing: ``continue_overlap`` is how many words of the answer so far
    the mock says again when asked to continue by an instruction (see
    :mod:`pipeline.apps.builtin_model.prefill`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str | list[str] | None = None
    reasoning: str | list[str] | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    fragment_size: int = Field(default=8, ge=1)
    n: int | None = Field(default=None, ge=1, le=16)
    finish_reason: FinishReason | None = None

    interval: float = Field(default=0.0, ge=0.0)
    stall: float = Field(default=0.0, ge=0.0)
    stall_after: int = Field(default=0, ge=0)

    status: int | None = Field(default=None, ge=400, le=599)
    retry_after: float | None = Field(default=None, ge=0.0)
    error_message: str | None = None
    error_code: str | None = None
    drop_after: int | None = Field(default=None, ge=0)
    drop_reset: bool = False
    error_after: int | None = Field(default=None, ge=0)
    malformed_after: int | None = Field(default=None, ge=0)
    fail_first: int = Field(default=0, ge=0)
    fault_key: str = "default"
    use_tools: bool = True

    continue_overlap: int = Field(default=0, ge=0)

    def merged(self, override: Mapping[str, Any]) -> MockScript:
        """Return this script with the fields of ``override`` replacing its own.

        Raises ``pydantic.ValidationError`` if ``override`` is not a valid script.
        """
        return MockScript.model_validate({**self.model_dump(exclude_unset=True), **override})

    def without_faults(self) -> MockScript:
        """Return this script with every fault switched off (timing kept)."""
        return self.model_copy(
            update={
                "status": None,
                "drop_after": None,
                "error_after": None,
                "malformed_after": None,
                "stall": 0.0,
                "fail_first": 0,
            }
        )

    def failure_status(self) -> int | None:
        """Return the HTTP status to fail with before streaming, if any."""
        if self.status is not None:
            return self.status
        if self.fail_first and not self.has_stream_fault():
            return 503
        return None

    def has_stream_fault(self) -> bool:
        """Return whether a fault is set that acts during the stream."""
        return self.stall > 0 or any(
            value is not None for value in (self.drop_after, self.error_after, self.malformed_after)
        )

    def answer(
        self,
        prompt: str | None,
        n: int | None = None,
        *,
        model: str | None = None,
        plan: ToolPlan | None = None,
    ) -> Answer:
        """Resolve this script into the :class:`Answer` to send for ``prompt``.

        With neither ``text`` nor ``tool_calls`` scripted, ``plan`` (what
        :func:`~pipeline.apps.builtin_model.tool_use.plan_tools` made of the
        request's tools) decides, when ``use_tools`` is on; else the default
        answer, which names ``model``.
        """
        text: list[str] | None
        scripted = self.tool_calls
        if isinstance(self.text, list):
            text = list(self.text)
        elif self.text is not None:
            text = split_tokens(self.text)
        elif self.tool_calls:
            text = None
        elif plan is not None and self.use_tools and plan.calls:
            text = None
            scripted = [ToolCall(name=name, arguments=args) for name, args in plan.calls]
        elif plan is not None and self.use_tools and plan.text is not None:
            text = split_tokens(plan.text)
        else:
            text = split_tokens(default_answer(prompt, model))
        reasoning = (
            list(self.reasoning)
            if isinstance(self.reasoning, list)
            else split_tokens(self.reasoning or "")
        )
        calls = tuple(
            PlannedToolCall(
                index=i,
                id=call.id,
                name=call.name,
                fragments=tuple(
                    call.arguments
                    if isinstance(call.arguments, list)
                    else _fragments(call.arguments, self.fragment_size)
                ),
            )
            for i, call in enumerate(scripted)
        )
        finish = self.finish_reason or ("tool_calls" if calls else "stop")
        return Answer(
            text=tuple(text) if text is not None else None,
            reasoning=tuple(reasoning),
            tool_calls=calls,
            n=self.n or n or 1,
            finish_reason=finish,
        )


@dataclass(frozen=True, slots=True)
class PlannedToolCall:
    """A tool call ready to stream: ``id`` None means the mock makes one up."""

    index: int
    id: str | None
    name: str
    fragments: tuple[str, ...]

    @property
    def arguments(self) -> str:
        """The whole arguments text."""
        return "".join(self.fragments)


@dataclass(frozen=True, slots=True)
class Answer:
    """What one choice says, in tokens; every choice of ``n`` says the same."""

    text: tuple[str, ...] | None
    reasoning: tuple[str, ...]
    tool_calls: tuple[PlannedToolCall, ...]
    n: int
    finish_reason: FinishReason

    @property
    def tokens_per_choice(self) -> int:
        """How many tokens one choice streams (text, reasoning and fragments)."""
        return (
            len(self.text or ())
            + len(self.reasoning)
            + sum(len(call.fragments) for call in self.tool_calls)
        )


def _fragments(arguments: str, size: int) -> list[str]:
    return [arguments[i : i + size] for i in range(0, len(arguments), size)] or [""]


def default_answer(prompt: str | None, model: str | None = None) -> str:
    """Make up a deterministic, friendly answer that quotes ``prompt`` and names ``model``."""
    words = (prompt or "").split()
    if not words:
        opening = "Hello! You sent no question, so here is a short demo answer."
    else:
        quoted = " ".join(words[:10]) + (" ..." if len(words) > 10 else "")
        opening = f'Hello! You asked: "{quoted}".'
    return (
        f"{opening} I am rxllm's built-in model, answering as {model or 'mock-model'}."
        " Each word of this reply arrives as its own streamed token, so you can"
        " watch deltas and timing flow through the pipeline. Offer me tools and"
        " I call them. For a real model, start rxllm with --upstream URL."
    )


def prompt_text(body: Mapping[str, Any]) -> str | None:
    """Return the text of the last user message of a chat or Responses request."""
    messages = body.get("messages")
    if messages is None:
        messages = body.get("input")
    if isinstance(messages, str):
        return messages
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return None


def count_words(body: Mapping[str, Any]) -> int:
    """Roughly count the prompt's tokens: the words of every message (at least 1)."""
    messages = body.get("messages", body.get("input"))
    if isinstance(messages, str):
        return max(1, len(messages.split()))
    total = 0
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, dict):
            total += len((_content_text(message.get("content")) or "").split())
    return max(1, total)


def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return " ".join(parts)
    return None
