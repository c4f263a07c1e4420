"""``rxllm serve`` end to end: a real process, real sockets, real clients.

The upstream is the built-in model in this test process, so the tests see
the upstream's side too (when its connection closed, what it received).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from openai import AsyncOpenAI, NotFoundError, RateLimitError
from openai.types.chat import ChatCompletionMessageParam

from pipeline.apps.builtin_model import MockScript, MockServer
from tests.serving import ServeProcess

pytestmark = pytest.mark.slow  # an `rxllm serve` process per module, real clients

UPSTREAM_KEY = "sk-upstream-SECRET-4f1c9e0b7a"
AUTH_TOKEN = "serve-token-8d2e"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]
TOOL_CALLS = [
    {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "unit": "c"})},
    {"name": "get_time", "arguments": json.dumps({"tz": "Europe/Paris"})},
]


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockServer]:
    with MockServer(MockScript(), models=("mock-model",), strict_models=True) as server:
        yield server


@pytest.fixture(scope="module")
def served(
    upstream: MockServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("serve")
    db = f"sqlite+aiosqlite:///{tmp / 'transcripts.db'}"
    args = ["--upstream", upstream.base_url, "--api-key", UPSTREAM_KEY, "--db", db]
    with ServeProcess(*args, log_path=tmp / "serve.log") as proc:
        yield proc


@pytest.fixture
async def client(served: ServeProcess) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=served.base_url, api_key="anything", max_retries=0) as c:
        yield c


@pytest.fixture
async def direct(upstream: MockServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=upstream.base_url, api_key="k", max_retries=0) as c:
        yield c


async def final(client: AsyncOpenAI, mock: dict[str, Any]) -> Any:
    async with client.chat.completions.stream(
        model="mock-model",
        messages=MESSAGES,
        stream_options={"include_usage": True},
        extra_body={"mock": mock},
    ) as stream:
        return await stream.get_final_completion()


@pytest.mark.parametrize(
    "mock",
    [
        {"text": "Hello there, through the processing layer!"},
        {"tool_calls": TOOL_CALLS, "fragment_size": 4},
        {"reasoning": "Let me think.", "text": "Done."},
    ],
    ids=["text", "parallel-tools", "reasoning"],
)
async def test_openai_sdk_gets_the_same_message_through_serve(
    client: AsyncOpenAI, direct: AsyncOpenAI, mock: dict[str, Any]
) -> None:
    through, straight = await final(client, mock), await final(direct, mock)
    a, b = through.choices[0], straight.choices[0]
    assert a.message.content == b.message.content
    assert a.finish_reason == b.finish_reason
    calls_a = [(t.function.name, t.function.arguments) for t in a.message.tool_calls or []]
    calls_b = [(t.function.name, t.function.arguments) for t in b.message.tool_calls or []]
    assert calls_a == calls_b
    assert through.usage is not None and straight.usage is not None
    assert through.usage.completion_tokens == straight.usage.completion_tokens


async def test_non_streaming_request(client: AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="mock-model",
        messages=MESSAGES,
        extra_body={"mock": {"text": "Plain answer."}},
    )
    assert completion.choices[0].message.content == "Plain answer."
    assert completion.choices[0].finish_reason == "stop"


async def test_stream_id_header_and_resume_from_last_event_id(served: ServeProcess) -> None:
    body = {
        "model": "mock-model",
        "messages": MESSAGES,
        "stream": True,
        "mock": {"text": "one two three four five"},
    }
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            stream_id = response.headers["x-rxllm-stream-id"]
            raw = [line async for line in response.aiter_lines()]
        assert raw[-2:] == ["data: [DONE]", ""]
        everything = await rxllm_events(http, stream_id, None)
        assert [e["seq"] for e in everything] == list(range(len(everything)))
        assert everything[-1]["type"] == "finished"
        resumed = await rxllm_events(http, stream_id, "3")
        assert resumed == everything[4:]


async def rxllm_events(http: httpx.AsyncClient, stream_id: str, last: str | None) -> list[Any]:
    headers = {} if last is None else {"Last-Event-ID": last}
    out = []
    async with aconnect_sse(
        http, "GET", f"/v1/streams/{stream_id}/events", headers=headers
    ) as source:
        async for sse in source.aiter_sse():
            out.append(json.loads(sse.data))
            assert sse.event == out[-1]["type"]
            assert sse.id == str(out[-1]["seq"])
    return out


async def test_client_disconnect_cancels_upstream_within_100ms(
    served: ServeProcess, upstream: MockServer
) -> None:
    body = {
        "model": "mock-model",
        "messages": MESSAGES,
        "stream": True,
        "mock": {"text": " ".join(["tok"] * 400), "interval": 0.01},
    }
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        before = await metric(http, "rxllm_stream_cancellations_total")
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = response.aiter_lines()
            while "tok" not in await anext(lines):
                pass
            request = upstream.recorder.last_request
            connection = request.connection
            assert connection is not None and connection.closed_at is None
            left_at = time.monotonic()
        # leaving the block closed our connection mid-stream
        closed_at = await connection.wait_closed_async(timeout=5)
        assert closed_at - left_at < 0.1
        for _ in range(100):
            if await metric(http, "rxllm_stream_cancellations_total") > before:
                break
            await asyncio.sleep(0.05)
        assert await metric(http, "rxllm_stream_cancellations_total") == before + 1


async def metric(http: httpx.AsyncClient, name: str) -> float:
    text = (await http.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


async def test_upstream_error_before_first_token_keeps_its_status(client: AsyncOpenAI) -> None:
    with pytest.raises(RateLimitError):
        await client.chat.completions.create(
            model="mock-model",
            messages=MESSAGES,
            stream=True,
            extra_body={"mock": {"status": 429, "retry_after": 0.01}},
        )
    with pytest.raises(NotFoundError, match="does not exist"):
        await client.chat.completions.create(model="no-such-model", messages=MESSAGES)


async def test_error_after_first_token_is_an_event_with_the_partial_kept(
    served: ServeProcess,
) -> None:
    body = {
        "model": "mock-model",
        "messages": MESSAGES,
        "stream": True,
        "mock": {"text": "one two three", "error_after": 2, "error_message": "overloaded"},
    }
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            stream_id = response.headers["x-rxllm-stream-id"]
            text = "".join([line async for line in response.aiter_lines()])
        assert "overloaded" in text and "[DONE]" not in text
        events = await rxllm_events(http, stream_id, None)
        assert events[-1]["type"] == "error"
        assert events[-1]["after_first_token"] is True
        content = "".join(e["text"] for e in events if e["type"] == "text")
        assert content == "one two"


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'{"model": "mock-model"}', 400, "invalid_request"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "invalid_request"),
        (b'{"model": "mock-model", "messages": []}', 400, "invalid_request"),
        (b'{"model": "m", "messages": "nope"}', 400, "invalid_request"),
        (
            b'{"model": "mock-model", "messages": [{"role":"user","content":"'
            + b"x" * (5 << 20)
            + b'"}]}',
            413,
            "body_too_large",
        ),
    ],
    ids=[
        "bad-json",
        "not-object",
        "no-messages",
        "no-model",
        "empty-messages",
        "wrong-type",
        "huge",
    ],
)
async def test_malformed_requests_get_a_clear_4xx_and_the_server_keeps_serving(
    served: ServeProcess, client: AsyncOpenAI, content: bytes, status: int, code: str
) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
        response = await http.post(
            "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
        )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    ok = await client.chat.completions.create(
        model="mock-model",
        messages=MESSAGES,
        extra_body={"mock": {"text": "still here"}},
    )
    assert ok.choices[0].message.content == "still here"


async def test_unknown_route_and_method_are_json_errors(served: ServeProcess) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        assert (await http.get("/nope")).json()["error"]["code"] == "http_error"
        response = await http.get("/v1/chat/completions")
        assert response.status_code == 405


async def test_transcripts_are_stored_and_queryable(
    served: ServeProcess, client: AsyncOpenAI
) -> None:
    await final(client, {"text": "remember this sentence"})
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        for _ in range(100):
            listing = (await http.get("/v1/transcripts", params={"q": "remember"})).json()
            if listing["data"]:
                break
            await asyncio.sleep(0.05)
        assert listing["data"], "the transcript was not stored"
        item = listing["data"][0]
        one = (await http.get(f"/v1/transcripts/{item['id']}")).json()
        assert one["status"] == "finished"
        assert one["events"][-1]["type"] == "finished"


async def test_page_is_served(served: ServeProcess) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        page = await http.get("/")
    assert page.status_code == 200
    assert "EventSource" in page.text


def test_upstream_key_never_leaks(served: ServeProcess, upstream: MockServer) -> None:
    """Runs last in this module: everything the server wrote so far is checked."""
    assert UPSTREAM_KEY not in served.log()
    metrics = httpx.get(f"{served.url}/metrics").text
    assert UPSTREAM_KEY not in metrics
    for request in upstream.recorder.requests:
        assert UPSTREAM_KEY not in json.dumps(request.headers)
    db = Path(served.args[served.args.index("--db") + 1].split("///", 1)[1])
    for path in db.parent.glob("transcripts.db*"):
        assert UPSTREAM_KEY.encode() not in path.read_bytes()


def test_every_route_but_the_page_requires_the_token_when_one_is_set(
    upstream: MockServer, tmp_path: Path
) -> None:
    args = ["--upstream", upstream.base_url, "--api-key", UPSTREAM_KEY, "--no-store"]
    with ServeProcess(
        *args, log_path=tmp_path / "serve.log", env={"RXLLM_AUTH_TOKEN": AUTH_TOKEN}
    ) as proc:
        routes = [
            ("GET", "/metrics"),
            ("GET", "/v1/models"),
            ("GET", "/v1/transcripts"),
            ("GET", "/v1/streams/x/events"),
            ("POST", "/v1/chat/completions"),
            ("POST", "/api/chat"),
            ("POST", "/v1/streams"),
            ("POST", "/"),
            ("GET", "/nope"),
        ]
        with httpx.Client(base_url=proc.url, timeout=10) as http:
            for method, path in routes:
                for headers in (
                    {},
                    {"Authorization": "Bearer wrong"},
                    {"Authorization": AUTH_TOKEN},
                ):
                    response = http.request(method, path, headers=headers)
                    assert response.status_code == 401, (method, path, headers)
                    assert UPSTREAM_KEY not in response.text
            page = http.get("/")  # static HTML that asks for the token: no data in it
            assert page.status_code == 200 and AUTH_TOKEN not in page.text
            ok = http.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {AUTH_TOKEN}"},
                json={"model": "mock-model", "messages": MESSAGES},
            )
            assert ok.status_code == 200
            assert UPSTREAM_KEY not in ok.text
        assert UPSTREAM_KEY not in proc.log()
        assert AUTH_TOKEN not in proc.log()


def test_a_stream_started_with_the_token_is_read_with_its_capability_url(
    upstream: MockServer, tmp_path: Path
) -> None:
    """What the chat page does when the server has a token: EventSource sends no header."""
    from pipeline.apps.server.bearer_auth import read_capability

    args = ["--upstream", upstream.base_url, "--model", "mock-model", "--no-store"]
    bearer = {"Authorization": f"Bearer {AUTH_TOKEN}"}
    body = {"messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
    with ServeProcess(
        *args, log_path=tmp_path / "serve.log", env={"RXLLM_AUTH_TOKEN": AUTH_TOKEN}
    ) as proc:
        with httpx.Client(base_url=proc.url, timeout=10) as http:
            assert http.post("/v1/streams", json=body).status_code == 401
            started = http.post("/v1/streams", json=body, headers=bearer)
            assert started.status_code == 201, started.text
            stream_id, url = started.json()["id"], started.json()["events_url"]
            other = http.post("/v1/streams", json=body, headers=bearer).json()
            assert AUTH_TOKEN not in url
            assert url.startswith(f"/v1/streams/{stream_id}/events?")  # a path, from the root
            read = http.get(url)
            assert read.status_code == 200
            assert read.headers["content-type"].startswith("text/event-stream")
            assert "event: finished" in read.text
            query = url.split("?", 1)[1]
            expired = int(time.time()) - 1
            refused = [
                f"/v1/streams/{other['id']}/events?{query}",  # another stream
                f"/v1/streams/{stream_id}/events",  # no capability
                url.replace("access=", "access=0"),  # tampered
                f"/v1/streams/{stream_id}/events?access="
                f"{read_capability(AUTH_TOKEN, stream_id, expired)}&expires={expired}",
                f"/v1/streams/{stream_id}/cancel?{query}",  # reading only
            ]
            for path in refused:
                method = "POST" if path.split("?")[0].endswith("/cancel") else "GET"
                assert http.request(method, path).status_code == 401, path
            assert http.get(other["events_url"]).status_code == 200  # its own capability
        assert AUTH_TOKEN not in proc.log()
        # The capability is a credential for an hour: the access log masks it.
        capability = query.split("access=", 1)[1].split("&", 1)[0]
        assert capability not in proc.log()
        assert "access=***" in proc.log()


async def test_resume_older_than_the_replay_buffer_is_served_from_the_store(
    upstream: MockServer, tmp_path: Path
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'small.db'}"
    args = ["--upstream", upstream.base_url, "--db", db, "--replay-size", "4"]
    text = " ".join(f"w{i}" for i in range(20))
    body = {"model": "mock-model", "messages": MESSAGES, "stream": True, "mock": {"text": text}}
    with ServeProcess(*args, log_path=tmp_path / "serve.log") as proc:
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as http:
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                stream_id = response.headers["x-rxllm-stream-id"]
                _ = [line async for line in response.aiter_lines()]
            resumed = await rxllm_events(http, stream_id, "2")
    assert [e["seq"] for e in resumed] == list(range(3, 3 + len(resumed)))
    assert resumed[-1]["type"] == "finished"
    # seq 0 started, 1 the empty first content, 2 "w0": the rest follows, from the store,
    # since the live buffer holds only the last 4 events
    assert "".join(e["text"] for e in resumed if e["type"] == "text") == "".join(
        f" w{i}" for i in range(1, 20)
    )


async def test_first_token_timeout_per_request_header(served: ServeProcess) -> None:
    body = {
        "model": "mock-model",
        "messages": MESSAGES,
        "stream": True,
        "mock": {"text": "late", "stall": 30},
    }
    async with httpx.AsyncClient(base_url=served.url, timeout=20) as http:
        started = time.monotonic()
        response = await http.post(
            "/v1/chat/completions", json=body, headers={"x-rxllm-first-token-timeout": "0.2"}
        )
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "timeout"
        assert time.monotonic() - started < 15  # the 30 s stall was cut short
        bad = await http.post(
            "/v1/chat/completions", json=body, headers={"x-rxllm-idle-timeout": "soon"}
        )
        assert bad.status_code == 400


def test_config_file_failover_and_key_pool(tmp_path: Path) -> None:
    """--config: a dead first upstream fails over; a rejected key leaves the pool, counted."""
    bad, good = "sk-pool-REJECTED-1111", "sk-pool-GOOD-2222"
    with MockServer(reject_keys={bad}) as healthy:
        config = tmp_path / "upstreams.toml"
        config.write_text(
            f"""
