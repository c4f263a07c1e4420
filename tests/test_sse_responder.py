"""The SSE responder over a real socket: uvicorn on a loopback port, real HTTP clients.

The app is plain Starlette (wrapped in GZipMiddleware, which must leave the
stream alone). Live streams are driven from the test through a Subject;
recorded bodies go through the standard chain (``llm_stream(sse_body(...))``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx2
import openai
import pytest
import uvicorn
from openai import AsyncOpenAI
from reactivex.subject import Subject
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from pipeline.core.events import Cancelled, EventBase, Finished, Started, TextDelta
from pipeline.core.sse_decoder import SSEDecoder, SSEMessage
from pipeline.runtime.multicast import StreamRun
from pipeline.runtime.sources import sse_body
from pipeline.runtime.standard_chain import llm_stream
from pipeline.runtime.stream_hub import ResumeGapError, StreamHub
from sinks.dialects import OpenAIDialect, make_dialect
from sinks.sse_response import HEARTBEAT, SSEResponse, last_event_id
from tests.fixtures import chunk, run_body, sse, tool
from tests.sse_helpers import never_disconnect

TIMEOUT = 10

TOOL_BODY = sse(
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Let me "}),
    chunk({"content": "check.\nOne line\r\nmore"}),
    chunk({"tool_calls": [tool(0, "", id="call_a", name="get_weather")]}),
    chunk({"tool_calls": [tool(0, '{"city": "Pa')]}),
    chunk({"tool_calls": [tool(0, 'ris"}')]}),
    chunk({"tool_calls": [tool(1, '{"tz":', id="call_b", name="get_time")]}),
    chunk({"tool_calls": [tool(1, ' "UTC"}')]}),
    chunk({}, finish="tool_calls"),
    chunk(choices=[], usage={"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}),
)

ERROR_BODY = sse(
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    {"error": {"message": "the model is overloaded", "type": "server_error"}},
    done=False,
)


class Harness:
    """The test app's state: the hub, live streams, the responses and when each call ended."""

    def __init__(self) -> None:
        self.hub = StreamHub()
        self.sources: dict[str, Subject[Any]] = {}
        self.responses: list[SSEResponse] = []
        self.ended: dict[str, asyncio.Event] = {}
        self.disconnects: list[str] = []
        self.body = TOOL_BODY

    def live(self, stream_id: str = "s") -> tuple[StreamRun, Subject[Any], list[EventBase]]:
        """A live stream driven by the test, with one more sink that records what it gets."""
        source: Subject[Any] = Subject()
        run = StreamRun(source, stream_id=stream_id)
        sink: list[EventBase] = []
        run.subscribe(sink.append)
        self.hub.register(run)
        run.start()
        self.sources[stream_id] = source
        return run, source, sink

    def respond(self, request: Request, events: AsyncIterator[Any], **kw: Any) -> SSEResponse:
        q = request.query_params
        kw.setdefault("dialect", make_dialect(q.get("dialect", "rxllm")))
        kw.setdefault("heartbeat", float(q["heartbeat"]) if "heartbeat" in q else 15.0)
        response = SSEResponse(events, **kw)
        self.responses.append(response)
        return response

    async def stream(self, request: Request) -> Response:
        """GET /streams/{id}: read a stream through the hub (``Last-Event-ID`` resumes)."""
        stream_id = request.path_params["id"]
        try:
            events = self.hub.events(stream_id, after=last_event_id(request.headers))
        except ResumeGapError as exc:
            return PlainTextResponse(str(exc), status_code=409)

        def cancel(reason: str) -> None:
            self.disconnects.append(reason)
            self.hub.cancel(stream_id, reason)

        return self.respond(request, events, on_disconnect=cancel)

    async def chat(self, request: Request) -> Response:
        """POST /v1/chat/completions: replays ``self.body`` in the openai dialect."""
        body = await request.json()
        stream_id = uuid.uuid4().hex
        run = StreamRun(llm_stream(sse_body(self.body), stream_id=stream_id), stream_id=stream_id)
        self.hub.register(run)
        events = self.hub.events(stream_id)
        run.start()
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        dialect = OpenAIDialect(include_usage=include_usage, model=body["model"])
        return self.respond(request, events, dialect=dialect, on_disconnect=run.cancel)

    def app(self) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        routes = [
            Route("/streams/{id}", self.stream),
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
        ]
        inner = GZipMiddleware(Starlette(routes=routes), minimum_size=1)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            ended = self.ended.setdefault(scope.get("path", ""), asyncio.Event())
            try:
                await inner(scope, receive, send)
            finally:
                ended.set()

        return app


