"""``rxllm serve`` speaks the Responses API and Anthropic Messages, in and out.

Real clients (the openai and anthropic SDKs) over real sockets, against a
real ``rxllm serve`` process whose upstream is the built-in model; each
compared with the same client pointed straight at the built-in model.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from pipeline.apps.builtin_model import MockScript, MockServer
from tests.serving import ServeProcess

pytestmark = pytest.mark.slow  # starts rxllm serve processes

USER: Any = [{"role": "user", "content": "What is the weather in Paris and the time there?"}]
TOOLS: Any = [
    {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
    {
        "name": "get_time",
        "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
]
PARALLEL = {
    "text": "Let me check both.",
    "reasoning": "Two lookups, at once.",
    "tool_calls": [
        {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"name": "get_time", "arguments": '{"tz": "Europe/Paris"}'},
    ],
    "fragment_size": 5,
}
_SUFFIX = re.compile(r"mock\d{6}")


def same_ids(value: Any) -> Any:
    """``value`` with the built-in model's per-request id suffixes made equal."""
    return json.loads(_SUFFIX.sub("mockN", json.dumps(value)))


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockServer]:
    with MockServer(MockScript(), models=("mock-model",)) as server:
        yield server


@pytest.fixture(scope="module")
def served(
    upstream: MockServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """``rxllm serve`` in front of an upstream that speaks all three APIs."""
    tmp = tmp_path_factory.mktemp("serve-apis")
    db = f"sqlite+aiosqlite:///{tmp / 'transcripts.db'}"
    args = ["--upstream", upstream.base_url, "--upstream-api", "chat,responses,anthropic"]
    with ServeProcess(*args, "--db", db, log_path=tmp / "serve.log") as proc:
        yield proc


@pytest.fixture(scope="module")
def chat_only(
    upstream: MockServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """``rxllm serve`` in front of the same upstream, told it speaks Chat Completions only."""
    tmp = tmp_path_factory.mktemp("serve-chat-only")
    args = ["--upstream", upstream.base_url, "--upstream-api", "chat", "--no-store"]
    with ServeProcess(*args, log_path=tmp / "serve.log") as proc:
        yield proc


_CLIENTS: list[anthropic.AsyncAnthropic | openai.AsyncOpenAI] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    """Close the clients a test made, on its own event loop."""
    yield
    while _CLIENTS:
        await _CLIENTS.pop().close()


@pytest.fixture(scope="module")
def anthropic_only(
    upstream: MockServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """``rxllm serve`` in front of the same upstream, told it speaks Anthropic Messages only."""
    tmp = tmp_path_factory.mktemp("serve-anthropic-only")
    args = ["--upstream", upstream.base_url, "--upstream-api", "anthropic", "--no-store"]
    with ServeProcess(*args, log_path=tmp / "serve.log") as proc:
        yield proc


def claude(url: str) -> anthropic.AsyncAnthropic:
    client = anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0)
    _CLIENTS.append(client)
    return client


def gpt(base_url: str) -> openai.AsyncOpenAI:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0)
    _CLIENTS.append(client)
    return client


async def final_message(client: anthropic.AsyncAnthropic, **kwargs: Any) -> tuple[Any, list[str]]:
    """Stream with ``messages.stream()``; the final message and the text pieces seen."""
    pieces: list[str] = []
    async with client.messages.stream(model="mock-model", max_tokens=300, **kwargs) as stream:
        async for event in stream:
            if event.type == "text":
                pieces.append(event.text)
        message = await stream.get_final_message()
    return message, pieces


# -- Anthropic Messages, same API on both sides ---------------------------------------


@pytest.mark.parametrize(
    "mock",
    [{"text": "Hello there, through the layer!"}, PARALLEL],
    ids=["text", "thinking-parallel-tools"],
)
async def test_anthropic_sdk_gets_the_same_message_through_serve(
    served: ServeProcess, upstream: MockServer, mock: dict[str, Any]
) -> None:
    kwargs = {"messages": USER, "tools": TOOLS, "extra_body": {"mock": mock}}
    through, pieces = await final_message(claude(served.url), **kwargs)
    direct, _ = await final_message(claude(upstream.url), **kwargs)
    assert same_ids(through.model_dump()) == same_ids(direct.model_dump())
    assert len(pieces) > 1  # the text still arrives in pieces
    if mock is PARALLEL:
        thinking, text, weather, clock = through.content
        assert thinking.type == "thinking" and thinking.signature
        assert text.type == "text" and text.text == "Let me check both."
        assert weather.type == "tool_use" and weather.input == {"city": "Paris"}
        assert clock.type == "tool_use" and clock.input == {"tz": "Europe/Paris"}
        assert through.stop_reason == "tool_use"
    # the body went upstream as it was sent
    sent = upstream.recorder.last_request
    assert sent.path == "/v1/messages"
    assert sent.body["tools"] == TOOLS and sent.body["messages"] == USER


async def test_anthropic_tool_result_round_trip(served: ServeProcess, upstream: MockServer) -> None:
    client = claude(served.url)
    first, _ = await final_message(
        client, messages=USER, tools=TOOLS, extra_body={"mock": PARALLEL}
    )
    results = [
        {"type": "tool_result", "tool_use_id": block.id, "content": f"result of {block.name}"}
        for block in first.content
        if block.type == "tool_use"
    ]
    follow_up = [
        *USER,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": results},
    ]
    second, _ = await final_message(
        client, messages=follow_up, tools=TOOLS, extra_body={"mock": {"text": "Sunny, 14:00."}}
    )
    assert [b.type for b in second.content] == ["text"]
    assert second.content[0].text == "Sunny, 14:00." and second.stop_reason == "end_turn"
    sent = upstream.recorder.last_request.body
    # the thinking block and its signature went back upstream untouched
    assert sent["messages"][1]["content"][0] == {
        "type": "thinking",
        "thinking": "Two lookups, at once.",
        "signature": first.content[0].signature,
    }
    assert [r["tool_use_id"] for r in sent["messages"][2]["content"]] == [
        first.content[2].id,
        first.content[3].id,
    ]


async def test_anthropic_not_streamed(served: ServeProcess, upstream: MockServer) -> None:
    kwargs: Any = {
        "model": "mock-model",
        "max_tokens": 100,
        "messages": USER,
        "extra_body": {"mock": {"text": "Plain answer", "tool_calls": [{"name": "get_time"}]}},
    }
    through = await claude(served.url).messages.create(**kwargs)
    direct = await claude(upstream.url).messages.create(**kwargs)
    assert [b.type for b in through.content] == ["text", "tool_use"]
    assert through.content[0].text == "Plain answer"
    assert through.stop_reason == direct.stop_reason == "tool_use"
    assert through.usage.output_tokens == direct.usage.output_tokens
    assert through.usage.input_tokens == direct.usage.input_tokens


async def test_anthropic_stream_id_header_and_store(served: ServeProcess) -> None:
    body = {"model": "mock-model", "max_tokens": 50, "messages": USER, "stream": True}
    async with httpx.AsyncClient(base_url=served.url, timeout=20) as http:
        async with http.stream("POST", "/v1/messages", json={**body, "mock": {"text": "a b"}}) as r:
            assert r.status_code == 200
            stream_id = r.headers["x-rxllm-stream-id"]
            raw = (await r.aread()).decode()
        assert raw.startswith("id: ") and "event: message_start" in raw
        assert raw.rstrip().endswith('data: {"type":"message_stop"}')
        for _ in range(100):
            stored = await http.get(f"/v1/transcripts/{stream_id}")
            if stored.status_code == 200 and stored.json()["status"] == "finished":
                break
            await asyncio.sleep(0.05)
        assert stored.json()["status"] == "finished"
        # the hub and the store resume it as rxllm events, as any other stream
        resumed = await http.get(f"/v1/streams/{stream_id}/events", headers={"last-event-id": "2"})
        assert resumed.status_code == 200 and "event: finished" in resumed.text


async def test_anthropic_errors_before_the_first_token(served: ServeProcess) -> None:
    client = claude(served.url)
    with pytest.raises(anthropic.InternalServerError) as caught:
        await final_message(client, messages=USER, extra_body={"mock": {"status": 529}})
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        bad = await http.post("/v1/messages", json={"model": "mock-model", "messages": USER})
    assert bad.status_code == 400
    assert bad.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "missing required field 'max_tokens'",
        },
    }


