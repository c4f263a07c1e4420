"""The SSE responder's ``early_answer``: the status waits for the first token, sent at once.

A server answers a stream that fails before its first token with an HTTP
error, so it cannot send its headers before that token. With
``early_answer`` the response itself waits for it, and on a live reader
(``StreamRun.iterate``) sends the headers and the first frames in the step
that produced the token (the upstream connection's callback in ``rxllm
serve``), where a handler awaiting the token would write them a loop turn
later. The tests check that step, the early error, a start that has to wait,
a client that leaves first, events buffered before the response ran, and a
content that is not a live reader; and, through rxllm's app over a real
socket, the status of an upstream that fails first and the stream's bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from reactivex.subject import Subject
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive

from pipeline.apps.builtin_model import MockServer
from pipeline.apps.server.server_settings import ServerSettings
from pipeline.core.events import EventBase, Finished, Started, StreamError
from pipeline.core.sse_decoder import SSEDecoder
from pipeline.runtime.async_bridges import BufferReader
from pipeline.runtime.multicast import StreamRun
from sinks.sse_response import SSEResponse
from tests.serving import app_in_loop
from tests.sse_helpers import live, never_disconnect, text, until

TIMEOUT = 10


def early_error(held: Sequence[EventBase]) -> Response | None:
    last = held[-1]
    if isinstance(last, StreamError) and not last.after_first_token:
        return JSONResponse({"error": last.message}, status_code=last.status or 502)
    return None


class Client:
    """An ASGI ``send`` recording each message and the task that sent it; the start may wait."""

    def __init__(self, hold_start: bool = False) -> None:
        self.messages: list[tuple[Message, asyncio.Task[Any] | None]] = []
        self.start_gate = asyncio.Event()
        if not hold_start:
            self.start_gate.set()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            await self.start_gate.wait()
        self.messages.append((message, asyncio.current_task()))

    @property
    def status(self) -> int | None:
        starts = [m for m, _ in self.messages if m["type"] == "http.response.start"]
        assert len(starts) <= 1, "one start"
        return starts[0]["status"] if starts else None

    def ids(self) -> list[int]:
        body = b"".join(m.get("body", b"") for m, _ in self.messages)
        return [int(m.id) for m in SSEDecoder().decode(body) if m.id]

    def sent_by(self, seq: int) -> asyncio.Task[Any] | None:
        for message, task in self.messages:
            if f"id: {seq}\n".encode() in message.get("body", b""):
                return task
        raise AssertionError(f"event {seq} was not sent")


def started() -> tuple[StreamRun, Subject[Any], BufferReader[Any]]:
    """A live run with its reader attached, started."""
    run, source = live()
    reader = run.iterate()
    run.start()
    return run, source, reader


def respond(
    reader: BufferReader[Any],
    client: Client,
    receive: Receive = never_disconnect,
    **options: Any,
) -> tuple[SSEResponse, asyncio.Task[None]]:
    """An ``early_answer`` response over ``reader``, called in a task as a server would."""
    response = SSEResponse(reader, heartbeat=None, early_answer=early_error, **options)
    return response, asyncio.create_task(response({"type": "http"}, receive, client.send))


async def test_the_headers_and_first_token_go_out_in_the_producers_step() -> None:
    _run, source, reader = started()
    client = Client()
    response, call = respond(reader, client)
    await asyncio.sleep(0)  # the response waits for the first token
    producer = asyncio.current_task()
    source.on_next(Started(stream_id="s", seq=0))
    assert client.messages == [], "no headers before the first token"
    source.on_next(text(1))
    # before on_next returned, from this (the producing) task: headers, then both events
    assert client.status == 200
    assert client.messages[0][1] is producer
    assert client.ids() == [0, 1] and client.sent_by(1) is producer
    source.on_next(text(2))
    await until(lambda: client.ids() == [0, 1, 2])
    source.on_next(Finished(stream_id="s", seq=3, finish_reason="stop"))
    source.on_completed()
    await asyncio.wait_for(call, TIMEOUT)
    assert client.ids() == [0, 1, 2, 3]
    assert client.messages[-1][0] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert response.disconnect_reason is None


async def test_a_failure_before_the_first_token_is_answered_by_early_answer() -> None:
    run, source, reader = started()
    client = Client()
    _response, call = respond(reader, client)
    await asyncio.sleep(0)
    source.on_next(Started(stream_id="s", seq=0))
    source.on_next(StreamError(stream_id="s", seq=1, kind="http", message="slow down", status=429))
    source.on_completed()
    await asyncio.wait_for(call, TIMEOUT)
    assert client.status == 429
    assert b"slow down" in b"".join(m.get("body", b"") for m, _ in client.messages)
    assert client.ids() == [], "no SSE frame"
    assert run.sink_count == 0, "the reader is detached"


async def test_a_start_that_has_to_wait_is_finished_by_a_task_and_nothing_is_lost() -> None:
    _run, source, reader = started()
    client = Client(hold_start=True)
    _response, call = respond(reader, client, send_timeout=None)
    await asyncio.sleep(0)
    for seq in range(4):
        source.on_next(Started(stream_id="s", seq=0) if seq == 0 else text(seq))
    assert client.messages == [], "the start waits"
    client.start_gate.set()
    source.on_next(Finished(stream_id="s", seq=4, finish_reason="stop"))
    source.on_completed()
    await asyncio.wait_for(call, TIMEOUT)
    assert client.status == 200
    assert client.ids() == [0, 1, 2, 3, 4], "every event once, in order"


async def test_a_client_that_leaves_before_the_first_token_cancels_the_run() -> None:
    run, source, reader = started()
    client = Client()
    left = asyncio.Event()

    async def receive() -> Message:
        await left.wait()
        return {"type": "http.disconnect"}

    reasons: list[str] = []

    def gone(reason: str) -> None:
        reasons.append(reason)
        run.cancel(reason)

    _response, call = respond(reader, client, receive, on_disconnect=gone)
    source.on_next(Started(stream_id="s", seq=0))
    await asyncio.sleep(0)
    left.set()
    await asyncio.wait_for(call, TIMEOUT)
    assert reasons == ["client disconnected"]
    assert client.messages == [], "nothing sent to a client that left"
    assert not source.observers, "the upstream subscription is disposed"
    assert run.sink_count == 0


async def test_events_buffered_before_the_response_ran_are_read_by_it() -> None:
    _run, source, reader = started()
    source.on_next(Started(stream_id="s", seq=0))
    source.on_next(text(1))  # before the response runs: buffered in the reader
    client = Client()
    _response, call = respond(reader, client)
    await until(lambda: client.ids() == [0, 1])
    assert client.status == 200
    source.on_next(text(2))
    source.on_next(Finished(stream_id="s", seq=3, finish_reason="stop"))
    source.on_completed()
    await asyncio.wait_for(call, TIMEOUT)
    assert client.ids() == [0, 1, 2, 3]


async def test_content_that_is_not_a_live_reader_is_read_for_the_first_token() -> None:
    async def events() -> AsyncIterator[EventBase]:
        yield Started(stream_id="s", seq=0)
        yield StreamError(stream_id="s", seq=1, kind="http", message="down", status=503)

    client = Client()
    response = SSEResponse(events(), heartbeat=None, early_answer=early_error)
    await asyncio.wait_for(response({"type": "http"}, never_disconnect, client.send), TIMEOUT)
    assert client.status == 503


async def test_a_client_that_leaves_while_plain_content_waits_ends_the_response() -> None:
    closed: list[bool] = []

    async def events() -> AsyncIterator[EventBase]:
        try:
            yield Started(stream_id="s", seq=0)
            await asyncio.Event().wait()  # no first token, ever
            yield text(1)
        finally:
            closed.append(True)

    left = asyncio.Event()

    async def receive() -> Message:
        await left.wait()
        return {"type": "http.disconnect"}

    reasons: list[str] = []
    client = Client()
    response = SSEResponse(
        events(), heartbeat=None, early_answer=early_error, on_disconnect=reasons.append
    )
    call = asyncio.create_task(response({"type": "http"}, receive, client.send))
    for _ in range(5):
        await asyncio.sleep(0)  # the response reads the first event, then waits
    left.set()
    await asyncio.wait_for(call, TIMEOUT)
    assert reasons == ["client disconnected"]
    assert client.messages == []
    assert closed == [True], "the content is closed"


async def test_through_the_app_the_first_token_starts_the_response_and_a_failure_keeps_its_status(
    upstream: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    started_in_step = []
    start_now = SSEResponse._start_now

    def spy(self: SSEResponse, *args: Any) -> None:
        start_now(self, *args)
        started_in_step.append(self._started)

    monkeypatch.setattr(SSEResponse, "_start_now", spy)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    settings = ServerSettings(upstream=upstream.base_url, store=False)
    async with app_in_loop(settings) as (port, _), httpx.AsyncClient(timeout=TIMEOUT) as http:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        ok = await http.post(url, json={**body, "mock": {"text": "one two", "interval": 0.01}})
        failed = await http.post(url, json={**body, "mock": {"status": 429}})
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith("text/event-stream")
    frames = SSEDecoder().decode(ok.content)
    assert frames[-1].data == "[DONE]"
    assert "one" in frames[0].data or "one" in frames[1].data
    assert started_in_step == [True], "the first token started the response from its own step"
    assert failed.status_code == 429
    assert failed.json()["error"]["message"]