@contextlib.asynccontextmanager
async def serve(app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a loopback socket bound to port 0."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # connections wait in the backlog until uvicorn accepts them
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, TIMEOUT)
        sock.close()


@pytest.fixture
async def harness() -> AsyncIterator[tuple[Harness, str]]:
    h = Harness()
    async with serve(h.app()) as url:
        yield h, url


class Reader:
    """Reads an SSE response frame by frame (and keeps the raw bytes)."""

    def __init__(self, response: httpx2.Response) -> None:
        self.chunks = response.aiter_raw()
        self.decoder = SSEDecoder()
        self.pending: list[SSEMessage] = []
        self.raw = b""
        self.ended = False

    async def _more(self) -> bool:
        try:
            data = await anext(self.chunks)
        except StopAsyncIteration:
            self.ended = True
            self.pending += self.decoder.flush()
            return False
        self.raw += data
        self.pending += self.decoder.decode(data)
        return True

    async def next(self) -> SSEMessage:
        async with asyncio.timeout(TIMEOUT):
            while not self.pending:
                if not await self._more():
                    raise AssertionError("the stream ended")
        return self.pending.pop(0)

    async def until_raw(self, needle: bytes) -> None:
        async with asyncio.timeout(TIMEOUT):
            while needle not in self.raw:
                if not await self._more():
                    raise AssertionError(f"the stream ended without {needle!r}")

    async def rest(self) -> list[SSEMessage]:
        async with asyncio.timeout(TIMEOUT):
            while await self._more():
                pass
        out, self.pending = self.pending, []
        return out


def text(seq: int, value: str, stream_id: str = "s") -> TextDelta:
    return TextDelta(stream_id=stream_id, seq=seq, text=value)


async def test_headers_and_events_arrive_one_by_one(harness: tuple[Harness, str]) -> None:
    h, url = harness
    run, source, _ = h.live()
    source.on_next(Started(stream_id="s", seq=0, model="m"))
    async with (
        httpx2.AsyncClient(timeout=TIMEOUT) as client,
        client.stream("GET", f"{url}/streams/s", headers={"accept-encoding": "gzip"}) as response,
    ):
        headers = response.headers
        assert headers["content-type"] == "text/event-stream; charset=utf-8"
        assert headers["cache-control"] == "no-cache"
        assert headers["x-accel-buffering"] == "no"
        assert headers["connection"] == "keep-alive"
        assert "content-encoding" not in headers  # GZipMiddleware left it alone
        reader = Reader(response)
        first = await reader.next()
        assert (first.event, first.id) == ("started", "0")
        # Each event is read before the next one exists: nothing waits for the end.
        for seq, value in enumerate(["Hel", "lo\n", "!"], start=1):
            source.on_next(text(seq, value))
            message = await reader.next()
            assert (message.event, message.id) == ("text", str(seq))
            assert json.loads(message.data)["text"] == value
        source.on_next(Finished(stream_id="s", seq=4))
        rest = await reader.rest()
        assert [m.event for m in rest] == ["finished"]
    assert isinstance(run.terminal, Finished)
    assert h.disconnects == []


async def test_heartbeat_when_idle(harness: tuple[Harness, str]) -> None:
    h, url = harness
    _, source, _ = h.live()
    source.on_next(Started(stream_id="s", seq=0))
    async with (
        httpx2.AsyncClient(timeout=TIMEOUT) as client,
        client.stream("GET", f"{url}/streams/s?heartbeat=0.02") as response,
    ):
        reader = Reader(response)
        assert (await reader.next()).id == "0"
        await reader.until_raw(HEARTBEAT)  # nothing was sent: a comment keeps the line alive
        await reader.until_raw(HEARTBEAT * 2)
        source.on_next(text(1, "x"))
        assert (await reader.next()).id == "1"
        source.on_next(Finished(stream_id="s", seq=2))
        assert [m.event for m in await reader.rest()] == ["finished"]
    assert reader.raw.count(HEARTBEAT) >= 2
    assert b"\n\n: ping\n" in reader.raw  # comments sit between frames