async def test_anthropic_error_after_first_token_is_an_error_event(served: ServeProcess) -> None:
    mock = {"text": "one two three four", "error_after": 2, "error_code": "overloaded_error"}
    pieces: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        async with claude(served.url).messages.stream(
            model="mock-model", max_tokens=50, messages=USER, extra_body={"mock": mock}
        ) as stream:
            async for event in stream:
                if event.type == "text":
                    pieces.append(event.text)
    assert "".join(pieces) == "one two"
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


# -- Responses API, same API on both sides ----------------------------------------------


def comparable(response: Any) -> Any:
    """A final response without what differs between two calls (ids, clock)."""
    data = same_ids(response.model_dump(exclude_none=True))
    data.pop("created_at", None)
    return data


@pytest.mark.parametrize(
    "mock",
    [{"text": "Hello from Responses"}, {**PARALLEL, "reasoning": "Think first."}],
    ids=["text", "reasoning-parallel-tools"],
)
async def test_responses_stream_is_the_same_through_serve(
    served: ServeProcess, upstream: MockServer, mock: dict[str, Any]
) -> None:
    async def run(client: openai.AsyncOpenAI) -> tuple[Any, list[str]]:
        deltas: list[str] = []
        async with client.responses.stream(
            model="mock-model", input="Paris?", extra_body={"mock": mock}
        ) as stream:
            async for event in stream:
                if event.type == "response.output_text.delta":
                    deltas.append(event.delta)
            return await stream.get_final_response(), deltas

    through, deltas = await run(gpt(served.base_url))
    direct, _ = await run(gpt(upstream.base_url))
    assert len(deltas) > 1
    mine, theirs = comparable(through), comparable(direct)
    assert mine["output"] == theirs["output"]
    assert mine["usage"]["input_tokens"] == theirs["usage"]["input_tokens"]
    assert mine["usage"]["output_tokens"] == theirs["usage"]["output_tokens"]
    assert mine["status"] == theirs["status"] == "completed"
    assert through.id.startswith("resp_mock")  # the upstream's own id, kept


