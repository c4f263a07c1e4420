"""Sources through the real openai SDK over real HTTP to the built-in model."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessage, ChatCompletionMessageParam

from pipeline.apps.builtin_model import MockServer
from pipeline.core.events import EventBase, is_terminal
from pipeline.core.result import Accumulator, Result
from pipeline.runtime import sources
from pipeline.runtime.http_backend import http_client
from pipeline.runtime.multicast import StreamRun
from pipeline.runtime.standard_chain import llm_stream

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
async def server() -> AsyncIterator[MockServer]:
    async with MockServer() as srv:
        yield srv


@pytest.fixture(params=["default-backend", "asyncio-backend"])
async def client(server: MockServer, request: pytest.FixtureRequest) -> AsyncIterator[AsyncOpenAI]:
    """The SDK's own HTTP client, and the one on rxllm's asyncio-native network backend."""
    http = http_client() if request.param == "asyncio-backend" else None
    async with AsyncOpenAI(
        base_url=server.base_url, api_key="test-key", max_retries=0, http_client=http
    ) as c:
        yield c


async def collect(run: StreamRun) -> tuple[Result, list[EventBase]]:
    acc = Accumulator()
    events: list[EventBase] = []
    run.subscribe(events.append)
    run.subscribe(acc.add)
    run.start()
    await asyncio.wait_for(run.wait(), 10)
    return acc.result(), events


def chat(client: AsyncOpenAI, mock: dict[str, Any] | None = None, **params: Any) -> StreamRun:
    params.setdefault("stream_options", {"include_usage": True})
    source = sources.chat_completions(
        client, model="mock-model", messages=MESSAGES, extra_body={"mock": mock or {}}, **params
    )
    return StreamRun(llm_stream(source))


def test_nothing_is_requested_before_subscribe(server: MockServer, client: AsyncOpenAI) -> None:
    sources.chat_completions(client, model="mock-model", messages=MESSAGES)
    assert server.recorder.requests == []


async def test_chat_text_matches_the_sdk_own_iteration(client: AsyncOpenAI) -> None:
    mock = {"text": "Hello there, streaming world!"}
    result, events = await collect(chat(client, mock))
    sdk_text = []
    stream = await client.chat.completions.create(
        model="mock-model", messages=MESSAGES, stream=True, extra_body={"mock": mock}
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            sdk_text.append(chunk.choices[0].delta.content)
    assert result.choices[0].content == "".join(sdk_text) == "Hello there, streaming world!"
    assert result.status == "finished"
    assert result.usage is not None and result.usage["completion_tokens"] > 0
    assert [e.seq for e in events] == list(range(len(events)))
    assert all(later.t >= earlier.t for earlier, later in itertools.pairwise(events))


async def test_parallel_tool_calls_match_the_sdk_stream_helper(client: AsyncOpenAI) -> None:
    calls = [
        {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "unit": "c"})},
        {"name": "get_time", "arguments": json.dumps({"tz": "Europe/Paris"})},
    ]
    mock = {"tool_calls": calls, "fragment_size": 3}
    result, _ = await collect(chat(client, mock))
    async with client.chat.completions.stream(
        model="mock-model", messages=MESSAGES, extra_body={"mock": mock}
    ) as stream:
        final = await stream.get_final_completion()
    expected = [
        (tc.function.name, tc.function.arguments)
        for tc in final.choices[0].message.tool_calls or []
        if tc.type == "function"
    ]
    got = [(tc.name, tc.arguments) for tc in result.choices[0].tool_calls]
    assert got == expected  # ids differ: each request gets its own
    assert all(tc.id for tc in result.choices[0].tool_calls)
    assert [tc.parsed for tc in result.choices[0].tool_calls] == [
        json.loads(c["arguments"]) for c in calls
    ]


async def test_responses_api(client: AsyncOpenAI) -> None:
    source = sources.responses(
        client, model="mock-model", input="Hi", extra_body={"mock": {"text": "Bonjour !"}}
    )
    result, events = await collect(StreamRun(llm_stream(source)))
    assert result.choices[0].content == "Bonjour !"
    assert events[0].api == "responses"  # type: ignore[attr-defined]
    assert result.status == "finished"


async def test_dispose_closes_the_upstream_connection_within_100_ms(
    server: MockServer, client: AsyncOpenAI
) -> None:
    """Cancel-on-dispose, measured where it matters: at the server's socket."""
    first = asyncio.Event()
    run = chat(client, {"text": " ".join(["word"] * 500), "interval": 0.01})
    run.subscribe(lambda e: first.set() if e.type == "text" and e.text else None)
    run.start()
    await asyncio.wait_for(first.wait(), 10)
    request = server.recorder.last_request
    connection = request.connection
    assert connection is not None and connection.closed_at is None
    disposed_at = time.monotonic()
    run.cancel("test")
    closed_at = await connection.wait_closed_async(timeout=5)
    assert closed_at - disposed_at < 0.1
    assert (await run.wait()).type == "cancelled"  # type: ignore[attr-defined]
    assert await server.recorder.wait_for_async(lambda: request.outcome, timeout=5) == "client_gone"


async def test_plain_subscription_dispose_closes_the_connection(
    server: MockServer, client: AsyncOpenAI
) -> None:
    """Disposing closes the connection mid-answer (how soon is bench/'s cancellation row)."""
    first = asyncio.Event()
    words = " ".join(f"w{i}" for i in range(2000))  # 20 s of answer
    source = sources.chat_completions(
        client, model="m", messages=MESSAGES, extra_body={"mock": {"text": words, "interval": 0.01}}
    )
    subscription = source.subscribe(lambda _: first.set())
    await asyncio.wait_for(first.wait(), 10)
    request = server.recorder.last_request
    assert request.connection is not None
    subscription.dispose()
    await request.connection.wait_closed_async(timeout=5)  # raises if still open then
    assert await server.recorder.wait_for_async(lambda: request.outcome) == "client_gone"


