"""A body read straight from the h11 connection (``http_body.raw_body``), over real sockets.

Each behaviour is checked on both paths, ``raw_body`` and httpx2's own
``aiter_raw``, and on both network backends (rxllm's asyncio backend and the
SDK's default one): the same bytes, the same exceptions, the same fate of the
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx2
import pytest
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from pipeline.apps.builtin_model import MockServer
from pipeline.runtime.http_backend import http_client
from pipeline.runtime.http_body import raw_body
from tests.test_netbackend import consume

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
BACKENDS = ["asyncio", "default"]


@pytest.fixture(scope="module")
def server() -> Any:
    with MockServer() as srv:
        yield srv


@pytest.fixture(params=BACKENDS)
async def http(request: pytest.FixtureRequest) -> AsyncIterator[httpx2.AsyncClient]:
    client = http_client() if request.param == "asyncio" else DefaultAsyncHttpxClient()
    async with client:
        yield client


def _body(mock: dict[str, Any]) -> dict[str, Any]:
    return {"model": "mock-model", "messages": MESSAGES, "stream": True, "mock": mock}


def _chunks(response: httpx2.Response, fast: bool) -> AsyncGenerator[bytes, None]:
    if not fast:
        return response.aiter_raw()
    body = raw_body(response)
    assert body is not None, "the fast path was not taken"
    return body


async def _read(
    http: httpx2.AsyncClient,
    server: MockServer,
    mock: dict[str, Any],
    fast: bool,
    limits: httpx2.Timeout | None = None,
) -> bytes:
    received = bytearray()
    url = server.base_url + "/chat/completions"
    timeout = httpx2.USE_CLIENT_DEFAULT if limits is None else limits
    async with http.stream("POST", url, json=_body(mock), timeout=timeout) as response:
        chunks = _chunks(response, fast)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                received += chunk
    return bytes(received)


def _connections(http: httpx2.AsyncClient) -> list[Any]:
    return list(http._transport._pool.connections)  # type: ignore[attr-defined]


@pytest.mark.parametrize("fast", [True, False])
async def test_the_same_bytes_and_the_connection_back_in_the_pool(
    http: httpx2.AsyncClient, server: MockServer, fast: bool
) -> None:
    words = " ".join(f"w{i}" for i in range(50))
    first = await _read(http, server, {"text": words, "interval": 0.001}, fast)
    second = await _read(http, server, {"text": words}, fast)
    assert first.count(b"data: ") == second.count(b"data: ") == 50 + 3  # role, finish, [DONE]
    assert first.rstrip().endswith(b"data: [DONE]")
    (connection,) = _connections(http)  # one connection, used twice
    assert connection.is_idle() and "Request Count: 2" in connection.info()


@pytest.mark.parametrize("fast", [True, False])
async def test_a_reader_that_leaves_early_closes_the_connection(
    http: httpx2.AsyncClient, server: MockServer, fast: bool
) -> None:
    url = server.base_url + "/chat/completions"
    mock = {"text": " ".join(["w"] * 100), "interval": 0.01}
    async with http.stream("POST", url, json=_body(mock)) as response:
        chunks = _chunks(response, fast)
        async with contextlib.aclosing(chunks):
            async for _ in chunks:
                break
        assert response.is_closed
    assert _connections(http) == []  # not handed back half-read


@pytest.mark.parametrize("fast", [True, False])
async def test_a_stall_mid_body_is_httpx2s_read_timeout(
    http: httpx2.AsyncClient, server: MockServer, fast: bool
) -> None:
    mock = {"text": "one two three", "stall": 5, "stall_after": 2}
    with pytest.raises(httpx2.ReadTimeout) as caught:
        await _read(http, server, mock, fast, httpx2.Timeout(10, read=0.3))
    assert caught.value.request.url.path.endswith("/chat/completions")
    assert _connections(http) == []


@pytest.mark.parametrize("reset", [False, True])
async def test_a_connection_dropped_mid_body_raises_what_httpx2_raises(
    http: httpx2.AsyncClient, server: MockServer, reset: bool
) -> None:
    mock = {"text": "one two three four", "drop_after": 2, "drop_reset": reset}
    raised: list[tuple[type[BaseException], str]] = []
    for fast in (True, False):
        with pytest.raises(httpx2.TransportError) as caught:
            await _read(http, server, mock, fast)
        raised.append((type(caught.value), str(caught.value)))
        assert caught.value.request is not None
    assert raised[0] == raised[1]


async def test_gaps_below_the_read_timeout_never_time_out(
    http: httpx2.AsyncClient, server: MockServer
) -> None:
    """The read timeout counts from each read, not from the first one of the connection."""
    mock = {"text": " ".join(["w"] * 12), "interval": 0.1}  # 1.2 s in all
    body = await _read(http, server, mock, True, httpx2.Timeout(10, read=0.6))
    assert body.count(b"data: ") == 12 + 3


async def test_a_shorter_read_timeout_on_a_reused_connection(
    http: httpx2.AsyncClient, server: MockServer
) -> None:
    """A connection whose last read had a long timeout still times out a later, shorter one."""
    await _read(http, server, {"text": "a b", "interval": 0.01}, True, httpx2.Timeout(60))
    stalled = {"text": "one two", "stall": 30, "stall_after": 1}
    with pytest.raises(httpx2.ReadTimeout):
        await asyncio.wait_for(_read(http, server, stalled, True, httpx2.Timeout(60, read=0.3)), 20)


async def test_the_usual_path_where_httpcore2s_hooks_are_on(
    http: httpx2.AsyncClient, server: MockServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``trace`` extension or httpcore2's debug log: ``raw_body`` leaves the body to httpx2."""
    url = server.base_url + "/chat/completions"
    traced: list[str] = []

    async def trace(name: str, info: dict[str, Any]) -> None:
        traced.append(name)

    extensions = {"trace": trace}
    async with http.stream("POST", url, json=_body({"text": "a"}), extensions=extensions) as r:
        assert raw_body(r) is None
        async for _ in r.aiter_raw():
            pass
    assert "http11.receive_response_body.complete" in traced
    with caplog.at_level(logging.DEBUG, logger="httpcore2.http11"):
        async with http.stream("POST", url, json=_body({"text": "a"})) as response:
            assert raw_body(response) is None
            await response.aread()
    async with http.stream("POST", url, json=_body({"text": "a"})) as response:
        await response.aread()
        assert raw_body(response) is None  # read already: aiter_raw says so


