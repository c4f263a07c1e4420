"""The SSE responder's direct writes: an event written in the step that produced it.

While the client keeps up, a live reader (``StreamRun.iterate``,
``StreamHub.events``) hands each event to the response, which writes it at
once, in the producer's step: no buffer, no writer-task wake-up. A send that
has to wait (the client's socket is full) is finished by a task and what
arrives meanwhile waits in the buffer for the writer task: the tests here
make the send wait at chosen points and check every event arrives once, in
order, whichever way each one went; that the promises of the writer task
(the terminal event and the end, the send timeout, a failing send) hold for
a direct write; and, over a real socket through rxllm's app, that a client
which stops reading for a while and then reads on gets the whole stream.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import Message

from pipeline.apps.builtin_model import MockServer
from pipeline.apps.server.http_api import create_app
from pipeline.apps.server.server_settings import ServerSettings
from pipeline.core.events import Cancelled, Finished, Started
from pipeline.core.sse_decoder import SSEDecoder
from pipeline.runtime.stream_hub import StreamHub
from sinks.sse_response import BODY_SEND, HEARTBEAT, SSEResponse
from tests.serving import app_in_loop
from tests.sse_helpers import live, never_disconnect, text, until

TIMEOUT = 10
_ID = re.compile(rb"^id: (\d+)\n", re.MULTILINE)


class Client:
    """An ASGI ``send`` that records each body with the task that sent it.

    ``hold`` lists event sequence numbers whose write waits (as uvicorn's
    does on a full socket) until :meth:`release`.
    """

    def __init__(self, hold: set[int] | None = None) -> None:
        self.hold = hold or set()
        self.gates: dict[int, asyncio.Event] = {}
        self.bodies: list[tuple[bytes, asyncio.Task[Any] | None]] = []
        self.ended = False
        self.waited = 0

    async def send(self, message: Message) -> None:
        if message["type"] != "http.response.body":
            return
        body = message["body"]
        found = _ID.search(body)
        if found is not None and int(found.group(1)) in self.hold:
            gate = self.gates.setdefault(int(found.group(1)), asyncio.Event())
            self.waited += 1
            await gate.wait()
        assert not self.ended, "a message after the end"
        self.bodies.append((body, asyncio.current_task()))
        self.ended = not message.get("more_body", False)

    def release(self, seq: int) -> None:
        self.hold.discard(seq)
        self.gates.setdefault(seq, asyncio.Event()).set()

    def ids(self) -> list[int]:
        body = b"".join(b for b, _ in self.bodies)
        return [int(m.id) for m in SSEDecoder().decode(body) if m.id]

    def sent_by(self, seq: int) -> asyncio.Task[Any] | None:
        for body, task in self.bodies:
            if f"id: {seq}\n".encode() in body:
                return task
        raise AssertionError(f"event {seq} was not sent")


async def test_events_go_out_in_the_producers_step_and_the_end_from_the_writer() -> None:
    run, source = live()
    reader = run.iterate()
    run.start()
    client = Client()
    response = SSEResponse(reader, heartbeat=None)
    call = asyncio.create_task(response({"type": "http"}, never_disconnect, client.send))
    source.on_next(Started(stream_id="s", seq=0))
    await until(lambda: client.ids() == [0])
    producer = asyncio.current_task()
    for seq in range(1, 6):
        source.on_next(text(seq))
        # written before on_next returned, by this (the producing) task
        assert client.ids()[-1] == seq
        assert client.sent_by(seq) is producer
    source.on_next(Finished(stream_id="s", seq=6, finish_reason="stop"))
    source.on_completed()
    await asyncio.wait_for(call, TIMEOUT)
    assert client.ids() == list(range(7))
    assert client.sent_by(6) is not producer, "the terminal event goes through the writer task"
    assert client.bodies[-1][0] == b"" and client.ended
    assert response.disconnect_reason is None


@pytest.mark.parametrize("seed", range(40))
async def test_events_stay_in_order_whatever_mix_of_direct_and_task_writes(seed: int) -> None:
    """Writes wait at random points; events arrive and writes are released in random order."""
    rnd = random.Random(seed)
    count = 30
    run, source = live()
    reader = run.iterate()
    run.start()
    client = Client(hold={seq for seq in range(count) if rnd.random() < 0.2})
    held = sorted(client.hold)
    assert held, "some writes wait"
    response = SSEResponse(reader, heartbeat=None, send_timeout=None)
    call = asyncio.create_task(response({"type": "http"}, never_disconnect, client.send))
    source.on_next(Started(stream_id="s", seq=0))
    seq = 1
    while seq < count or held:
        action = rnd.random()
        if seq < count and action < 0.6:
            source.on_next(text(seq))
            seq += 1
        elif held and action < 0.8:
            client.release(held.pop(rnd.randrange(len(held))))
        else:
            await asyncio.sleep(0)
    source.on_next(Finished(stream_id="s", seq=count, finish_reason="stop"))
    source.on_completed()
    await asyncio.wait_for(call, TIMEOUT)
    assert client.ids() == list(range(count + 1)), "every event once, in order"
    assert client.ended and response.disconnect_reason is None


async def test_after_a_write_that_waited_the_writer_catches_up_and_direct_writes_resume() -> None:
    run, source = live()
    reader = run.iterate()
    run.start()
    client = Client(hold={2})
    response = SSEResponse(reader, heartbeat=None, send_timeout=None)
    call = asyncio.create_task(response({"type": "http"}, never_disconnect, client.send))
    source.on_next(Started(stream_id="s", seq=0))
    await until(lambda: client.ids() == [0])
    producer = asyncio.current_task()
    for seq in range(1, 6):
        source.on_next(text(seq))  # 2 waits: 3, 4, 5 wait behind it in the buffer
    assert client.ids() == [0, 1]
    client.release(2)
    await until(lambda: client.ids() == list(range(6)))
    assert [client.sent_by(seq) is producer for seq in range(1, 6)] == [True] + [False] * 4
    source.on_next(text(6))
    assert client.sent_by(6) is producer, "caught up: direct again"
    run.cancel()
    await asyncio.wait_for(call, TIMEOUT)
    assert client.ids() == list(range(8))  # the cancelled event (7) ends it


async def test_an_event_produced_while_a_heartbeat_is_in_flight_waits_for_it() -> None:
    run, source = live()
    reader = run.iterate()
    run.start()
    client = Client()
    ping_sent = asyncio.Event()
    ping_done = asyncio.Event()

    async def send(message: Message) -> None:
        if message.get("body") == HEARTBEAT and not ping_sent.is_set():
            ping_sent.set()
            await ping_done.wait()  # the client's socket is full during the ping
        await client.send(message)

    response = SSEResponse(reader, heartbeat=0.05, send_timeout=None)
    call = asyncio.create_task(response({"type": "http"}, never_disconnect, send))
    source.on_next(Started(stream_id="s", seq=0))
    await until(lambda: client.ids() == [0])
    await asyncio.wait_for(ping_sent.wait(), TIMEOUT)
    producer = asyncio.current_task()
    source.on_next(text(1))  # not written over the ping still in flight
    assert client.ids() == [0]
    ping_done.set()
    await until(lambda: client.ids() == [0, 1])
    assert client.sent_by(1) is not producer, "the writer task wrote it, after the ping"
    heartbeat = next(i for i, (body, _) in enumerate(client.bodies) if body == HEARTBEAT)
    assert b"id: 1\n" in b"".join(body for body, _ in client.bodies[heartbeat + 1 :])
    source.on_next(text(2))
    assert client.sent_by(2) is producer, "the ping done: direct again"
    run.cancel()
    await asyncio.wait_for(call, TIMEOUT)
    assert client.ids() == [0, 1, 2, 3]


async def test_a_direct_write_that_stalls_times_out_and_cancels_the_run() -> None:
    run, source = live()
    reader = run.iterate()
    run.start()
    client = Client(hold={1})
    reasons: list[str] = []

    def gone(reason: str) -> None:
        reasons.append(reason)
        run.cancel(reason)

    response = SSEResponse(reader, heartbeat=0.01, send_timeout=0.05, on_disconnect=gone)
    call = asyncio.create_task(response({"type": "http"}, never_disconnect, client.send))
    source.on_next(Started(stream_id="s", seq=0))
    await until(lambda: client.ids() == [0])
    source.on_next(text(1))  # its write never completes
    source.on_next(text(2))
    await asyncio.wait_for(call, TIMEOUT)
    assert reasons == ["a write did not complete within 0.05s"]
    assert isinstance(run.terminal, Cancelled)
    assert not source.observers, "the upstream subscription is disposed"
    assert run.sink_count == 0, "the reader is detached"


@pytest.mark.parametrize("error", [OSError("broken pipe"), RuntimeError("a bug")])
async def test_a_direct_write_that_fails_ends_the_response_as_a_failed_writer_did(
    error: Exception,
) -> None:
    run, source = live()
    reader = run.iterate()
    run.start()
    reasons: list[str] = []
    sends = 0

    async def send(message: Message) -> None:
        nonlocal sends
        if message["type"] == "http.response.body":
            sends += 1
            if sends == 2:  # the first direct write
                raise error

    response = SSEResponse(reader, heartbeat=None, on_disconnect=reasons.append)
    call = asyncio.create_task(response({"type": "http"}, never_disconnect, send))
    source.on_next(Started(stream_id="s", seq=0))
    await until(lambda: sends == 1)
    source.on_next(text(1))
    assert sends == 2
    source.on_next(text(2))  # not written: the response is ending
    if isinstance(error, OSError):
        await asyncio.wait_for(call, TIMEOUT)
        assert reasons == ["client disconnected (OSError)"]
    else:
        with pytest.raises(RuntimeError, match="a bug"):
            await asyncio.wait_for(call, TIMEOUT)
        assert reasons == []
    assert sends == 2
    assert run.sink_count == 0, "the reader is detached"


async def test_a_hub_reader_replays_through_the_writer_then_goes_direct_without_gap() -> None:
    hub = StreamHub()
    run, source = live()
    hub.register(run)
    run.start()
    for seq in range(4):
        source.on_next(Started(stream_id="s", seq=0) if seq == 0 else text(seq))
    client = Client()
    response = SSEResponse(hub.events("s", after=1), heartbeat=None)
    call = asyncio.create_task(response({"type": "http"}, never_disconnect, client.send))
    source.on_next(text(4))  # arrives before the writer has read the replay: buffered
    await until(lambda: client.ids() == [2, 3, 4])
    producer = asyncio.current_task()
    assert {client.sent_by(seq) for seq in (2, 3, 4)} != {producer}
    source.on_next(text(5))
    assert client.sent_by(5) is producer
    run.cancel()
    await asyncio.wait_for(call, TIMEOUT)
    assert client.ids() == [2, 3, 4, 5, 6]


async def test_a_hub_reader_skips_live_events_it_was_told_it_has_on_the_direct_path() -> None:
    hub = StreamHub()
    run, source = live()
    hub.register(run)
    run.start()
    source.on_next(Started(stream_id="s", seq=0))
    client = Client()
    response = SSEResponse(hub.events("s", after=3), heartbeat=None)
    call = asyncio.create_task(response({"type": "http"}, never_disconnect, client.send))
    source.on_next(text(1))  # read by the writer task, skipped
    for _ in range(10):  # a few loop turns: the writer has read the replay and waits
        await asyncio.sleep(0)
    producer = asyncio.current_task()
    for seq in range(2, 6):
        source.on_next(text(seq))  # 2 and 3 skipped on the direct path
    assert client.ids() == [4, 5]
    assert client.sent_by(4) is producer and client.sent_by(5) is producer
    run.cancel()
    await asyncio.wait_for(call, TIMEOUT)
    assert client.ids() == [4, 5, 6]


# -- rxllm's app over a real socket -------------------------------------------------------


def probe_app(middleware: bool) -> Any:
    """rxllm's app with one more route that says whether its response got BODY_SEND."""
    app = create_app(ServerSettings(store=False))

    async def probe(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(BODY_SEND in request.scope))

    app.router.routes.append(Route("/probe", probe))
    if middleware:
        app.add_middleware(GZipMiddleware)
    return app


