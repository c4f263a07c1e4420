"""The built-in model speaks Anthropic Messages: the real anthropic SDK over a real socket."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import pytest

from pipeline.apps.builtin_model import MockServer
from tests.fixtures import run_body

USER: Any = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    with MockServer() as running:
        yield running


@pytest.fixture
async def client(server: MockServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    root = server.base_url.removesuffix("/v1")
    async with anthropic.AsyncAnthropic(base_url=root, api_key="k", max_retries=0) as c:
        yield c


def mock(**fields: Any) -> dict[str, Any]:
    return {"mock": fields}


async def test_stream_with_thinking_text_and_parallel_tools(
    client: anthropic.AsyncAnthropic,
) -> None:
    script = mock(
        text="Checking both.",
        reasoning="Two lookups at once.",
        tool_calls=[
            {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            {"name": "get_time", "arguments": '{"tz": "Europe/Paris"}'},
        ],
    )
    texts: list[str] = []
    async with client.messages.stream(
        model="claude-test", max_tokens=200, messages=USER, extra_body=script
    ) as stream:
        async for event in stream:
            if event.type == "text":
                texts.append(event.text)
        message = await stream.get_final_message()
    assert len(texts) > 1  # text arrives in pieces
    kinds = [block.type for block in message.content]
    assert kinds == ["thinking", "text", "tool_use", "tool_use"]
    thinking, text, first, second = message.content
    assert thinking.type == "thinking" and thinking.thinking == "Two lookups at once."
    assert thinking.signature  # a client must send it back to continue
    assert text.type == "text" and text.text == "Checking both."
    assert first.type == "tool_use" and first.input == {"city": "Paris"}
    assert second.type == "tool_use" and second.input == {"tz": "Europe/Paris"}
    assert first.id != second.id
    assert message.stop_reason == "tool_use"
    assert message.model == "claude-test"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


async def test_not_streamed_is_the_same_message(client: anthropic.AsyncAnthropic) -> None:
    script = mock(text="Hello there", reasoning="hm", tool_calls=[{"name": "f"}])
    message = await client.messages.create(
        model="m", max_tokens=50, messages=USER, extra_body=script
    )
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[1].type == "text" and message.content[1].text == "Hello there"
    assert message.content[2].type == "tool_use" and message.content[2].input == {}
    assert message.stop_reason == "tool_use"


async def test_errors_are_anthropic_shaped(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.InternalServerError) as caught:
        await client.messages.create(
            model="m", max_tokens=5, messages=USER, extra_body=mock(status=529)
        )
    assert caught.value.status_code == 529
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "The mock failed with status 529."},
    }
    with pytest.raises(anthropic.RateLimitError):
        await client.messages.create(
            model="m", max_tokens=5, messages=USER, extra_body=mock(status=429, retry_after=0)
        )


async def test_error_mid_stream_is_raised_by_the_sdk(client: anthropic.AsyncAnthropic) -> None:
    script = mock(text="one two three four", error_after=2, error_code="overloaded_error")
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError):
        async with client.messages.stream(
            model="m", max_tokens=50, messages=USER, extra_body=script
        ) as stream:
            async for event in stream:
                if event.type == "text":
                    seen.append(event.text)
    assert "".join(seen) == "one two"


async def test_its_stream_normalizes_like_a_real_one(server: MockServer) -> None:
    import httpx

    body = {
        "model": "m",
        "max_tokens": 50,
        "stream": True,
        "messages": USER,
        "mock": {"text": "Hi there", "reasoning": "r", "tool_calls": [{"name": "f"}]},
    }
    async with httpx.AsyncClient() as http:
        response = await http.post(server.url + "/v1/messages", json=body)
    result, events = run_body(response.content)
    choice = result.choices[0]
    assert (choice.content, choice.reasoning) == ("Hi there", "r")
    assert [(c.name, c.parsed) for c in choice.tool_calls] == [("f", {})]
    assert choice.finish_reason == "tool_calls"
    assert events[0].api == "anthropic"  # type: ignore[attr-defined]
