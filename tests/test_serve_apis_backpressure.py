"""A client that never reads: on /v1/messages and /v1/responses, the send timeout
gives up on it and the upstream request is cancelled (the upstream sees the
connection close), as on /v1/chat/completions.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from pipeline.apps.builtin_model import MockServer
from pipeline.apps.server.server_settings import ServerSettings
from pipeline.runtime.upstreams import API_NAMES
from tests.serving import app_in_loop

pytestmark = pytest.mark.slow  # waits for send timeouts on a slow half-megabyte answer


@pytest.fixture
def upstream() -> Iterator[MockServer]:
    with MockServer() as server:
        yield server


@pytest.fixture
async def served(upstream: MockServer) -> AsyncIterator[int]:
    """rxllm's app on a loopback port, with a short send timeout."""
    settings = ServerSettings(
        upstream=upstream.base_url,
        upstream_apis=API_NAMES,
        store=False,
        send_timeout=0.5,
        heartbeat=60.0,
    )
    async with app_in_loop(settings, send_buffer=4096) as (port, _):
        yield port


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/messages", {"max_tokens": 100000, "messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/responses", {"input": "hi"}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ],
    ids=["messages", "responses", "chat"],
)
async def test_a_reader_that_never_reads_is_given_up_and_upstream_cancelled(
    served: int, upstream: MockServer, path: str, body: dict[str, Any]
) -> None:
    request: dict[str, Any] = {
        "model": "m",
        "stream": True,
        **body,
        # a slow upstream (minutes of answer) whose frames fill the small buffers in a second
        "mock": {"text": "word " * 100000, "interval": 0.001},
    }
    payload = json.dumps(request).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    ).encode()
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(client, ("127.0.0.1", served))
        await loop.sock_sendall(client, head + payload)
        for _ in range(200):  # the request reaches the upstream
            record = upstream.recorder.last_request if upstream.recorder.requests else None
            if record is not None and record.path == path:
                break
            await asyncio.sleep(0.05)
        assert record is not None and record.connection is not None
        # never read: the writes stall, the send timeout fires, the upstream is cancelled
        closed_at = await record.connection.wait_closed_async(timeout=20)
        assert closed_at is not None
        for _ in range(100):
            if record.outcome is not None:
                break
            await asyncio.sleep(0.05)
        assert record.outcome == "client_gone"
    finally:
        client.close()
