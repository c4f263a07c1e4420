"""The mock model server, through the real ``openai`` SDK over loopback HTTP.

Wire shapes are checked against the SDK's own pydantic types; timings are
checked with lower bounds only (measured from before the request was sent),
so a busy machine cannot make them fail.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import Any, get_args

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel

import pipeline.apps.builtin_model as mock
from pipeline.apps.builtin_model import MockScript, MockServer, split_tokens
from pipeline.core.sse_decoder import SSEDecoder, SSEMessage

MESSAGES: list[Any] = [{"role": "user", "content": "Tell me about reactive streams"}]
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    for name in ("get_weather", "get_time")
]
API_KEY = "sk-test-secret-0123"
# ResponseStreamEvent's discriminator is the SDK's own, which pydantic does not use: map by hand.
EVENT_TYPES: dict[str, type[BaseModel]] = {
    get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in get_args(get_args(ResponseStreamEvent)[0])
}


def validate_event(data: dict[str, Any]) -> ResponseStreamEvent:
    """Validate a Responses stream event against the SDK's class for its type."""
    event: ResponseStreamEvent = EVENT_TYPES[data["type"]].model_validate(data)  # type: ignore[assignment]
    return event


def script(**fields: Any) -> dict[str, Any]:
    """Return the ``extra_body`` that selects a mock script."""
    return {"mock": fields}


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    with MockServer() as running:
        yield running


@pytest.fixture
async def client(server: MockServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0) as c:
        yield c


