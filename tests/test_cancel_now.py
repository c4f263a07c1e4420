"""A client that leaves closes its upstream connection at once, not tasks later.

Regression tests: when a client left, the server's protocol only set an
event; the task waiting on ``receive()`` woke a loop turn later, the
response's task a turn after that, and the source's task a turn after that
to close the upstream connection. Each turn is short on an idle loop and
long on a saturated one (the abuse soak measured 0.2-0.75 s at p99 there).
Now the protocol calls the request's hooks in the callback where it learns
the client left, and disposing a source closes its open response's
connection in the call itself.

The upstream is a socket server of our own in a thread, which sends the
response's headers (and a first chunk, or not) and keeps the connection
open; the test holds the upstream's end of that connection and reads it
without blocking: ``b""`` once our side has closed it. Time is counted in
loop turns (``asyncio.sleep(0)``), not on a clock.
"""

from __future__ import annotations

import asyncio
import gc
import json
import queue
import socket
import threading
import weakref
from collections.abc import AsyncIterator, Iterator

import pytest
import uvicorn
from openai import AsyncOpenAI

from pipeline.apps.builtin_model import MockServer
from pipeline.apps.server.connection_guard import guarded_protocol
from pipeline.apps.server.server_settings import ServerSettings
from pipeline.runtime import sources
from pipeline.runtime.http_backend import http_client
from tests.serving import app_in_loop
from tests.test_client_leaves import NON_STREAMING as ROUTES

GUARD = 10.0  # seconds: reached only if the behaviour under test is missing
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
CHUNK = {
    "id": "c",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": "m",
    "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}}],
}


def _chunked(payload: bytes) -> bytes:
    frame = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(frame), frame)


class HoldingUpstream:
    """Answers each request with headers (and a first chunk when ``first_token``), then holds.

    ``connections`` gives the upstream's end of each connection once its request is read.
    """

    def __init__(self, first_token: bool) -> None:
        self.first_token = first_token
        self.connections: queue.Queue[socket.socket] = queue.Queue()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._held: list[socket.socket] = []

    def __enter__(self) -> HoldingUpstream:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._listener.close()
        for conn in self._held:
            conn.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._held.append(conn)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(HEAD + (_chunked(json.dumps(CHUNK).encode()) if self.first_token else b""))
            self.connections.put(conn)


def closed_by_peer(conn: socket.socket) -> bool:
    """Whether the other end has closed ``conn`` (read without blocking)."""
    try:
        return conn.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False


async def upstream_end(upstream: HoldingUpstream) -> socket.socket:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.run_in_executor(None, upstream.connections.get), GUARD)


@pytest.fixture(params=[True, False], ids=["mid-stream", "before-the-first-token"])
def upstream(request: pytest.FixtureRequest) -> Iterator[HoldingUpstream]:
    with HoldingUpstream(first_token=request.param) as server:
        yield server


async def test_disposing_a_source_closes_its_upstream_connection_within_one_loop_turn(
    upstream: HoldingUpstream,
) -> None:
    async with AsyncOpenAI(
        base_url=upstream.base_url, api_key="k", max_retries=0, http_client=http_client()
    ) as client:
        source = sources.chat_completions(
            client, model="m", messages=[{"role": "user", "content": "hi"}]
        )
        subscription = source.subscribe(on_next=lambda _: None)
        conn = await upstream_end(upstream)
        for _ in range(100):  # until the source has the response open (its headers read)
            await asyncio.sleep(0)
        assert not closed_by_peer(conn)
        subscription.dispose()
        await asyncio.sleep(0)  # the transport's close runs; the source's task has not yet
        assert closed_by_peer(conn)


@pytest.fixture
async def served(upstream: HoldingUpstream) -> AsyncIterator[tuple[int, uvicorn.Server]]:
    """rxllm's app with its protocol, in this loop, in front of the holding upstream."""
    settings = ServerSettings(upstream=upstream.base_url, store=False, heartbeat=60.0)
    protocol = guarded_protocol(header_timeout=None, max_connections=None, on_closed=print)
    async with app_in_loop(settings, http=protocol) as served:
        yield served


@pytest.mark.parametrize("route", list(ROUTES))  # the three APIs, relayed to Chat Completions
@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "not-streamed"])
async def test_a_client_that_leaves_closes_the_upstream_connection_in_the_turn_it_is_heard(
    served: tuple[int, uvicorn.Server], upstream: HoldingUpstream, stream: bool, route: str
) -> None:
    port, server = served
    body = json.dumps({**ROUTES[route], "stream": stream}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST %s HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (route.encode(), len(body), body)
    )
    conn = await upstream_end(upstream)
    if stream and upstream.first_token:
        await asyncio.wait_for(reader.readuntil(b"data: "), GUARD)  # the answer has begun
    else:
        for _ in range(100):  # the handler waits for the first token or the whole answer
            await asyncio.sleep(0)
    connections = server.server_state.connections
    assert len(connections) == 1 and not closed_by_peer(conn)

    writer.transport.abort()  # the client leaves (a reset)
    for _ in range(1000):  # the turns until the server hears it
        await asyncio.sleep(0)
        if not connections:
            break
    assert not connections
    await asyncio.sleep(0)  # one turn more: the upstream transport's close runs
    assert closed_by_peer(conn)


@pytest.mark.parametrize("leave", [False, True], ids=["read-to-the-end", "disposed"])
async def test_a_sources_task_is_freed_with_its_subscription_without_the_cyclic_collector(
    leave: bool,
) -> None:
    """Regression test: the task's coroutine referred to the handle that refers to the task.

    That cycle kept every stream's task, response and buffers until a full
    collection (rare in ``rxllm serve``, which freezes start-up objects and
    raises the first threshold): the abuse soak's peak memory grew by 50 MB.
    """
    async with (
        MockServer() as upstream,
        AsyncOpenAI(
            base_url=upstream.base_url, api_key="k", max_retries=0, http_client=http_client()
        ) as client,
    ):
        source = sources.chat_completions(
            client, model="m", messages=[{"role": "user", "content": "hi"}]
        )
        done = asyncio.Event()
        gc.disable()
        try:
            before = asyncio.all_tasks()
            subscription = source.subscribe(
                on_next=lambda _: done.set() if leave else None, on_completed=done.set
            )
            (task,) = asyncio.all_tasks() - before
            freed = weakref.ref(task)
            del task, before
            await asyncio.wait_for(done.wait(), GUARD)
            if leave:
                subscription.dispose()
            for _ in range(100):  # the task ends (cancelled, or its response closed)
                await asyncio.sleep(0)
            del subscription
            assert freed() is None
        finally:
            gc.enable()