@pytest.mark.parametrize(
    ("mock", "kind", "status", "retryable"),
    [
        ({"status": 429, "retry_after": 0.01}, "http", 429, True),
        ({"status": 500}, "http", 500, True),
        ({"status": 400, "error_message": "bad request"}, "http", 400, False),
    ],
)
async def test_http_error_before_the_first_token(
    client: AsyncOpenAI, mock: dict[str, Any], kind: str, status: int, retryable: bool
) -> None:
    result, events = await collect(chat(client, mock))
    assert result.status == "error" and result.error is not None
    assert (result.error["kind"], result.error["status"]) == (kind, status)
    assert result.error["retryable"] is retryable
    assert result.error["after_first_token"] is False
    assert len(events) == 1 and is_terminal(events[0])
    assert "test-key" not in result.error["message"]


async def test_connection_drop_mid_stream_keeps_what_arrived(client: AsyncOpenAI) -> None:
    result, events = await collect(
        chat(client, {"text": "one two three four five", "drop_after": 2})
    )
    assert result.status == "error" and result.error is not None
    assert result.error["kind"] == "connection"
    assert result.error["after_first_token"] is True
    assert result.choices[0].content == "one two"
    assert [is_terminal(e) for e in events].count(True) == 1


async def test_error_event_mid_stream(client: AsyncOpenAI) -> None:
    mock = {"text": "one two three", "error_after": 1, "error_message": "overloaded"}
    result, _ = await collect(chat(client, mock))
    assert result.status == "error" and result.error is not None
    assert (result.error["kind"], result.error["message"]) == ("upstream", "overloaded")
    assert result.choices[0].content == "one"


async def test_malformed_chunk_mid_stream(client: AsyncOpenAI) -> None:
    result, _ = await collect(chat(client, {"text": "one two three", "malformed_after": 2}))
    assert result.status == "error" and result.error is not None
    assert result.error["kind"] == "malformed"
    assert result.choices[0].content == "one two"


async def test_dead_upstream_is_a_connection_error() -> None:
    async with AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=0) as c:
        result, _ = await collect(
            StreamRun(llm_stream(sources.chat_completions(c, model="m", messages=MESSAGES)))
        )
    assert result.status == "error" and result.error is not None
    assert result.error["kind"] == "connection"
    assert result.error["retryable"] is True


async def test_async_byte_stream_is_a_source() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'data: {"choices":[{"index":0,"delta":{"content":"a'
        yield b'b"}}]}\n\ndata: [DONE]\n\n'

    result, _ = await collect(StreamRun(llm_stream(sources.sse_body(body()))))
    assert result.choices[0].content == "ab"


async def test_the_request_body_is_sent_as_given(server: MockServer, client: AsyncOpenAI) -> None:
    """Plain JSON parameters reach the upstream unchanged, vendor ones included."""
    messages: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Say hello"}]},
    ]
    source = sources.chat_completions(
        client,
        model="mock-model",
        messages=messages,
        temperature=0.5,
        top_k=3,  # not in the SDK's signature
        extra_body={"mock": {"text": "hi"}},
        extra_headers={"x-trace": "t1"},
    )
    result, _ = await collect(StreamRun(llm_stream(source)))
    assert result.choices[0].content == "hi"
    request = server.recorder.last_request
    assert request is not None
    assert request.body == {
        "model": "mock-model",
        "messages": messages,
        "temperature": 0.5,
        "top_k": 3,
        "mock": {"text": "hi"},
        "stream": True,
    }


async def test_sdk_objects_in_the_parameters_are_converted_by_the_sdk(
    server: MockServer, client: AsyncOpenAI
) -> None:
    """A message given as the SDK's own model (a previous answer) takes the SDK's typed path."""
    previous = ChatCompletionMessage(role="assistant", content="Hello!")
    messages: list[Any] = [*MESSAGES, previous, {"role": "user", "content": "Again"}]
    source = sources.chat_completions(
        client, model="mock-model", messages=messages, top_k=3, extra_body={"mock": {"text": "ok"}}
    )
    result, _ = await collect(StreamRun(llm_stream(source)))
    assert result.choices[0].content == "ok"
    request = server.recorder.last_request
    assert request is not None
    assert request.body["messages"][1] == {"role": "assistant", "content": "Hello!"}
    assert request.body["top_k"] == 3 and request.body["mock"] == {"text": "ok"}


async def test_a_burst_in_one_read_leaves_the_first_token_alone_in_its_loop_turn() -> None:
    """The first message goes on alone, the next ones a few per turn: the first token goes first."""
    burst = b"".join(
        b'data: {"choices":[{"index":0,"delta":{"content":"%d"}}]}\n\n' % i for i in range(5)
    )

    class Response:
        async def __aenter__(self) -> Response:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

        async def iter_bytes(self) -> AsyncIterator[bytes]:
            yield burst

    seen: list[str] = []
    done = asyncio.Event()

    async def other_task() -> None:
        while not done.is_set():
            seen.append("turn")
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    sources._from_request(Response).subscribe(
        lambda message: seen.append(message.data), on_completed=done.set
    )
    await asyncio.wait_for(done.wait(), 5)
    await other
    turns = "".join(" " if item == "turn" else "m" for item in seen).split()
    assert turns == ["m", "mm", "mm"], seen  # the allowance doubles with each turn
