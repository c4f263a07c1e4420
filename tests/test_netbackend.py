"""The asyncio-native network backend under the SDK's HTTP client, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpcore2
import httpx2
import pytest
import trustme
import uvloop
from openai import AsyncOpenAI

import pipeline.runtime.http_backend
from pipeline.apps.builtin_model import MockServer
from pipeline.core.result import Accumulator, Result
from pipeline.runtime import sources
from pipeline.runtime.http_backend import AsyncioBackend, http_client
from pipeline.runtime.standard_chain import llm_stream
from pipeline.runtime.upstreams import Upstream

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server() -> Any:
    with MockServer() as srv:
        yield srv


async def consume(client: AsyncOpenAI, mock: dict[str, Any]) -> Result:
    source = sources.chat_completions(
        client, model="mock-model", messages=MESSAGES, extra_body={"mock": mock}
    )
    acc = Accumulator()
    done = asyncio.Event()
    llm_stream(source).subscribe(acc.add, on_completed=done.set)
    await asyncio.wait_for(done.wait(), 20)
    return acc.result()


def test_http_client_runs_on_the_asyncio_backend() -> None:
    client = http_client()
    pool = client._transport._pool  # type: ignore[attr-defined]
    assert isinstance(pool._network_backend, AsyncioBackend)


def test_http_client_keeps_the_default_backend_when_the_pool_is_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        pipeline.runtime.http_backend,
        "DefaultAsyncHttpxClient",
        lambda **_: httpx2.AsyncClient(transport=None),
    )
    client = http_client()  # no exception: a client on its own backend
    assert isinstance(client, httpx2.AsyncClient)


def test_proxied_requests_keep_the_default_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    client = http_client()
    proxies = [t for t in client._mounts.values() if t is not None]
    assert proxies
    for transport in proxies:
        assert isinstance(transport, httpx2.AsyncHTTPTransport)
        assert not isinstance(transport._pool._network_backend, AsyncioBackend)


def test_a_stream_on_uvloop(server: MockServer) -> None:
    """uvloop's transports are not asyncio.Transport subclasses; the backend works with them."""
    words = " ".join(f"w{i}" for i in range(200))

    async def main() -> Result:
        async with AsyncOpenAI(
            base_url=server.base_url, api_key="k", max_retries=0, http_client=http_client()
        ) as client:
            return await consume(client, {"text": words, "interval": 0.001})

    result = uvloop.run(main())
    assert result.choices[0].content == words


async def test_a_body_read_late_arrives_whole(
    server: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More than the read buffer arrives before it is read: reading pauses, then resumes."""
    monkeypatch.setattr(pipeline.runtime.http_backend, "READ_BUFFER", 16 * 1024)
    paused: list[bool] = []
    received_data = pipeline.runtime.http_backend._Protocol.data_received

    def spy(self: pipeline.runtime.http_backend._Protocol, data: bytes) -> None:
        received_data(self, data)
        paused.append(self.reading_paused)

    monkeypatch.setattr(pipeline.runtime.http_backend._Protocol, "data_received", spy)
    words = " ".join(f"word{i}" for i in range(5_000))  # about 600 KB of SSE frames
    body = {"model": "mock-model", "messages": MESSAGES, "stream": True, "mock": {"text": words}}
    received = bytearray()
    async with (
        httpx2.AsyncClient(transport=_transport(), timeout=30) as http,
        http.stream("POST", server.base_url + "/chat/completions", json=body) as response,
    ):
        await asyncio.sleep(0.5)  # the model streams on; nothing is read meanwhile
        async for chunk in response.aiter_raw():
            received += chunk
    assert any(paused)
    assert received.count(b"data: ") == 5_000 + 3  # role, the words, finish, [DONE]
    assert received.rstrip().endswith(b"data: [DONE]")


async def test_a_read_that_waits_too_long_is_a_read_timeout(server: MockServer) -> None:
    async with httpx2.AsyncClient(
        transport=_transport(), timeout=httpx2.Timeout(5, read=0.2)
    ) as http:
        body = {
            "model": "mock-model",
            "messages": MESSAGES,
            "stream": True,
            "mock": {"text": "late", "stall": 3},
        }
        with pytest.raises(httpx2.ReadTimeout):
            async with http.stream("POST", server.base_url + "/chat/completions", json=body) as r:
                async for _ in r.aiter_raw():
                    pass


async def test_nothing_listening_is_a_connect_error() -> None:
    backend = AsyncioBackend()
    with pytest.raises(httpcore2.ConnectError):
        await backend.connect_tcp("127.0.0.1", _closed_port(), timeout=5)


@pytest.fixture
async def tls_server() -> AsyncIterator[tuple[int, trustme.CA]]:
    """An HTTPS server answering every request with a two-token SSE stream."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    sse = (
        b'data: {"choices":[{"index":0,"delta":{"content":"over "}}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{"content":"TLS"}}]}\n\n'
        b"data: [DONE]\n\n"
    )

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        if head.startswith(b"get /big "):  # 1 MB, for the read buffer to fill
            body = b"x" * 1_000_000
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
            writer.close()
            return
        length = head.split(b"content-length:")[1].split(b"\r\n")[0]
        await reader.readexactly(int(length))
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(sse)
            + sse
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1], ca
    finally:
        server.close()
        await server.wait_closed()


