"""Streams we write ourselves: chunk builders and a runner for them."""

from __future__ import annotations

import json
from typing import Any

from pipeline.core.events import EventBase
from pipeline.core.result import Accumulator, Result
from pipeline.runtime.sources import sse_body
from pipeline.runtime.standard_chain import llm_stream


def chunk(
    delta: dict[str, Any] | None = None,
    *,
    index: int = 0,
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
    choices: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A Chat Completions chunk with one choice (or the given ``choices``)."""
    if choices is None:
        choices = [{"index": index, "delta": delta or {}, "finish_reason": finish}]
    body: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "test-model",
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    body.update(extra)
    return body


def tool(
    index: int | None,
    args: str | None = None,
    *,
    id: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """One tool call delta."""
    call: dict[str, Any] = {"function": {"arguments": args}}
    if index is not None:
        call["index"] = index
    if id is not None:
        call["id"] = id
        call["type"] = "function"
    if name is not None:
        call["function"]["name"] = name
    return call


def sse(*items: dict[str, Any] | str, done: bool = True) -> bytes:
    """An SSE body: dicts become ``data:`` JSON, strings are written as they are."""
    parts = [item if isinstance(item, str) else f"data: {json.dumps(item)}\n\n" for item in items]
    if done:
        parts.append("data: [DONE]\n\n")
    return "".join(parts).encode()


TEXT_STREAM = sse(
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hello"}),
    chunk({"content": ", world"}),
    chunk({}, finish="stop"),
    chunk(choices=[], usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}),
)


def run_body(body: bytes, **kwargs: Any) -> tuple[Result, list[EventBase]]:
    """Run a body through the standard chain; return the result and the events."""
    acc = Accumulator()
    events: list[EventBase] = []

    def on_next(event: EventBase) -> None:
        events.append(event)
        acc.add(event)

    llm_stream(sse_body(body), **kwargs).subscribe(on_next)
    return acc.result(), events
