"""Terminal rendering of one streamed answer (``rxllm chat``)."""

from __future__ import annotations

import os
from typing import TextIO

from openai import AsyncOpenAI

from pipeline.core.events import (
    Cancelled,
    Finished,
    ReasoningDelta,
    RefusalDelta,
    StreamError,
    TextDelta,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallInvalid,
    ToolCallStarted,
)
from pipeline.core.result import Accumulator
from pipeline.runtime import sources
from pipeline.runtime.api_keys import BASE_URL_VAR, client_key, upstream_in_env
from pipeline.runtime.multicast import StreamRun
from pipeline.runtime.standard_chain import llm_stream

__all__ = ["client_from_env", "render_chat", "summary_line"]

_DIM, _RESET = "\x1b[2m", "\x1b[0m"


def client_from_env() -> AsyncOpenAI | None:
    """The client ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` describe; ``None`` if neither is set.

    A base URL without a key is a local server that wants none (``rxllm serve``,
    a model server of one's own): a placeholder key is sent.
    """
    if not upstream_in_env():
        return None
    return AsyncOpenAI(base_url=os.environ.get(BASE_URL_VAR) or None, api_key=client_key(None))


async def render_chat(
    client: AsyncOpenAI, prompt: str, model: str, use_responses: bool, out: TextIO
) -> int:
    """Stream the answer to ``prompt`` into ``out``; return 0, or 1 on an error."""
    if use_responses:
        source = sources.responses(client, model=model, input=prompt)
    else:
        source = sources.chat_completions(
            client,
            model=model,
            messages=[{"role": "user", "content": prompt}],
            stream_options={"include_usage": True},
        )
    run = StreamRun(llm_stream(source), errors_mapped=True)
    acc = Accumulator()
    run.subscribe(acc.add)
    events = run.iterate()
    color = out.isatty()
    dim, reset = (_DIM, _RESET) if color else ("", "")
    run.start()
    try:
        async for event in events:
            if isinstance(event, TextDelta | RefusalDelta):
                out.write(event.text)
            elif isinstance(event, ReasoningDelta):
                out.write(f"{dim}{event.text}{reset}")
            elif isinstance(event, ToolCallStarted):
                out.write(f"\n[tool call {event.name}] ")
            elif isinstance(event, ToolCallDelta):
                out.write(event.arguments)
            elif isinstance(event, ToolCallCompleted):
                out.write(f"\n[tool call {event.name} complete]\n")
            elif isinstance(event, ToolCallInvalid):
                out.write(f"\n[tool call {event.name} invalid: {event.error}]\n")
            elif isinstance(event, StreamError):
                out.write(f"\n[error: {event.kind}: {event.message}]\n")
            elif isinstance(event, Cancelled):
                out.write(f"\n[cancelled: {event.reason}]\n")
            out.flush()
    finally:
        run.cancel("interrupted")
    result = acc.result()
    out.write("\n" + summary_line(acc) + "\n")
    return 0 if isinstance(run.terminal, Finished) or result.status == "finished" else 1


def summary_line(acc: Accumulator) -> str:
    """``time to first token 120 ms · 42.0 tokens/s · finish stop``."""
    r = acc.result()
    parts: list[str] = []
    if r.first_token_at is not None:
        parts.append(f"time to first token {r.first_token_at * 1000:.0f} ms")
        usage = r.usage or {}
        tokens = usage.get("completion_tokens") or usage.get("output_tokens") or r.content_events
        generating = (r.duration or 0.0) - r.first_token_at
        if tokens and generating > 0:
            parts.append(f"{tokens / generating:.1f} tokens/s")
    finish = r.choices[0].finish_reason if r.choices else None
    parts.append(f"finish {finish or r.status}")
    return " · ".join(parts)
