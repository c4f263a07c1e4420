"""A response body's chunks framed without h11 (``pipeline.apps.server.chunked_body``).

Over a real socket to uvicorn's h11 protocol, the same app sends the same
body messages once through uvicorn's ``send`` and once through
:func:`body_send`: the bytes on the wire must be the same, byte for byte,
for HTTP/1.1 (chunked), HTTP/1.0 (the body ends with the connection) and
``HEAD`` (no body); and for a chunked response h11 must not have been asked
to write the middle chunks (else the fast path is not taken at all).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
import httpx
import pytest
from starlette.types import Receive, Scope, Send

from pipeline.apps.builtin_model import MockServer
from pipeline.apps.server.chunked_body import ChunkedBodySend, body_send
from pipeline.apps.server.server_settings import ServerSettings
from pipeline.core.sse_decoder import SSEDecoder
from tests.serving import app_in_loop

PARTS = [b"data: one\n\n", b"", b"x" * 70_000, b"\r\n0\r\n\r\n", b"data: \xc3\xa9\n\n"]
LAST = b"data: [DONE]\n\n"


def make_app(fast: bool, parts: list[bytes]) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        body = body_send(send) if fast else send
        for part in parts:
            await body({"type": "http.response.body", "body": part, "more_body": True})
        await body({"type": "http.response.body", "body": LAST, "more_body": False})

    return app


async def exchange(fast: bool, request: bytes, parts: list[bytes] = PARTS) -> bytes:
    """The raw answer of the app to ``request`` (read until the server closes)."""
    async with app_in_loop(ServerSettings(store=False), app=make_app(fast, parts)) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"date:")]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


REQUESTS = {
    "http11": b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    "http10": b"GET / HTTP/1.0\r\n\r\n",
    "head": b"HEAD / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
}


@pytest.mark.parametrize("kind", list(REQUESTS))
async def test_the_bytes_on_the_wire_are_uvicorns(kind: str) -> None:
    plain = await exchange(False, REQUESTS[kind])
    fast = await exchange(True, REQUESTS[kind])
    assert fast == plain
    content = b"".join(PARTS) + LAST
    if kind == "http11":
        assert b"transfer-encoding: chunked" in plain.lower() and content not in plain
    elif kind == "http10":
        assert plain.endswith(b"\r\n\r\n" + content)
    else:
        assert plain.endswith(b"\r\n\r\n")


async def test_h11_writes_only_the_end_of_a_chunked_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """The middle chunks skip h11; the last message (and the end) is h11's.

    (An empty body message, or one sent while the socket's buffer is full,
    goes to h11 as well: these parts are neither.)
    """
    sent: list[str] = []
    original = h11.Connection.send_with_data_passthrough

    def spy(self: h11.Connection, event: Any) -> Any:
        sent.append(type(event).__name__)
        return original(self, event)

    monkeypatch.setattr(h11.Connection, "send_with_data_passthrough", spy)
    parts = [b"data: %d\n\n" % i for i in range(5)]
    raw = await exchange(True, REQUESTS["http11"], parts)
    frames = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in [*parts, LAST])
    assert raw.endswith(b"\r\n\r\n" + frames + b"0\r\n\r\n")
    assert sent[:3] == ["Response", "Data", "EndOfMessage"]
    assert set(sent[3:]) <= {"ConnectionClosed"}


async def test_write_now_declines_what_only_h11_may_write() -> None:
    """``write_now`` writes a chunked response's middle chunk; not a HEAD's, not HTTP/1.0's."""
    seen: dict[str, list[bool]] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await make_app(False, [])(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        fast = body_send(send)
        assert isinstance(fast, ChunkedBodySend)
        seen[scope["method"] + scope["http_version"]] = [fast.write_now(b"a"), fast.write_now(b"")]
        await send({"type": "http.response.body", "body": b"b", "more_body": False})
        seen[scope["method"] + scope["http_version"]].append(fast.write_now(b"c"))  # the end

    async with app_in_loop(ServerSettings(store=False), app=app) as (port, _):
        for request in REQUESTS.values():
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            await asyncio.wait_for(reader.read(), 10)
            writer.close()
    assert seen == {
        "GET1.1": [True, False, False],
        "GET1.0": [False, False, False],
        "HEAD1.1": [False, False, False],
    }


async def test_rxllm_writes_a_streams_tokens_with_write_now(
    upstream: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through rxllm's app: each token goes out by ``write_now`` (no message, no coroutine)."""
    wrote: list[bytes] = []
    original = ChunkedBodySend.write_now

    def spy(self: ChunkedBodySend, body: bytes) -> bool:
        done = original(self, body)
        if done:
            wrote.append(body)
        return done

    sends: list[Any] = []
    original_send = ChunkedBodySend.__call__

    async def spy_send(self: ChunkedBodySend, message: Any) -> None:
        sends.append(message)
        await original_send(self, message)

    monkeypatch.setattr(ChunkedBodySend, "write_now", spy)
    monkeypatch.setattr(ChunkedBodySend, "__call__", spy_send)
    words = [f"w{i}" for i in range(40)]
    body = {
        "model": "m",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "mock": {"text": " ".join(words), "interval": 0.001},
    }
    settings = ServerSettings(upstream=upstream.base_url, store=False)
    async with app_in_loop(settings) as (port, _), httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body)
    frames = SSEDecoder().decode(answer.content)
    assert frames[-1].data == "[DONE]"
    text = "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in (json.loads(f.data) for f in frames[:-1])
        if c["choices"]
    )
    assert text.split() == words
    written = SSEDecoder().decode(b"".join(wrote))
    assert len(written) >= len(words) - 1  # all but what went out with the head
    assert len(sends) <= 3, "only the writer task's tail and end are messages"