[failover]
retries = 1
backoff = 0.01

[[upstreams]]
name = "dead"
base_url = "http://127.0.0.1:9/v1"

[[upstreams]]
name = "pool"
base_url = "{healthy.base_url}"
api_key_env = "TEST_POOL_KEYS"
"""
        )
        env = {"TEST_POOL_KEYS": f"{bad},{good}"}
        args = ["--config", str(config), "--model", "mock-model", "--no-store"]
        with ServeProcess(*args, log_path=tmp_path / "serve.log", env=env) as proc:
            with httpx.Client(base_url=proc.url, timeout=20) as http:
                for i in range(3):
                    answer = http.post(
                        "/v1/chat/completions",
                        json={
                            "model": "mock-model",
                            "messages": MESSAGES,
                            "mock": {"text": f"answer {i}"},
                        },
                    )
                    assert answer.status_code == 200, answer.text
                    assert answer.json()["choices"][0]["message"]["content"] == f"answer {i}"
                metrics = http.get("/metrics").text
            log = proc.log()
    assert 'rxllm_failovers_total{from_upstream="dead",to_upstream="pool"}' in metrics
    assert 'rxllm_api_keys_removed_total{upstream="pool"} 1.0' in metrics
    for key in (bad, good):
        assert key not in log and key not in metrics