async def test_last_event_id_resumes_through_the_hub(harness: tuple[Harness, str]) -> None:
    h, url = harness
    _, source, _ = h.live()
    source.on_next(Started(stream_id="s", seq=0))
    for seq in range(1, 6):
        source.on_next(text(seq, str(seq)))
    async with (
        httpx2.AsyncClient(timeout=TIMEOUT) as client,
        client.stream("GET", f"{url}/streams/s", headers={"last-event-id": "3"}) as response,
    ):
        reader = Reader(response)
        assert [(await reader.next()).id for _ in range(2)] == ["4", "5"]
        source.on_next(text(6, "6"))  # live now
        assert (await reader.next()).id == "6"
        source.on_next(Finished(stream_id="s", seq=7))
        assert [m.id for m in await reader.rest()] == ["7"]
    # After the end, a resume still works, from the replay buffer.
    async with httpx2.AsyncClient(timeout=TIMEOUT) as client:
        response = await client.get(f"{url}/streams/s", headers={"last-event-id": "5"})
    assert [m.id for m in SSEDecoder().decode(response.content)] == ["6", "7"]


async def test_resume_from_before_the_buffer_is_refused(harness: tuple[Harness, str]) -> None:
    h, url = harness
    h.hub = StreamHub(replay_size=2)
    _, source, _ = h.live()
    for seq in range(5):
        source.on_next(text(seq, "x"))
    async with httpx2.AsyncClient(timeout=TIMEOUT) as client:
        response = await client.get(f"{url}/streams/s", headers={"last-event-id": "1"})
    assert response.status_code == 409
    assert "replay buffer" in response.text


async def test_client_disconnect_cancels_upstream_and_other_sinks_get_cancelled(
    harness: tuple[Harness, str], caplog: pytest.LogCaptureFixture
) -> None:
    h, url = harness
    run, source, sink = h.live()
    source.on_next(Started(stream_id="s", seq=0))
    source.on_next(text(1, "partial"))
    with caplog.at_level(logging.DEBUG):
        async with (
            httpx2.AsyncClient(timeout=TIMEOUT) as client,
            client.stream("GET", f"{url}/streams/s") as response,
        ):
            reader = Reader(response)
            assert [(await reader.next()).id for _ in range(2)] == ["0", "1"]
        # The client has gone: the server notices and cancels the upstream.
        terminal = await asyncio.wait_for(run.wait(), TIMEOUT)
        await asyncio.wait_for(h.ended["/streams/s"].wait(), TIMEOUT)
    assert isinstance(terminal, Cancelled) and terminal.reason == "client disconnected"
    assert isinstance(sink[-1], Cancelled) and [e.seq for e in sink] == [0, 1, 2]
    assert h.disconnects == ["client disconnected"]
    assert h.responses[-1].disconnect_reason == "client disconnected"
    assert not source.observers, "the upstream subscription was disposed"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    leftovers = [
        t
        for t in asyncio.all_tasks()
        if t.get_coro().__qualname__.split(".")[-1]  # type: ignore[union-attr]
        in {"_write_all", "_keep_alive", "_wait_for_disconnect"}
    ]
    assert leftovers == []