async def test_a_stalled_upstream_through_the_source_is_a_timeout(server: MockServer) -> None:
    async with AsyncOpenAI(
        base_url=server.base_url,
        api_key="k",
        max_retries=0,
        timeout=httpx2.Timeout(10, read=0.3),
        http_client=http_client(),
    ) as client:
        result = await consume(client, {"text": "one two three", "stall": 5, "stall_after": 1})
    assert result.status == "error" and result.error is not None
    assert result.error["kind"] == "timeout"
    assert result.choices[0].content == "one"


def _frame(text: str) -> bytes:
    return b"data: " + text.encode() + b"\n\n"


def _chunk(data: bytes, size: str | None = None) -> bytes:
    return (size or f"{len(data):x}").encode() + b"\r\n" + data + b"\r\n"


ONE, TWO, THREE = _frame("one"), _frame("two\r\n\r\nthree"), _frame("x" * 300)
PIECES = {
    "whole chunks": [_chunk(ONE), _chunk(TWO), _chunk(THREE)],
    "chunks split anywhere": [
        *(_chunk(ONE)[:1], _chunk(ONE)[1:5], _chunk(ONE)[5:], _chunk(TWO)[:-1]),
        *(_chunk(TWO)[-1:] + _chunk(THREE)[:3], _chunk(THREE)[3:]),
    ],
    "several chunks in a read": [_chunk(ONE) + _chunk(TWO), _chunk(THREE)],
    "sizes h11 reads: upper case, leading zeros, an extension": [
        _chunk(ONE, f"{len(ONE):X}"),
        _chunk(TWO, f"000{len(TWO):x}"),
        _chunk(THREE, f"{len(THREE):x};name=value"),
    ],
}


async def _serve_pieces(pieces: list[bytes]) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        await reader.readexactly(int(head.split(b"content-length:")[1].split(b"\r\n")[0]))
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.02)  # each piece in a read of its own, mostly
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


@pytest.mark.parametrize("case", list(PIECES))
async def test_a_body_cut_anywhere_reads_as_httpx2_reads_it(case: str) -> None:
    server = await _serve_pieces([*PIECES[case], b"0\r\n\r\n"])
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    bodies = []
    try:
        for fast in (True, False):
            async with http_client() as http, http.stream("POST", url, json={}) as response:
                chunks = _chunks(response, fast)
                async with contextlib.aclosing(chunks):
                    bodies.append(b"".join([chunk async for chunk in chunks]))
    finally:
        server.close()
        await server.wait_closed()
    assert bodies[0] == bodies[1] == ONE + TWO + THREE


@pytest.mark.parametrize("bad", [b"1_a\r\n", b"+1a\r\n", b" 1a\r\n", b"zz\r\n"])
async def test_a_bad_chunk_size_is_httpx2s_protocol_error(bad: bytes) -> None:
    server = await _serve_pieces([_chunk(ONE), bad + b"x" * 26 + b"\r\n", b"0\r\n\r\n"])
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    raised = []
    try:
        for fast in (True, False):
            with pytest.raises(httpx2.RemoteProtocolError) as caught:
                async with http_client() as http, http.stream("POST", url, json={}) as r:
                    chunks = _chunks(r, fast)
                    async with contextlib.aclosing(chunks):
                        async for _ in chunks:
                            pass
            raised.append(str(caught.value))
    finally:
        server.close()
        await server.wait_closed()
    assert raised[0] == raised[1]


def test_an_h11_whose_chunked_reader_keeps_other_state_takes_the_usual_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib

    import h11._readers

    import pipeline.runtime.http_body as http_body

    class OtherReader:  # an h11 that keeps its chunked reader's state under other names
        def __init__(self) -> None:
            self.remaining = 0

    assert http_body._LAYOUT_KNOWN
    monkeypatch.setattr(h11._readers, "ChunkedReader", OtherReader)
    try:
        assert not importlib.reload(http_body)._LAYOUT_KNOWN
    finally:
        monkeypatch.undo()
        importlib.reload(http_body)
    assert http_body._LAYOUT_KNOWN