async def test_responses_create_stream_true_events(served: ServeProcess) -> None:
    client = gpt(served.base_url)
    stream = await client.responses.create(
        model="mock-model", input="hi", stream=True, extra_body={"mock": {"text": "a b c"}}
    )
    kinds = [event.type async for event in stream]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 3
    assert "response.output_item.done" in kinds


async def test_responses_not_streamed(served: ServeProcess) -> None:
    response = await gpt(served.base_url).responses.create(
        model="mock-model", input="hi", extra_body={"mock": {"text": "whole answer"}}
    )
    assert response.output_text == "whole answer" and response.status == "completed"
    assert response.usage is not None and response.usage.output_tokens == 2


# -- translated: the upstream speaks Chat Completions only ------------------------------


async def test_anthropic_sdk_against_a_chat_only_upstream(
    chat_only: ServeProcess, upstream: MockServer
) -> None:
    message, pieces = await final_message(
        claude(chat_only.url),
        system="Be brief.",
        messages=USER,
        tools=TOOLS,
        tool_choice={"type": "auto", "disable_parallel_tool_use": False},
        thinking={"type": "enabled", "budget_tokens": 1024},
        stop_sequences=["END"],
        extra_body={"mock": PARALLEL},
    )
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert message.content[2].input == {"city": "Paris"}
    assert message.stop_reason == "tool_use" and len(pieces) > 1
    sent = upstream.recorder.last_request
    assert sent.path == "/v1/chat/completions"
    assert sent.body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent.body["tools"][0]["function"]["parameters"] == TOOLS[0]["input_schema"]
    assert sent.body["reasoning_effort"] == "low" and sent.body["stop"] == ["END"]
    assert sent.body["max_tokens"] == 300
    # a tool result goes back as a tool message with the same id
    follow_up = [
        *USER,
        {
            "role": "assistant",
            "content": [b.model_dump(exclude_none=True) for b in message.content],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": message.content[2].id, "content": "sunny"}
            ],
        },
    ]
    second, _ = await final_message(
        claude(chat_only.url), messages=follow_up, extra_body={"mock": {"text": "It is sunny."}}
    )
    assert second.content[0].text == "It is sunny."
    tool_message = upstream.recorder.last_request.body["messages"][2]
    assert tool_message == {
        "role": "tool",
        "tool_call_id": message.content[2].id,
        "content": "sunny",
    }


async def test_responses_stream_against_a_chat_only_upstream(
    chat_only: ServeProcess, upstream: MockServer
) -> None:
    tools: Any = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    async with gpt(chat_only.base_url).responses.stream(
        model="mock-model",
        instructions="Be brief.",
        input=[{"role": "user", "content": "Paris?"}],
        tools=tools,
        extra_body={"mock": PARALLEL},
    ) as stream:
        response = await stream.get_final_response()
    kinds = [item.type for item in response.output]
    assert kinds == ["reasoning", "message", "function_call", "function_call"]
    assert response.output_text == "Let me check both."
    sent = upstream.recorder.last_request
    assert sent.path == "/v1/chat/completions"
    assert sent.body["messages"][0] == {"role": "system", "content": "Be brief."}