async def test_https_through_the_sdk(tls_server: tuple[int, trustme.CA]) -> None:
    port, ca = tls_server
    verify = ssl.create_default_context()
    ca.configure_trust(verify)
    async with AsyncOpenAI(
        base_url=f"https://localhost:{port}/v1",
        api_key="k",
        max_retries=0,
        http_client=http_client(verify=verify),
    ) as client:
        result = await consume(client, {})
    assert result.choices[0].content == "over TLS"


async def test_a_tls_body_read_late_arrives_whole(
    tls_server: tuple[int, trustme.CA], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over TLS too, reading pauses while the buffer is full and resumes as it drains."""
    monkeypatch.setattr(pipeline.runtime.http_backend, "READ_BUFFER", 16 * 1024)
    port, ca = tls_server
    verify = ssl.create_default_context()
    ca.configure_trust(verify)
    transport = http_client(verify=verify)._transport
    received = 0
    async with (
        httpx2.AsyncClient(transport=transport, timeout=10) as http,
        http.stream("GET", f"https://localhost:{port}/big") as response,
    ):
        await asyncio.sleep(0.3)  # the server sends on; nothing is read meanwhile
        async for chunk in response.aiter_raw():
            received += len(chunk)
    assert received == 1_000_000


async def test_an_untrusted_certificate_is_a_connect_error(
    tls_server: tuple[int, trustme.CA],
) -> None:
    port, _ = tls_server
    async with httpx2.AsyncClient(transport=_transport()) as http:
        with pytest.raises(httpx2.ConnectError):
            await http.get(f"https://localhost:{port}/")


def _transport() -> httpx2.AsyncHTTPTransport:
    transport = http_client()._transport
    assert isinstance(transport, httpx2.AsyncHTTPTransport)
    return transport


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Transport:
    """Enough of a transport for reading from a protocol fed by hand."""

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_a_reader_that_never_catches_up_holds_no_more_than_it_has_to_read() -> None:
    protocol = pipeline.runtime.http_backend._Protocol()
    protocol.connection_made(_Transport())  # type: ignore[arg-type]
    stream = pipeline.runtime.http_backend.AsyncioStream(_Transport(), protocol)  # type: ignore[arg-type]
    protocol.data_received(b"0,")
    read = bytearray()
    for i in range(1, 1000):
        protocol.data_received(b"%d," % i)  # one more arrives before each read
        read += await stream.read(65536)
        assert len(protocol.chunks) - protocol.head == 1
        assert len(protocol.chunks) <= pipeline.runtime.http_backend._COMPACT_AT + 1
    read += await stream.read(65536)
    assert read == b"".join(b"%d," % i for i in range(1000))
    assert protocol.buffered == 0


@pytest.mark.parametrize("family", ["tcp", "unix"])
async def test_socket_options_are_set_on_tcp_and_unix_connections(
    family: str, tmp_path: Any
) -> None:
    import socket

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    backend = AsyncioBackend()
    keepalive = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    if family == "tcp":
        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        stream = await backend.connect_tcp("127.0.0.1", port, 5, socket_options=keepalive)
    else:
        path = str(tmp_path / "s.sock")
        server = await asyncio.start_unix_server(accept, path)
        stream = await backend.connect_unix_socket(path, 5, socket_options=keepalive)
    try:
        sock = stream.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    finally:
        await stream.aclose()
        server.close()
        await server.wait_closed()


class _CountingTransport:
    """A transport that counts its writes (a system call and a TCP segment each)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[int] = []

    def write(self, data: bytes) -> None:
        self.writes.append(len(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def _echo_server() -> tuple[asyncio.Server, list[bytes]]:
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 20):
            received.append(data)
            if sum(map(len, received)) >= 13:
                writer.write(b"ok")
                await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), received


@contextlib.asynccontextmanager
async def _counted_stream() -> AsyncIterator[
    tuple[pipeline.runtime.http_backend.AsyncioStream, _CountingTransport, list[bytes]]
]:
    """A connection on rxllm's backend to an echo server: the stream, its counted
    transport, and what the server received (complete once the block has ended)."""
    server, received = await _echo_server()
    port = server.sockets[0].getsockname()[1]
    try:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port)
        assert isinstance(stream, pipeline.runtime.http_backend.AsyncioStream)
        counting = _CountingTransport(stream._transport)
        stream._transport = counting  # type: ignore[assignment]
        yield stream, counting, received
    finally:
        server.close()
        await server.wait_closed()