@pytest.fixture
async def http(server: MockServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as c:
        yield c


async def raw_sse(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> list[SSEMessage]:
    """POST a streaming request; return the SSE messages exactly as sent."""
    decoder = SSEDecoder()
    messages: list[SSEMessage] = []
    async with http.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for chunk in response.aiter_raw():
            messages += decoder.decode(chunk)
    return messages + decoder.flush()


async def chat_chunks(client: AsyncOpenAI, **kwargs: Any) -> list[ChatCompletionChunk]:
    stream = await client.chat.completions.create(
        model="gpt-test", messages=MESSAGES, stream=True, **kwargs
    )
    return [chunk async for chunk in stream]


def text_of(chunks: list[ChatCompletionChunk], choice: int = 0) -> str:
    return "".join(
        c.choices[0].delta.content or ""
        for c in chunks
        if c.choices and c.choices[0].index == choice
    )


# -- Chat Completions ---------------------------------------------------------


async def test_chat_stream_has_the_real_wire_shape(http: httpx.AsyncClient) -> None:
    body = {"model": "gpt-echo", "messages": MESSAGES, **script(text="Hello there, world")}
    messages = await raw_sse(http, "/chat/completions", body)

    assert messages[-1].data == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(json.loads(m.data)) for m in messages[:-1]]
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-echo" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    first = json.loads(messages[0].data)["choices"][0]["delta"]
    assert first["role"] == "assistant" and first["content"] == ""
    assert [c.choices[0].delta.content for c in chunks[1:-1]] == ["Hello", " there,", " world"]
    assert [c.choices[0].finish_reason for c in chunks] == [None] * 4 + ["stop"]


async def test_chat_stream_through_the_sdk_with_explicit_tokens(client: AsyncOpenAI) -> None:
    chunks = await chat_chunks(client, extra_body=script(text=["Hel", "lo", "!"]))
    assert [c.choices[0].delta.content for c in chunks] == ["", "Hel", "lo", "!", None]


async def test_default_answer_quotes_the_last_user_message(client: AsyncOpenAI) -> None:
    chunks = await chat_chunks(client)
    text = text_of(chunks)
    assert '"Tell me about reactive streams"' in text
    assert 30 <= sum(1 for c in chunks if c.choices[0].delta.content) <= 60
    assert text == text_of(await chat_chunks(client))  # deterministic


async def test_reasoning_comes_before_the_text(client: AsyncOpenAI) -> None:
    chunks = await chat_chunks(client, extra_body=script(reasoning="Think it over", text="Yes"))
    kinds = [
        ("reasoning", d.model_extra["reasoning_content"])
        if d.model_extra and "reasoning_content" in d.model_extra
        else ("text", d.content)
        for d in (c.choices[0].delta for c in chunks[1:-1])
    ]
    reasoning = [("reasoning", "Think"), ("reasoning", " it"), ("reasoning", " over")]
    assert kinds == [*reasoning, ("text", "Yes")]


async def test_parallel_tool_calls_assemble_in_the_stream_helper(client: AsyncOpenAI) -> None:
    calls = [
        {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
        {"name": "get_time", "arguments": '{"city": "Tokyo"}', "id": "call_fixed"},
    ]
    async with client.chat.completions.stream(
        model="gpt-test", messages=MESSAGES, tools=TOOLS, extra_body=script(tool_calls=calls)
    ) as stream:
        fragments = [
            tc.function.arguments
            async for event in stream
            if event.type == "chunk"
            for tc in event.chunk.choices[0].delta.tool_calls or ()
            if tc.function and tc.function.arguments
        ]
        completion = await stream.get_final_completion()

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    tool_calls = choice.message.tool_calls or []
    assert [(t.function.name, t.function.arguments) for t in tool_calls] == [
        (c["name"], c["arguments"]) for c in calls
    ]
    assert tool_calls[1].id == "call_fixed"
    assert len(fragments) > len(calls)  # streamed in small pieces
    assert max(map(len, fragments)) <= 8


async def test_n_choices_interleave_and_each_finishes(client: AsyncOpenAI) -> None:
    chunks = await chat_chunks(client, n=2, extra_body=script(text="One two three"))
    assert [c.choices[0].index for c in chunks[:4]] == [0, 1, 0, 1]
    for choice in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices[0].index == choice]
        assert text_of(chunks, choice) == "One two three"
        assert [m.finish_reason for m in mine][-1] == "stop"


async def test_include_usage_adds_a_last_chunk_without_choices(client: AsyncOpenAI) -> None:
    chunks = await chat_chunks(
        client,
        stream_options={"include_usage": True},
        extra_body=script(text="a b c", reasoning="r"),
    )
    assert all(c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == 4
    assert last.usage.completion_tokens_details is not None
    assert last.usage.completion_tokens_details.reasoning_tokens == 1
    assert last.usage.total_tokens == last.usage.prompt_tokens + 4


async def test_chat_without_streaming(http: httpx.AsyncClient, client: AsyncOpenAI) -> None:
    calls = [{"name": "get_time", "arguments": "{}"}]
    body = {"model": "m", "messages": MESSAGES, **script(text="Hi you", tool_calls=calls)}
    raw = (await http.post("/chat/completions", json=body)).json()
    completion = ChatCompletion.model_validate(raw)
    message = completion.choices[0].message
    assert message.content == "Hi you"
    assert [t.model_dump()["function"]["name"] for t in message.tool_calls or []] == ["get_time"]
    assert completion.usage is not None and completion.usage.completion_tokens == 3

    sdk = await client.chat.completions.create(model="m", messages=MESSAGES, n=2)
    assert [c.index for c in sdk.choices] == [0, 1]
    assert '"Tell me about reactive streams"' in (sdk.choices[1].message.content or "")


# -- Responses API ------------------------------------------------------------


async def test_responses_stream_has_the_real_wire_shape(http: httpx.AsyncClient) -> None:
    calls = [{"name": "get_time", "arguments": '{"city": "Oslo"}'}]
    body = {"model": "m", "input": "hi", **script(reasoning="Hmm", text="Hi", tool_calls=calls)}
    messages = await raw_sse(http, "/responses", body)

    events = [validate_event(json.loads(m.data)) for m in messages]
    assert [m.event for m in messages] == [e.type for e in events]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * 2,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.usage is not None
    assert completed.response.usage.output_tokens == 4


async def test_responses_stream_helper_and_non_streaming(client: AsyncOpenAI) -> None:
    async with client.responses.stream(
        model="gpt-r", input="hi", extra_body=script(text="Hello there")
    ) as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert deltas == ["Hello", " there"]
    assert final.output_text == "Hello there" and final.model == "gpt-r"

    whole = await client.responses.create(
        model="gpt-r", input=[{"role": "user", "content": "Why?"}], extra_body=script(n=3)
    )
    Response.model_validate(whole.model_dump())
    assert whole.status == "completed"
    assert '"Why?"' in whole.output_text


# -- Faults -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (400, openai.BadRequestError, "invalid_request"),
        (429, openai.RateLimitError, "rate_limit_exceeded"),
        (500, openai.InternalServerError, "server_error"),
        (503, openai.InternalServerError, "service_unavailable"),
    ],
)
async def test_http_error_status_before_the_stream(
    client: AsyncOpenAI, status: int, error: type[openai.APIStatusError], code: str
) -> None:
    with pytest.raises(error) as caught:
        await chat_chunks(client, extra_body=script(status=status, error_message="nope"))
    assert caught.value.status_code == status
    assert caught.value.body == {"message": "nope", "type": caught.value.type, "param": None,
                                 "code": code}  # fmt: skip
    headers = caught.value.response.headers
    assert ("retry-after" in headers) == (status == 429)