@pytest.mark.parametrize("middleware", [False, True], ids=["as_built", "with_gzip"])
async def test_the_app_gives_the_servers_send_only_when_its_middleware_passes_bodies_through(
    middleware: bool,
) -> None:
    transport = httpx.ASGITransport(app=probe_app(middleware))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get("/probe")
    assert answer.text == str(not middleware)


@pytest.fixture
def upstream() -> Iterator[MockServer]:
    with MockServer() as server:
        yield server


@pytest.fixture
async def served(upstream: MockServer) -> AsyncIterator[int]:
    """rxllm's app on a loopback port whose sockets have small send buffers."""
    settings = ServerSettings(upstream=upstream.base_url, store=False, heartbeat=60.0)
    async with app_in_loop(settings, send_buffer=4096) as (port, _):
        yield port


async def test_a_client_that_pauses_then_reads_on_gets_every_chunk_once_in_order(
    served: int,
) -> None:
    """The server's writes wait on the full socket, the rest queues, then all goes out."""
    words = [f"w{i}" for i in range(3000)]
    body = json.dumps(
        {
            "model": "m",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
            "mock": {"text": " ".join(words), "interval": 0.0002},
        }
    ).encode()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", served))
    reader, writer = await asyncio.open_connection(sock=sock)
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\nconnection: close\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    try:
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(0.5)  # not reading: the buffers fill and the server's writes wait
        raw = await asyncio.wait_for(reader.read(), TIMEOUT * 3)
    finally:
        writer.close()
    frames = SSEDecoder().decode(_unchunk(raw))
    assert frames[-1].data == "[DONE]"
    chunks = [json.loads(frame.data) for frame in frames[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.split() == words
    ids = [int(frame.id) for frame in frames if frame.id]
    assert ids == sorted(set(ids)), "no event twice, none out of order"


def _unchunk(raw: bytes) -> bytes:
    """The body of a chunked HTTP/1.1 response."""
    out = bytearray()
    while raw:
        size, _, raw = raw.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out += raw[:n]
        raw = raw[n + 2 :]
    return bytes(out)


async def test_a_live_stream_resumed_with_last_event_id_has_no_gap_and_no_duplicate(
    served: int,
) -> None:
    """Through rxllm's app: read part of a live stream, leave, resume it while it runs."""
    words = [f"w{i}" for i in range(60)]
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "mock": {"text": " ".join(words), "interval": 0.01},
    }
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served}", timeout=TIMEOUT) as http:
        started = (await http.post("/v1/streams", json=body)).json()
        seen: list[dict[str, Any]] = []
        async with http.stream("GET", started["events_url"]) as first:
            async for line in first.aiter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    if seen[-1]["seq"] >= 10:
                        break  # leave mid-stream (the connection closes)
        headers = {"Last-Event-ID": str(seen[-1]["seq"])}
        async with http.stream("GET", started["events_url"], headers=headers) as rest:
            assert rest.status_code == 200
            async for line in rest.aiter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
    assert [e["seq"] for e in seen] == list(range(len(seen))), "no gap, no duplicate"
    assert [e["type"] for e in seen].count("finished") == 1 and seen[-1]["type"] == "finished"
    text = "".join(e["text"] for e in seen if e["type"] == "text")
    assert text.split() == words