async def test_chat_completions_against_an_anthropic_only_upstream(
    anthropic_only: ServeProcess, upstream: MockServer
) -> None:
    tools: Any = [
        {
            "type": "function",
            "function": {"name": "get_weather", "parameters": TOOLS[0]["input_schema"]},
        },
        {
            "type": "function",
            "function": {"name": "get_time", "parameters": TOOLS[1]["input_schema"]},
        },
    ]
    async with gpt(anthropic_only.base_url).chat.completions.stream(
        model="mock-model",
        messages=[{"role": "system", "content": "Be brief."}, *USER],
        tools=tools,
        reasoning_effort="low",
        stream_options={"include_usage": True},
        extra_body={"mock": PARALLEL},
    ) as stream:
        completion = await stream.get_final_completion()
    message = completion.choices[0].message
    assert message.content == "Let me check both."
    calls = message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "Europe/Paris"}),
    ]
    assert all(c.id.startswith("toolu_mock") for c in calls)  # the upstream's ids, kept
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    sent = upstream.recorder.last_request
    assert sent.path == "/v1/messages"
    assert sent.body["system"] == "Be brief."
    assert sent.body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert sent.body["tools"][0] == {
        "name": "get_weather",
        "input_schema": TOOLS[0]["input_schema"],
    }


async def test_a_field_that_cannot_be_carried_is_a_400_naming_it(chat_only: ServeProcess) -> None:
    server_tool: Any = [{"type": "web_search_20250305", "name": "web_search"}]
    with pytest.raises(anthropic.BadRequestError) as caught:
        await claude(chat_only.url).messages.create(
            model="mock-model", max_tokens=10, messages=USER, tools=server_tool
        )
    error = caught.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error" and "'tools[0]'" in error["message"]
    with pytest.raises(openai.BadRequestError) as bad:
        await gpt(chat_only.base_url).responses.create(
            model="mock-model", input="x", previous_response_id="resp_1"
        )
    assert bad.value.body["param"] == "previous_response_id"  # type: ignore[index]


# -- failover across APIs ---------------------------------------------------------------


def test_failover_from_an_overloaded_anthropic_upstream_to_a_chat_one(tmp_path: Path) -> None:
    with (
        MockServer(MockScript(status=529)) as overloaded,
        MockServer() as backup,
    ):
        config = tmp_path / "upstreams.toml"
        config.write_text(
            f"""
[failover]
retries = 1
backoff = 0.01

[[upstreams]]
name = "claude"
base_url = "{overloaded.url}"
apis = ["anthropic"]

[[upstreams]]
name = "compatible"
base_url = "{backup.base_url}"
apis = ["chat"]
"""
        )
        args = ["--config", str(config), "--no-store"]
        with ServeProcess(*args, log_path=tmp_path / "serve.log") as proc:

            async def ask() -> Any:
                async with anthropic.AsyncAnthropic(
                    base_url=proc.url, api_key="k", max_retries=0
                ) as client:
                    message, _ = await final_message(
                        client, messages=USER, extra_body={"mock": {"text": "From backup"}}
                    )
                return message

            message = asyncio.run(ask())
            assert message.content[0].text == "From backup"
            asked = [r.path for r in overloaded.recorder.requests if r.method == "POST"]
            assert asked == ["/v1/messages"] * 2  # tried, then retried once
            assert [r.path for r in backup.recorder.requests if r.method == "POST"] == [
                "/v1/chat/completions"
            ]
            metrics = httpx.get(proc.url + "/metrics").text
            assert 'rxllm_failovers_total{from_upstream="claude",to_upstream="compatible"} 1.0' in (
                metrics
            )


# -- every route keeps every promise ----------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/messages", {"max_tokens": 10, "messages": USER}),
        ("/v1/responses", {"input": "hi"}),
    ],
    ids=["messages", "responses"],
)
async def test_a_client_leaving_early_cancels_upstream(
    served: ServeProcess, upstream: MockServer, path: str, body: dict[str, Any]
) -> None:
    request = {
        "model": "mock-model",
        "stream": True,
        **body,
        "mock": {"text": " ".join(["tok"] * 400), "interval": 0.01},
    }
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        async with http.stream("POST", path, json=request) as response:
            lines = response.aiter_lines()
            while "tok" not in await anext(lines):
                pass
            record = upstream.recorder.last_request
            connection = record.connection
            assert connection is not None and connection.closed_at is None
        closed_at = await connection.wait_closed_async(timeout=5)
        assert closed_at is not None
        for _ in range(100):
            if record.outcome is not None:
                break
            await asyncio.sleep(0.05)
        assert record.outcome == "client_gone"  # the upstream saw us leave mid-answer