async def test_retry_after_header(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        await chat_chunks(client, extra_body=script(status=429, retry_after=2.5))
    headers = caught.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("2", "2500")


async def test_fail_first_fails_then_the_sdk_retry_succeeds(server: MockServer) -> None:
    key = f"retry-{time.monotonic_ns()}"
    fault = script(status=503, retry_after=0.001, fail_first=2, fault_key=key, text="ok")
    async with AsyncOpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=2) as client:
        chunks = await chat_chunks(client, extra_body=fault)
    assert text_of(chunks) == "ok"
    mine = [r for r in server.recorder.requests if (r.script or {}).get("fault_key") == key]
    assert [r.status for r in mine] == [503, 503, 200]
    assert [r.headers["x-stainless-retry-count"] for r in mine] == ["0", "1", "2"]


@pytest.mark.parametrize("reset", [False, True])
async def test_drop_after_n_tokens(client: AsyncOpenAI, server: MockServer, reset: bool) -> None:
    stream = await client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        stream=True,
        extra_body=script(text="a b c d e f", drop_after=3, drop_reset=reset),
    )
    request = server.recorder.last_request
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    if not reset:  # a RST may discard bytes not yet read; a FIN never does
        assert "".join(received) == "a b c"
    assert request.outcome == "dropped"
    assert request.connection is not None
    await request.connection.wait_closed_async(timeout=5)
    assert request.connection.error is None  # the server closed it itself


async def test_drop_without_streaming(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(
            model="m", messages=MESSAGES, extra_body=script(drop_after=0)
        )


async def test_error_event_after_n_tokens_in_chat(
    client: AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    fault = script(text="a b c", error_after=2, error_message="boom", error_code="overloaded")
    received: list[str] = []
    with pytest.raises(openai.APIError, match="boom") as caught:
        async for chunk in await client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, extra_body=fault
        ):
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "a b"
    assert caught.value.code == "overloaded"

    messages = await raw_sse(http, "/chat/completions", {"messages": MESSAGES, **fault})
    assert messages[-1].event == "error"
    assert json.loads(messages[-1].data)["error"]["message"] == "boom"


async def test_error_event_after_n_tokens_in_responses(client: AsyncOpenAI) -> None:
    stream = await client.responses.create(
        model="m", input="hi", stream=True, extra_body=script(text="a b c", error_after=1)
    )
    events = [event async for event in stream]
    assert [e.type for e in events][-2:] == ["response.output_text.delta", "error"]
    last = events[-1]
    assert last.type == "error" and last.code == "server_error"


async def test_malformed_chunk_after_n_tokens(client: AsyncOpenAI, http: httpx.AsyncClient) -> None:
    fault = script(text="a b c", malformed_after=2)
    messages = await raw_sse(http, "/chat/completions", {"messages": MESSAGES, **fault})
    broken = []
    for message in messages[:-1]:
        try:
            json.loads(message.data)
        except ValueError:
            broken.append(message)
    assert len(broken) == 1 and messages.index(broken[0]) == 3  # role chunk, a, b, then it
    assert messages[-1].data == "[DONE]"  # the stream goes on

    with pytest.raises(json.JSONDecodeError):
        await chat_chunks(client, extra_body=fault)


async def test_stall_before_the_first_token(client: AsyncOpenAI) -> None:
    started = time.monotonic()
    stream = await client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, extra_body=script(text="a b", stall=0.2)
    )
    first = await anext(aiter(stream))
    assert time.monotonic() - started >= 0.2 - 0.01
    assert first.choices[0].delta.role == "assistant"
    await stream.close()