async def test_openai_sdk_reads_the_stream(harness: tuple[Harness, str]) -> None:
    _, url = harness
    expected, _ = run_body(TOOL_BODY)
    want = expected.choices[0]
    async with AsyncOpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="proc-model",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        content: list[str] = []
        args: dict[int, list[str]] = {}
        names: dict[int, str] = {}
        chunks = [c async for c in stream]
        for c in chunks:
            assert c.id.startswith("chatcmpl-") and c.model == "proc-model"
            for choice in c.choices:
                content.append(choice.delta.content or "")
                for call in choice.delta.tool_calls or []:
                    if call.function and call.function.name:
                        names[call.index] = call.function.name
                    args.setdefault(call.index, []).append(
                        (call.function.arguments if call.function else None) or ""
                    )
        assert "".join(content) == want.content
        assert [names[i] for i in sorted(names)] == [tc.name for tc in want.tool_calls]
        assert ["".join(args[i]) for i in sorted(args)] == [tc.arguments for tc in want.tool_calls]
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 12
        assert chunks[-2].choices[0].finish_reason == "tool_calls"

        # The SDK's own stream helper assembles the same message.
        async with client.chat.completions.stream(
            model="proc-model", messages=[{"role": "user", "content": "hi"}]
        ) as helper:
            final = await helper.get_final_completion()
        message = final.choices[0].message
        assert message.content == want.content
        assert [
            (c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []
        ] == [(tc.id, tc.name, tc.arguments) for tc in want.tool_calls]
        assert final.choices[0].finish_reason == "tool_calls"


async def test_openai_sdk_raises_the_stream_error(harness: tuple[Harness, str]) -> None:
    h, url = harness
    h.body = ERROR_BODY
    async with AsyncOpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        got: list[str] = []
        with pytest.raises(openai.APIError, match="overloaded"):
            async for c in stream:
                got.extend(choice.delta.content or "" for choice in c.choices)
    assert "".join(got) == "Hel"


async def test_vercel_ui_message_stream(harness: tuple[Harness, str]) -> None:
    h, url = harness
    run = StreamRun(llm_stream(sse_body(TOOL_BODY), stream_id="v"), stream_id="v")
    h.hub.register(run)
    run.start()
    async with httpx2.AsyncClient(timeout=TIMEOUT) as client:
        response = await client.get(f"{url}/streams/v?dialect=vercel")
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    messages = SSEDecoder().decode(response.content) + SSEDecoder().flush()
    assert messages[-1].data == "[DONE]"
    parts = [json.loads(m.data) for m in messages[:-1]]
    assert [p["type"] for p in parts] == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-delta",
        "text-end",
        "tool-input-start",
        "tool-input-delta",
        "tool-input-delta",
        "tool-input-start",
        "tool-input-delta",
        "tool-input-delta",
        "tool-input-available",
        "tool-input-available",
        "finish-step",
        "finish",
    ]
    assert "".join(p["delta"] for p in parts if p["type"] == "text-delta") == (
        "Let me check.\nOne line\r\nmore"
    )
    available = [p for p in parts if p["type"] == "tool-input-available"]
    assert [(p["toolCallId"], p["toolName"], p["input"]) for p in available] == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_time", {"tz": "UTC"}),
    ]


# --- The response alone, with a scripted ASGI server -------------------------------------


def events_of(n: int) -> list[EventBase]:
    out: list[EventBase] = [Started(stream_id="s", seq=0)]
    out += [text(i, str(i)) for i in range(1, n + 1)]
    out.append(Finished(stream_id="s", seq=n + 1))
    return out