@pytest.mark.parametrize(
    ("path", "body", "shape"),
    [
        ("/v1/messages", {"max_tokens": 10, "messages": USER}, "anthropic"),
        ("/v1/responses", {"input": "hi"}, "openai"),
    ],
    ids=["messages", "responses"],
)
async def test_a_stalled_upstream_times_out_before_the_first_token(
    served: ServeProcess, path: str, body: dict[str, Any], shape: str
) -> None:
    request = {"model": "mock-model", "stream": True, **body, "mock": {"text": "late", "stall": 30}}
    async with httpx.AsyncClient(base_url=served.url, timeout=20) as http:
        started = time.monotonic()
        response = await http.post(
            path, json=request, headers={"x-rxllm-first-token-timeout": "0.2"}
        )
        assert time.monotonic() - started < 15  # the 30 s stall was cut short
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["type"] == ("api_error" if shape == "anthropic" else "upstream_error")


async def test_responses_error_after_the_first_token(served: ServeProcess) -> None:
    mock = {"text": "one two three four", "error_after": 2}
    deltas: list[str] = []
    kinds: list[str] = []
    stream = await gpt(served.base_url).responses.create(
        model="mock-model", input="hi", stream=True, extra_body={"mock": mock}
    )
    async for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
    assert "".join(deltas) == "one two"
    # as the API ends a failed stream: an error event, then the response, failed
    assert kinds[-2:] == ["error", "response.failed"]


async def test_bad_input_on_the_new_routes_is_a_4xx_in_each_apis_shape(
    served: ServeProcess,
) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        messages = await http.post(
            "/v1/messages", content=b"{not json", headers={"content-type": "application/json"}
        )
        responses = await http.post("/v1/responses", json={"model": "mock-model"})
    assert messages.status_code == 400
    assert messages.json()["type"] == "error"
    assert messages.json()["error"]["type"] == "invalid_request_error"
    assert "not valid JSON" in messages.json()["error"]["message"]
    assert responses.status_code == 400
    assert responses.json()["error"]["param"] == "input"


async def test_anthropic_not_streamed_against_a_chat_only_upstream(
    chat_only: ServeProcess, upstream: MockServer
) -> None:
    message = await claude(chat_only.url).messages.create(
        model="mock-model",
        max_tokens=100,
        messages=USER,
        tools=TOOLS,
        extra_body={"mock": PARALLEL},
    )
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert message.stop_reason == "tool_use"
    assert message.usage.output_tokens > 0
    assert upstream.recorder.last_request.path == "/v1/chat/completions"


async def test_responses_against_an_anthropic_only_upstream(
    anthropic_only: ServeProcess, upstream: MockServer
) -> None:
    async with gpt(anthropic_only.base_url).responses.stream(
        model="mock-model",
        instructions="Be brief.",
        input="Paris?",
        extra_body={"mock": PARALLEL},
    ) as stream:
        response = await stream.get_final_response()
    assert [item.type for item in response.output] == [
        "reasoning",
        "message",
        "function_call",
        "function_call",
    ]
    assert response.output_text == "Let me check both."
    calls = [item for item in response.output if item.type == "function_call"]
    assert [c.call_id.startswith("toolu_mock") for c in calls] == [True, True]
    sent = upstream.recorder.last_request
    assert sent.path == "/v1/messages"  # Responses -> Chat Completions -> Anthropic
    assert sent.body["system"] == "Be brief." and sent.body["max_tokens"] == 4096


def test_an_anthropic_upstream_gets_its_key_and_version_headers(tmp_path: Path) -> None:
    rejected, accepted = "sk-ant-REJECTED-7f2c", "sk-ant-GOOD-91d0"
    with MockServer(reject_keys={rejected}) as claude_api:
        for key, status in ((rejected, 401), (accepted, 200)):
            args = ["--upstream", claude_api.url, "--upstream-api", "anthropic"]
            log = tmp_path / f"serve-{status}.log"
            with ServeProcess(*args, "--api-key", key, "--no-store", log_path=log) as proc:
                answer = httpx.post(
                    proc.url + "/v1/messages",
                    json={"model": "m", "max_tokens": 10, "messages": USER},
                    timeout=20,
                )
            assert answer.status_code == status  # the key went as x-api-key, and was checked
            sent = claude_api.recorder.last_request
            assert sent.path == "/v1/messages"
            assert sent.headers.get("anthropic-version")  # the SDK's own API version
            assert key not in proc.log()