async def test_stall_after_n_tokens(client: AsyncOpenAI, server: MockServer) -> None:
    stream = await client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        stream=True,
        extra_body=script(text="a b c d", stall=60, stall_after=2),
    )
    iterator = aiter(stream)
    chunks = [await anext(iterator) for _ in range(3)]  # the role chunk and two tokens
    assert text_of(chunks) == "a b"
    request = server.recorder.last_request
    assert request.outcome is None  # stalled, not finished
    await stream.close()


async def test_interval_paces_the_tokens(client: AsyncOpenAI) -> None:
    started = time.monotonic()
    chunks = await chat_chunks(client, extra_body=script(text="a b c d e", interval=0.04))
    assert text_of(chunks) == "a b c d e"
    assert time.monotonic() - started >= 4 * 0.04 - 0.01


async def test_invalid_script_is_a_400(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="no_such_field"):
        await chat_chunks(client, extra_body=script(no_such_field=1))


# -- Recording ----------------------------------------------------------------


async def test_client_closing_mid_stream_is_recorded(
    client: AsyncOpenAI, server: MockServer
) -> None:
    stream = await client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, extra_body=script(stall=60, stall_after=1)
    )
    request = server.recorder.last_request
    await anext(aiter(stream))
    connection = request.connection
    assert connection is not None and connection.closed_at is None
    assert request in connection.requests

    before_close = time.monotonic()
    await stream.close()
    closed_at = await connection.wait_closed_async(timeout=5)
    assert closed_at >= before_close
    # FIN or RST both count: closing with unread bytes in the receive buffer
    # makes the kernel send a reset, which is a race with the first token here.
    await server.recorder.wait_for_async(lambda: request.outcome, timeout=5)
    assert request.outcome == "client_gone"
    assert request.ended_at is not None and request.ended_at >= before_close


async def test_requests_record_body_and_time_but_no_credentials(
    client: AsyncOpenAI, server: MockServer
) -> None:
    before = time.monotonic()
    await chat_chunks(client, extra_body=script(text="x"))
    await chat_chunks(client, extra_body=script(text="y"))
    first, second = server.recorder.requests[-2:]
    assert before <= first.arrived_at <= second.arrived_at
    assert first.path == "/v1/chat/completions" and first.method == "POST"
    assert first.body["messages"] == MESSAGES and first.script == {"text": "x"}
    assert first.status == 200 and first.outcome == "completed"
    assert first.connection is second.connection  # kept alive and reused
    for record in (first, second):
        assert "authorization" not in record.headers
        assert API_KEY not in json.dumps(record.headers) + json.dumps(record.body)


async def test_models_list(client: AsyncOpenAI) -> None:
    models = [m.id async for m in client.models.list()]
    assert models == ["mock-model"]


def test_sync_server_default_script_and_stop_closes_connections() -> None:
    with MockServer(MockScript(text="from the default"), shutdown_grace=0.05) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0)
        completion = client.chat.completions.create(model="m", messages=MESSAGES)
        assert completion.choices[0].message.content == "from the default"
        server.script = MockScript(text="changed")
        completion = client.chat.completions.create(model="m", messages=MESSAGES)
        assert completion.choices[0].message.content == "changed"

        stalled = client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, extra_body=script(stall=60)
        )
        request = server.recorder.last_request
    # stop() did not wait for the stalled stream: it dropped its connection
    assert request.connection is not None
    assert request.connection.wait_closed(timeout=0) > 0
    assert server.recorder.open_connections == []
    with pytest.raises(openai.APIConnectionError):
        list(stalled)
    client.close()


async def test_async_context_manager() -> None:
    async with MockServer() as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        async with AsyncOpenAI(base_url=server.base_url, api_key=API_KEY) as client:
            assert text_of(await chat_chunks(client, extra_body=script(text="hey"))) == "hey"
    with pytest.raises(RuntimeError):
        server.base_url  # noqa: B018 -- stopped: no URL any more


# -- Units --------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", " ", "one", "Hello, world!", "  lead\nand trail  ", "a\n\nb"])
def test_split_tokens_keeps_every_character(text: str) -> None:
    tokens = split_tokens(text)
    assert "".join(tokens) == text
    assert all(t.strip() for t in tokens[1:]) or not text.strip()


def test_public_names_are_exported() -> None:
    public = {
        name
        for name, value in vars(mock).items()
        if not name.startswith("_") and not isinstance(value, ModuleType) and name != "annotations"
    }
    assert public == set(mock.__all__)