async def aiter_of(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


async def test_each_batch_is_one_send_and_the_body_ends() -> None:
    events = events_of(4)
    batches = [[events[0]], [events[1]], events[2:5], [events[5]]]
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    response = SSEResponse(aiter_of(batches), heartbeat=None, retry=1000)
    await response({"type": "http"}, never_disconnect, send)
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert [m["more_body"] for m in bodies] == [True] * 4 + [False]
    assert bodies[0]["body"].startswith(b"retry: 1000\nid: 0\n")
    assert [b["body"].count(b"\n\n") for b in bodies[:4]] == [1, 1, 3, 1]
    assert response.disconnect_reason is None


async def test_first_items_go_out_with_the_headers_before_content_is_read() -> None:
    events = events_of(3)
    sent: list[Message] = []
    read_at: list[int] = []

    async def content() -> AsyncIterator[EventBase]:
        read_at.append(len(sent))  # how many messages were sent when content was first read
        for event in events[2:]:
            yield event

    async def send(message: Message) -> None:
        sent.append(message)

    response = SSEResponse(content(), first=events[:2], heartbeat=None, retry=500)
    await response({"type": "http"}, never_disconnect, send)
    assert [m["type"] for m in sent[:2]] == ["http.response.start", "http.response.body"]
    assert read_at == [2], "content was read only after the first items were sent"
    first = sent[1]["body"]
    assert first.startswith(b"retry: 500\nid: 0\n") and first.count(b"\n\n") == 2
    body = b"".join(m.get("body", b"") for m in sent)
    assert [m.data for m in SSEDecoder().decode(body)] == [e.model_dump_json() for e in events], (
        "every event once, in order"
    )


async def test_a_terminal_event_among_the_first_items_ends_without_reading_content() -> None:
    events = events_of(1)
    sent: list[Message] = []
    read: list[bool] = []

    async def content() -> AsyncIterator[EventBase]:
        read.append(True)
        yield text(99, "never read")

    async def send(message: Message) -> None:
        sent.append(message)

    response = SSEResponse(content(), first=events, dialect="openai", heartbeat=None)
    await response({"type": "http"}, never_disconnect, send)
    assert read == []
    body = b"".join(m.get("body", b"") for m in sent)
    assert b'"content":"1"' in body and body.endswith(b"data: [DONE]\n\n")
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert response.disconnect_reason is None


async def test_a_stalled_send_times_out_and_cancels() -> None:
    events = events_of(3)
    stalled = asyncio.Event()
    reasons: list[str] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            stalled.set()
            await asyncio.Event().wait()  # the client stopped reading

    response = SSEResponse(
        aiter_of([events]), heartbeat=None, send_timeout=0.05, on_disconnect=reasons.append
    )
    await asyncio.wait_for(response({"type": "http"}, never_disconnect, send), TIMEOUT)
    assert stalled.is_set()
    assert reasons == ["a write did not complete within 0.05s"]


async def test_a_failing_send_is_a_disconnect() -> None:
    reasons: list[str] = []
    closed = asyncio.Event()

    async def content() -> AsyncIterator[EventBase]:
        try:
            for event in events_of(3):
                yield event
        finally:
            closed.set()

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise OSError("broken pipe")

    response = SSEResponse(content(), on_disconnect=reasons.append)
    await asyncio.wait_for(response({"type": "http"}, never_disconnect, send), TIMEOUT)
    assert reasons == ["client disconnected (OSError)"]
    assert closed.is_set(), "the event iterator was closed"


async def test_a_stalled_heartbeat_times_out() -> None:
    reasons: list[str] = []
    pinged = asyncio.Event()

    async def content() -> AsyncIterator[EventBase]:
        yield Started(stream_id="s", seq=0)
        await asyncio.Event().wait()  # upstream idle forever
        yield text(1, "never")  # pragma: no cover

    async def send(message: Message) -> None:
        if message.get("body") == HEARTBEAT:
            pinged.set()
            await asyncio.Event().wait()

    response = SSEResponse(
        content(), heartbeat=0.01, send_timeout=0.05, on_disconnect=reasons.append
    )
    await asyncio.wait_for(response({"type": "http"}, never_disconnect, send), TIMEOUT)
    assert pinged.is_set()
    assert reasons == ["a write did not complete within 0.05s"]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        SSEResponse(aiter_of([]), heartbeat=0)
    with pytest.raises(ValueError, match="send_timeout"):
        SSEResponse(aiter_of([]), send_timeout=-1)
    with pytest.raises(ValueError, match="unknown SSE dialect"):
        SSEResponse(aiter_of([]), dialect="klingon")


async def test_no_heartbeat_goes_out_after_the_end_of_the_response() -> None:
    """Regression: a ping waiting for a paused socket was sent after the final message.

    uvicorn checks for the response's end after waiting for a paused socket,
    and raises for a message after it ("Unexpected ASGI message
    'http.response.body' sent, after response already completed"), which the
    response logged as a failed task, with a traceback, under backpressure.
    """
    pinging = asyncio.Event()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        if message.get("body") == HEARTBEAT:
            pinging.set()
            await asyncio.sleep(0.05)  # the socket is paused: the ping waits to be written
        if sent and sent[-1]["type"] == "http.response.body" and not sent[-1]["more_body"]:
            raise RuntimeError("a message after the response's end")
        sent.append(message)

    async def receive() -> Message:
        await asyncio.Event().wait()
        raise AssertionError

    async def content() -> AsyncIterator[EventBase]:
        try:
            yield TextDelta(stream_id="s", seq=0, text="a")
            yield Finished(stream_id="s", seq=1, finish_reason="stop")
        finally:
            await pinging.wait()  # the end is written while a ping is on its way

    response = SSEResponse(content(), heartbeat=0.01, send_timeout=None)
    scope: Scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    await asyncio.wait_for(response(scope, receive, send), 5)
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert any(m.get("body") == HEARTBEAT for m in sent)
