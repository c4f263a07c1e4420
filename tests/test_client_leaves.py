"""A client that leaves stops its upstream request, whatever it was waiting for.

Regression tests for clients leaving before any response was sent (a
non-streaming request, a stream before its first token, a stream waiting for
a failover's backoff), which kept the upstream request running (and billed)
to its end; and for streams started on ``POST /v1/streams`` that nobody reads.
The upstream is the built-in model in this process: its traffic log says when
each upstream request's connection closed and how its response ended.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.apps.builtin_model import MockScript, MockServer
from pipeline.apps.builtin_model.traffic_log import RequestRecord
from tests.serving import ServeProcess

pytestmark = pytest.mark.slow  # starts rxllm serve

MESSAGES = [{"role": "user", "content": "Say hello"}]
STALL = 30.0  # far longer than any wait below: an upstream request that ends was cancelled


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockServer]:
    # It stalls unless told otherwise: /api/chat passes no "mock" field to choose.
    with MockServer(MockScript(text="late", stall=STALL)) as server:
        yield server


@pytest.fixture(scope="module")
def served(
    upstream: MockServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("leaves")
    db = f"sqlite+aiosqlite:///{tmp / 'transcripts.db'}"
    args = ["--upstream", upstream.base_url, "--api-key", "k", "--db", db]
    with ServeProcess(*args, log_path=tmp / "serve.log") as proc:
        yield proc


async def cancellations(http: httpx.AsyncClient) -> float:
    """The ``client_gone`` cancellations counted so far."""
    text = (await http.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("rxllm_stream_cancellations_total{") and 'reason="client_gone"' in line
    )


async def counted(http: httpx.AsyncClient, target: float) -> float:
    for _ in range(200):
        value = await cancellations(http)
        if value >= target:
            return value
        await asyncio.sleep(0.05)
    return await cancellations(http)


async def post_then_leave(
    served: ServeProcess, upstream: MockServer, path: str, body: dict[str, Any], requests: int = 1
) -> list[RequestRecord]:
    """Send ``body`` on a raw socket; once the upstream has ``requests`` of it, close the socket."""
    recorder = upstream.recorder
    before = len(recorder.requests)
    _reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    data = json.dumps(body).encode()
    writer.write(
        f"POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\n\r\n".encode()
        + data
    )
    await writer.drain()
    await recorder.wait_for_async(lambda: len(recorder.requests) >= before + requests, timeout=10)
    writer.close()
    await writer.wait_closed()
    return recorder.requests[before:]


NON_STREAMING: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "m", "messages": MESSAGES},
    "/v1/responses": {"model": "m", "input": "Say hello"},
    "/v1/messages": {"model": "m", "max_tokens": 64, "messages": MESSAGES},
}


@pytest.mark.parametrize("path", list(NON_STREAMING))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "before-first-token"])
async def test_a_client_that_leaves_before_the_answer_cancels_the_upstream(
    served: ServeProcess, upstream: MockServer, path: str, stream: bool
) -> None:
    body = {**NON_STREAMING[path], "stream": stream}  # the upstream stalls by default
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        before = await cancellations(http)
        (request,) = await post_then_leave(served, upstream, path, body)
        assert request.connection is not None
        await request.connection.wait_closed_async(timeout=10)
        assert await counted(http, before + 1) == before + 1


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
async def test_a_streaming_client_that_leaves_before_the_first_token_cancels_the_upstream(
    served: ServeProcess, upstream: MockServer, path: str
) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    body["mock"] = {"text": "late", "stall": STALL}
    if path == "/api/chat":
        body["messages"] = [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        before = await cancellations(http)
        (request,) = await post_then_leave(served, upstream, path, body)
        assert request.connection is not None
        await request.connection.wait_closed_async(timeout=10)
        assert await counted(http, before + 1) == before + 1


async def test_a_client_that_leaves_during_a_retry_backoff_stops_the_retries(
    served: ServeProcess, upstream: MockServer
) -> None:
    # The first attempt gets a 503 asking to wait 1.5 s (the longest wait is 2 s); the
    # client leaves meanwhile.
    mock = {"status": 503, "retry_after": 1.5, "fail_first": 1, "fault_key": "backoff-leave"}
    body = {"model": "m", "messages": MESSAGES, "stream": True, "mock": mock}
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        before = await cancellations(http)
        requests = await post_then_leave(served, upstream, "/v1/chat/completions", body)
        assert await counted(http, before + 1) == before + 1
        # Cancelled: the retry's timer is disposed with the stream; no second attempt.
        later = [r for r in upstream.recorder.requests if r.script == mock]
        assert later == requests


async def test_a_stream_nobody_reads_is_cancelled_after_the_orphan_grace(
    served: ServeProcess, upstream: MockServer
) -> None:
    body = {"model": "m", "messages": MESSAGES, "mock": {"text": "late", "stall": STALL}}
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        before = len(upstream.recorder.requests)
        response = await http.post("/v1/streams", json=body)
        assert response.status_code == 201
        recorder = upstream.recorder
        await recorder.wait_for_async(lambda: len(recorder.requests) > before, timeout=10)
        request = recorder.requests[before]
        assert request.connection is not None
        await request.connection.wait_closed_async(timeout=STALL / 2)
        transcript = await wait_for_status(http, response.json()["id"])
        assert transcript["status"] == "cancelled"


async def test_a_reader_that_leaves_an_events_stream_cancels_it_after_the_grace(
    served: ServeProcess, upstream: MockServer
) -> None:
    mock = {"text": "one two three", "stall": STALL, "stall_after": 1}
    body = {"model": "m", "messages": MESSAGES, "mock": mock}
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        stream_id = (await http.post("/v1/streams", json=body)).json()["id"]
        async with http.stream("GET", f"/v1/streams/{stream_id}/events") as events:
            lines = events.aiter_lines()
            while '"text"' not in await anext(lines):
                pass
            request = upstream.recorder.last_request
        assert request.connection is not None
        await request.connection.wait_closed_async(timeout=STALL / 2)
        transcript = await wait_for_status(http, stream_id)
        assert transcript["status"] == "cancelled"
        assert transcript["content"] == "one"


async def wait_for_status(http: httpx.AsyncClient, stream_id: str) -> dict[str, Any]:
    for _ in range(200):
        response = await http.get(f"/v1/transcripts/{stream_id}")
        if response.status_code == 200 and response.json()["status"] != "running":
            body: dict[str, Any] = response.json()
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"stream {stream_id} still running")


def test_serve_log_has_no_traceback(served: ServeProcess) -> None:
    assert "Traceback" not in served.log()
    assert isinstance(served.log_path, Path)