async def test_a_request_head_and_body_leave_in_one_write() -> None:
    async with _counted_stream() as (stream, counting, received):
        await stream.write(b"POST / HTTP\r\n")  # what httpcore2 does: head, body, then read
        await stream.write(b"")
        assert counting.writes == []  # held, not sent yet
        await stream.write(b"body")
        assert await stream.read(100, timeout=5) == b"ok"
        assert counting.writes == [17]  # one write for both
        await stream.aclose()
    assert b"".join(received) == b"POST / HTTP\r\nbody"


async def test_a_large_write_is_not_held_and_a_close_sends_what_is_held() -> None:
    async with _counted_stream() as (stream, counting, received):
        big = b"x" * (pipeline.runtime.http_backend.HOLD_WRITES + 1)
        await stream.write(b"head")
        await stream.write(big)  # too big to hold: it and what was held go now
        assert counting.writes == [4, len(big)]
        await stream.write(b"tail")
        await stream.aclose()  # what is held is sent before the close
        assert counting.writes == [4, len(big), 4]
        for _ in range(200):
            if sum(map(len, received)) == len(big) + 8:
                break
            await asyncio.sleep(0.01)
    assert b"".join(received) == b"head" + big + b"tail"


async def test_a_megabyte_request_body_through_the_sdk(server: MockServer) -> None:
    """Beyond what is held, a request body goes out as it comes, whole."""
    big = "y" * 1_000_000
    async with AsyncOpenAI(
        base_url=server.base_url, api_key="k", max_retries=0, http_client=http_client()
    ) as client:
        source = sources.chat_completions(
            client,
            model="mock-model",
            messages=[{"role": "user", "content": big}],
            extra_body={"mock": {"text": "read"}},
        )
        acc = Accumulator()
        done = asyncio.Event()
        llm_stream(source).subscribe(acc.add, on_completed=done.set)
        await asyncio.wait_for(done.wait(), 20)
    assert acc.result().choices[0].content == "read"
    assert server.recorder.last_request.body["messages"][0]["content"] == big


async def test_an_upstreams_anthropic_client_runs_on_the_asyncio_backend(
    server: MockServer,
) -> None:
    """With the anthropic SDK's own defaults: its TCP keep-alive socket options are kept."""
    upstream = Upstream("u", server.base_url, api_key="k")
    client = upstream.anthropic_client()
    try:
        pool = client._client._transport._pool  # type: ignore[attr-defined]
        assert isinstance(pool._network_backend, AsyncioBackend)
        assert (socket.SOL_SOCKET, socket.SO_KEEPALIVE, True) in pool._socket_options
        source = sources.anthropic_messages(
            client,
            model="mock-model",
            max_tokens=50,
            messages=MESSAGES,
            mock={"text": "through anthropic", "interval": 0.001},
        )
        acc = Accumulator()
        done = asyncio.Event()
        llm_stream(source).subscribe(acc.add, on_completed=done.set)
        await asyncio.wait_for(done.wait(), 20)
        assert acc.result().choices[0].content == "through anthropic"
    finally:
        await upstream.aclose()
