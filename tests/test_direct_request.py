"""The direct request path (:mod:`pipeline.runtime.direct_request`) against the SDKs' own.

An upstream of our own on a real socket records every request whole
(credentials included, which the built-in model's recorder leaves out) and
answers what the test says. The same request is made through the SDK's
``create`` and through rxllm's source on a plain client: what reaches the
upstream, and the exceptions the caller gets, must be the same.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest
from openai import AsyncOpenAI

from pipeline.core.sse_decoder import SSEMessage
from pipeline.runtime import sources
from pipeline.runtime.direct_request import direct_stream
from pipeline.runtime.http_backend import http_client
from tests.recording_upstream import Upstream, serving

VARYING = {"content-length", "host"}  # the JSON's spacing; the port is the same anyway


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with serving(Upstream()) as up:
        yield up


def openai_client(up: Upstream, **options: Any) -> AsyncOpenAI:
    options.setdefault("max_retries", 0)
    options.setdefault("default_query", {"tenant": "t1"})
    return AsyncOpenAI(
        base_url=f"http://127.0.0.1:{up.port}/v1",
        api_key="sk-test",
        organization="org-1",
        project="proj-1",
        default_headers={"X-Custom": "yes"},
        http_client=http_client(),
        **options,
    )


PARAMS: dict[str, Any] = {
    "model": "m",
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0.5,
    "extra_headers": {"X-Request": "r1"},
    "extra_query": {"q": "1"},
    "extra_body": {"mock": {"text": "x"}},
    "timeout": 7.0,
}


async def via_source(client: AsyncOpenAI, **params: Any) -> list[SSEMessage]:
    messages: list[SSEMessage] = []
    done: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
    sources.chat_completions(client, **params).subscribe(
        messages.append, done.set_result, lambda: done.set_result(None)
    )
    error = await asyncio.wait_for(done, 10)
    if error is not None:
        raise error
    return messages


async def via_sdk(client: AsyncOpenAI, **params: Any) -> None:
    kwargs = sources._request_kwargs(
        client.chat.completions.create,
        {**params, "stream": True},
        {"model": params.get("model", ""), "messages": []},
    )
    async with client.chat.completions.with_streaming_response.create(**kwargs) as response:
        await response.http_response.aread()


async def test_a_plain_client_takes_the_direct_path_and_others_the_sdks(upstream: Upstream) -> None:
    body = {"model": "m", "messages": []}
    assert direct_stream(openai_client(upstream), "/chat/completions", body) is not None
    assert direct_stream(openai_client(upstream, max_retries=2), "/chat/completions", body) is None
    azure = openai.AsyncAzureOpenAI(
        api_key="k", api_version="2024-01-01", azure_endpoint=f"http://127.0.0.1:{upstream.port}"
    )
    azure.max_retries = 0
    assert direct_stream(azure, "/chat/completions", body) is None

    async def key() -> str:
        return "k"

    provider = AsyncOpenAI(
        base_url="http://127.0.0.1:1/v1",
        api_key=key,
        max_retries=0,
        http_client=http_client(),
    )
    assert direct_stream(provider, "/chat/completions", body) is None
    assert direct_stream(openai_client(upstream), "/x", {"a": object()}) is None


async def test_the_upstream_sees_the_sdks_request(upstream: Upstream) -> None:
    client = openai_client(upstream)
    messages = await via_source(client, **PARAMS)
    assert [m.data for m in messages][-1] == "[DONE]"
    await via_sdk(client, **PARAMS)
    direct, sdk = upstream.seen
    assert (direct.method, direct.target) == (sdk.method, sdk.target)
    assert "tenant=t1" in direct.target and "q=1" in direct.target
    assert direct.body == sdk.body
    assert direct.body["mock"] == {"text": "x"} and direct.body["stream"] is True
    same = {k: v for k, v in sdk.headers.items() if k not in VARYING}
    assert {k: v for k, v in direct.headers.items() if k not in VARYING} == same
    assert direct.headers["authorization"] == "Bearer sk-test"
    assert direct.headers["x-request"] == "r1" and direct.headers["x-custom"] == "yes"
    assert direct.headers["openai-organization"] == "org-1"
    assert direct.headers["x-stainless-read-timeout"] == "7.0"


async def test_without_a_query_the_upstream_sees_the_sdks_request(upstream: Upstream) -> None:
    # No query: the request is built and sent by http_send, straight to the transport
    # once the client is open (its first request opens it).
    client = openai_client(upstream, default_query=None)
    params = {k: v for k, v in PARAMS.items() if k != "extra_query"}
    params["extra_headers"] = None
    for _ in range(2):
        await via_source(client, **params)
    await via_sdk(client, **params)
    first, direct, sdk = upstream.seen
    assert first == direct
    assert (
        (direct.method, direct.target)
        == (sdk.method, sdk.target)
        == ("POST", "/v1/chat/completions")
    )
    assert direct.body == sdk.body
    same = {k: v for k, v in sdk.headers.items() if k not in VARYING}
    assert {k: v for k, v in direct.headers.items() if k not in VARYING} == same
    assert direct.headers["authorization"] == "Bearer sk-test"


async def test_a_new_api_key_is_sent(upstream: Upstream) -> None:
    client = openai_client(upstream)
    await via_source(client, model="m", messages=[])
    client.api_key = "sk-other"
    await via_source(client, model="m", messages=[])
    assert [s.headers["authorization"] for s in upstream.seen] == [
        "Bearer sk-test",
        "Bearer sk-other",
    ]


async def raised(coro: Any) -> BaseException:
    with pytest.raises(Exception) as info:
        await coro
    return info.value


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
async def test_an_error_status_raises_the_sdks_error(
    upstream: Upstream, status: int, expected: type[Exception]
) -> None:
    upstream.status = status
    upstream.content_type = "application/json"
    upstream.body = json.dumps({"error": {"message": f"no, {status}", "type": "t"}}).encode()
    upstream.extra = {"x-request-id": "req-9"}
    client = openai_client(upstream)
    direct = await raised(via_source(client, model="m", messages=[]))
    sdk = await raised(via_sdk(client, model="m", messages=[]))
    assert type(direct) is type(sdk) is expected
    assert isinstance(direct, openai.APIStatusError) and isinstance(sdk, openai.APIStatusError)
    assert (direct.status_code, direct.message, direct.request_id, direct.body) == (
        sdk.status_code,
        sdk.message,
        sdk.request_id,
        sdk.body,
    )


async def test_a_refused_connection_raises_api_connection_error(upstream: Upstream) -> None:
    client = openai_client(upstream)
    client.base_url = "http://127.0.0.1:1/v1"  # nothing listens on port 1
    direct = await raised(via_source(client, model="m", messages=[]))
    sdk = await raised(via_sdk(client, model="m", messages=[]))
    assert type(direct) is type(sdk) is openai.APIConnectionError


async def test_a_stalled_upstream_raises_api_timeout_error(upstream: Upstream) -> None:
    upstream.stall = True
    client = openai_client(upstream)
    direct = await raised(via_source(client, model="m", messages=[], timeout=0.2))
    sdk = await raised(via_sdk(client, model="m", messages=[], timeout=0.2))
    assert type(direct) is type(sdk) is openai.APITimeoutError


async def test_anthropic_requests_and_errors_match_the_sdks(upstream: Upstream) -> None:
    client = anthropic.AsyncAnthropic(
        base_url=f"http://127.0.0.1:{upstream.port}",
        api_key="sk-ant",
        max_retries=0,
        http_client=http_client(anthropic.DefaultAsyncHttpxClient),
    )
    params = {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    assert direct_stream(client, "/v1/messages", params) is not None
    upstream.status = 529
    upstream.content_type = "application/json"
    upstream.body = json.dumps(
        {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    ).encode()
    done = asyncio.get_running_loop().create_future()
    sources.anthropic_messages(client, **params).subscribe(
        on_error=done.set_result, on_completed=lambda: done.set_result(None)
    )
    direct = await asyncio.wait_for(done, 10)
    kwargs = {**params, "stream": True, "extra_body": {**params, "stream": True}}
    sdk = await raised(_anthropic_sdk(client, kwargs))
    assert type(direct) is type(sdk)
    assert isinstance(direct, anthropic.APIStatusError) and direct.status_code == 529
    first, second = upstream.seen
    assert first.target == second.target == "/v1/messages"
    assert first.body == second.body
    assert first.headers["authorization"] == "Bearer sk-ant"  # this SDK's way of sending a key
    same = {k: v for k, v in second.headers.items() if k not in VARYING}
    assert {k: v for k, v in first.headers.items() if k not in VARYING} == same


async def _anthropic_sdk(client: anthropic.AsyncAnthropic, kwargs: dict[str, Any]) -> None:
    async with client.messages.with_streaming_response.create(**kwargs) as response:
        await response.http_response.aread()
