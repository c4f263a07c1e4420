"""The measured clients: one way of consuming one stream per function.

Each function makes one streamed request to the built-in model and consumes
it the way its library is meant to be used, and returns how many content
chunks it saw (checked against what was asked, so a broken row can't look
fast). The worker times them with ``time.process_time()``: all the CPU the
client process spent, HTTP included.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench.common import (
    CALL_ARGS,
    FRAGMENT,
    MESSAGES,
    MODEL,
    Measured,
    order_tools,
    text_script,
    tool_chunks,
    tool_script,
)


@dataclass
class Ctx:
    """What a client function needs: where the model is and what to ask it."""

    base_url: str
    chunks: int
    tools_stream: bool
    state: dict[str, Any]

    @property
    def script(self) -> dict[str, Any]:
        return tool_script(self.chunks) if self.tools_stream else text_script(self.chunks)

    @property
    def expected(self) -> int:
        return tool_chunks(self.chunks) if self.tools_stream else self.chunks

    def tool_params(self) -> dict[str, Any]:
        return {"tools": order_tools()} if self.tools_stream else {}


Client = Callable[[Ctx], Awaitable[int]]


def _openai(ctx: Ctx) -> Any:
    client = ctx.state.get("openai")
    if client is None:
        from openai import AsyncOpenAI

        client = ctx.state["openai"] = AsyncOpenAI(
            base_url=ctx.base_url, api_key="bench-key", max_retries=0
        )
    return client


def _httpx(ctx: Ctx) -> Any:
    client = ctx.state.get("httpx")
    if client is None:
        import httpx2

        client = ctx.state["httpx"] = httpx2.AsyncClient(timeout=600)
    return client


def _request_body(ctx: Ctx) -> dict[str, Any]:
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, "mock": ctx.script}
    body.update(ctx.tool_params())
    return body


def _framing(ctx: Ctx) -> int:
    """``data:`` lines without content: the role chunk, one head per tool call, the
    finish chunk and ``[DONE]``."""
    calls = ctx.expected // (CALL_ARGS // FRAGMENT) if ctx.tools_stream else 0
    return 3 + calls


async def floor_lines(ctx: Ctx) -> int:
    """httpx2 ``aiter_lines``: the HTTP library alone, reading lines."""
    client = _httpx(ctx)
    lines = 0
    url = ctx.base_url + "/chat/completions"
    async with client.stream("POST", url, json=_request_body(ctx)) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                lines += 1
    return lines - _framing(ctx)


async def floor_validate(ctx: Ctx) -> int:
    """The same, plus ``ChatCompletionChunk.model_validate_json`` per chunk."""
    from openai.types.chat import ChatCompletionChunk

    client = _httpx(ctx)
    url = ctx.base_url + "/chat/completions"
    validate = ChatCompletionChunk.model_validate_json
    seen = 0
    async with client.stream("POST", url, json=_request_body(ctx)) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = validate(line[6:])
                if chunk.choices:
                    delta = chunk.choices[0].delta
                    calls = delta.tool_calls
                    fn = calls[0].function if calls else None
                    if delta.content or (fn is not None and fn.arguments):
                        seen += 1
    return seen


async def sdk_iter(ctx: Ctx) -> int:
    """openai ``chat.completions.create(stream=True)``, iterated."""
    client = _openai(ctx)
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        extra_body={"mock": ctx.script},
        **ctx.tool_params(),
    )
    seen = 0
    async for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta
            calls = delta.tool_calls
            if delta.content or (calls and calls[0].function and calls[0].function.arguments):
                seen += 1
    return seen


async def sdk_helper(ctx: Ctx) -> int:
    """openai ``chat.completions.stream()`` helper, events iterated, then the final completion.

    With tools, they are strict (``pydantic_function_tool``): the helper
    parses the arguments so far on every fragment and validates them at the end.
    """
    client = _openai(ctx)
    seen = 0
    async with client.chat.completions.stream(
        model=MODEL,
        messages=MESSAGES,
        extra_body={"mock": ctx.script},
        **ctx.tool_params(),
    ) as stream:
        async for event in stream:
            if event.type == "content.delta":
                seen += bool(event.delta)
            elif event.type == "tool_calls.function.arguments.delta":
                seen += bool(event.arguments_delta)
        final = await stream.get_final_completion()
    message = final.choices[0].message
    if ctx.tools_stream:
        calls = message.tool_calls or []
        assert calls and calls[0].function.parsed_arguments is not None
    else:
        assert message.content
    return seen


async def langchain_astream(ctx: Ctx) -> int:
    """langchain-openai ``ChatOpenAI.astream``."""
    llm = ctx.state.get("langchain")
    if llm is None:
        from langchain_openai import ChatOpenAI

        llm = ctx.state["langchain"] = ChatOpenAI(
            model=MODEL,
            base_url=ctx.base_url,
            api_key="bench-key",  # type: ignore[arg-type]
            max_retries=0,
            extra_body={"mock": ctx.script},
        )
    seen = 0
    async for chunk in llm.astream(MESSAGES[0]["content"]):
        if chunk.content:
            seen += 1
    return seen


async def litellm_acompletion(ctx: Ctx) -> int:
    """``litellm.acompletion(stream=True)`` through its OpenAI provider."""
    import litellm

    response = await litellm.acompletion(
        model="openai/" + MODEL,
        api_base=ctx.base_url,
        api_key="bench-key",
        messages=MESSAGES,
        stream=True,
        extra_body={"mock": ctx.script},
    )
    seen = 0
    async for chunk in response:
        if chunk.choices and chunk.choices[0].delta.content:
            seen += 1
    return seen


async def _rxllm(ctx: Ctx, validate: bool) -> int:
    from pipeline.core.result import Accumulator
    from pipeline.runtime.sources import chat_completions
    from pipeline.runtime.standard_chain import llm_stream

    tools = ctx.tool_params().get("tools")
    params = {"tools": tools} if tools else {}
    source = chat_completions(
        _openai(ctx), model=MODEL, messages=MESSAGES, extra_body={"mock": ctx.script}, **params
    )
    acc = Accumulator()
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    llm_stream(source, tools=tools if validate else None).subscribe(
        acc.add, done.set_exception, lambda: done.set_result(None)
    )
    await done
    result = acc.result()
    assert result.status == "finished", result.error
    if ctx.tools_stream:
        calls = result.choices[0].tool_calls
        assert calls and all(call.error is None for call in calls), calls[0].error
        return result.content_events - len(calls)  # minus the tool_call.started events
    return result.content_events


async def rxllm_consume(ctx: Ctx) -> int:
    """rxllm: ``chat_completions`` source + extract_deltas + assemble_tool_calls (partial
    parse) + map_errors, into an ``Accumulator``."""
    return await _rxllm(ctx, validate=False)


async def rxllm_validated(ctx: Ctx) -> int:
    """The same, each call's arguments validated against its tool's JSON schema."""
    return await _rxllm(ctx, validate=True)


async def rxllm_run(ctx: Ctx) -> int:
    """rxllm: the consume path through ``StreamRun`` (multicast), an Accumulator sink and an
    async reader (the bounded buffer a server's SSE responder reads)."""
    from pipeline.core.result import Accumulator
    from pipeline.runtime.multicast import StreamRun
    from pipeline.runtime.sources import chat_completions
    from pipeline.runtime.standard_chain import llm_stream

    tools = ctx.tool_params().get("tools")
    params = {"tools": tools} if tools else {}
    source = chat_completions(
        _openai(ctx), model=MODEL, messages=MESSAGES, extra_body={"mock": ctx.script}, **params
    )
    run = StreamRun(llm_stream(source, tools=tools), errors_mapped=True)
    acc = Accumulator()
    run.subscribe(acc.add)
    reader = run.iterate()
    run.start()
    async for _ in reader:
        pass
    result = acc.result()
    assert result.status == "finished", result.error
    return result.content_events


CLIENTS: dict[str, Client] = {
    "floor_lines": floor_lines,
    "floor_validate": floor_validate,
    "sdk_iter": sdk_iter,
    "sdk_helper": sdk_helper,
    "langchain": langchain_astream,
    "litellm": litellm_acompletion,
    "rxllm": rxllm_consume,
    "rxllm_validated": rxllm_validated,
    "rxllm_run": rxllm_run,
}


async def measure_client(
    name: str, base_url: str, chunks: int, tools_stream: bool, repeats: int
) -> Measured:
    """Run client ``name`` once to warm up, then ``repeats`` times; µs of CPU per chunk."""
    client = CLIENTS[name]
    ctx = Ctx(base_url, chunks, tools_stream, {})
    expected = ctx.expected
    samples: list[float] = []
    got = -1
    for i in range(repeats + 1):
        gc.collect()
        start = time.process_time()
        got = await client(ctx)
        spent = time.process_time() - start
        if i:
            samples.append(spent / expected * 1e6)
    measured = Measured(samples)
    if got != expected:
        measured.extra["warning"] = f"saw {got} content chunks, expected {expected}"
    return measured


async def serve_samples(name: str, base_url: str, chunks: int, tools_stream: bool) -> None:
    """Measure one run of client ``name`` per ``sample`` line on stdin; ``quit`` ends.

    Prints ``ready`` once imported and set up, then one JSON line per sample
    (``us``: µs of CPU per chunk; ``got``/``expected`` content chunks). The
    orchestrator interleaves the rows' samples, so a burst of other work on
    the machine lands on one sample of every row instead of on every sample
    of one row.
    """
    client = CLIENTS[name]
    ctx = Ctx(base_url, chunks, tools_stream, {})
    expected = ctx.expected
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() != "sample":
            return
        gc.collect()
        start = time.process_time()
        got = await client(ctx)
        spent = time.process_time() - start
        sample = {"us": spent / expected * 1e6, "got": got, "expected": expected}
        print(json.dumps(sample), flush=True)
