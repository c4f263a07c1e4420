"""Sources: cold observables of raw server-sent events (:class:`SSEMessage`).

Nothing is requested before a subscription. Each subscription to an HTTP
source makes its own request from a task on the running event loop; disposing
the subscription cancels that task, which closes the HTTP response, so the
upstream sees its connection close (what stops generation and billing).

The ``openai`` client makes the request (auth, base URL, headers, retries,
HTTP error statuses raised as ``openai.APIStatusError``); for a plain client
(rxllm serve's: no retries, no custom auth) without the SDK's per-request
work (:mod:`pipeline.runtime.direct_request`). The body is read raw
and decoded here, which is several times cheaper per chunk than the SDK's
object construction and yields exactly the provider's fields.

Pipe a source into :func:`operators.extract_deltas` to get events, or use
:func:`pipeline.runtime.standard_chain.llm_stream` for the whole standard chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import os
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
from openai import AsyncOpenAI
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from operators._fused import direct_on_next
from pipeline.core.flow_control import CURRENT_FLOW, TURN_MESSAGES, FlowGate
from pipeline.core.sse_decoder import SSEDecoder, SSEMessage
from pipeline.runtime.async_bridges import _loop_for, from_async_iterable
from pipeline.runtime.direct_request import direct_stream
from pipeline.runtime.eager_task import eager_task
from pipeline.runtime.http_body import raw_body

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

__all__ = [
    "TURN_MESSAGES",
    "anthropic_messages",
    "chat_completions",
    "decode_sse",
    "responses",
    "sse_body",
]

_clock = time.monotonic
"""Arrival times: not ``loop.time()``, which uvloop caches per loop turn in milliseconds."""


async def decode_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[SSEMessage]:
    """Decode an async byte stream into messages stamped with their arrival offset."""
    start = _clock()
    decoder = SSEDecoder()
    t = 0.0
    async for chunk in chunks:
        t = _clock() - start
        for message in decoder.decode(chunk, t):
            yield message
    for message in decoder.flush(t):
        yield message


def sse_body(body: bytes | str | os.PathLike[str] | AsyncIterable[bytes]) -> Observable[SSEMessage]:
    """Replay a recorded raw SSE body: bytes, a file path, or an async byte stream.

    Bytes and files are emitted synchronously, all with ``t = 0`` (a raw body
    carries no timing); an async byte stream is read on the event loop and its
    messages carry their arrival offsets.

    Errors: ``OSError`` for a file that can't be read.
    """
    if isinstance(body, AsyncIterable):
        stream = body
        return from_async_iterable(lambda: decode_sse(stream))

    def subscribe(
        observer: abc.ObserverBase[SSEMessage], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        disposed = False

        def dispose() -> None:
            nonlocal disposed
            disposed = True

        try:
            data = body if isinstance(body, bytes) else Path(body).read_bytes()
        except OSError as exc:
            observer.on_error(exc)
            return Disposable()
        decoder = SSEDecoder()
        for message in decoder.decode(data) + decoder.flush():
            if disposed:
                break
            observer.on_next(message)
        else:
            observer.on_completed()
        return Disposable(dispose)

    return Observable(subscribe)


_REQUEST_OPTIONS = ("extra_headers", "extra_query", "extra_body", "timeout")
"""Arguments of the SDK's ``create`` that shape the request, not its JSON body."""


@functools.cache
def _known_params(create: Callable[..., Any]) -> frozenset[str]:
    return frozenset(inspect.signature(create).parameters)


def _request_kwargs(
    create: Callable[..., Any], params: dict[str, Any], placeholders: dict[str, Any]
) -> dict[str, Any]:
    """The keyword arguments of the SDK's ``create`` for the body ``params``.

    Plain JSON parameters (all that a request received over HTTP can hold)
    travel whole in ``extra_body``, which the SDK sends as it is. Given as
    typed arguments, they would first go through the SDK's transform, which
    walks every message against its typed dicts, on the event loop, before
    the request leaves: a cost that grows with the conversation (figures in
    bench/README.md). ``placeholders`` fill the arguments ``create``
    requires (the body's own values replace them). Parameters that are not
    plain JSON (a pydantic model, ...) keep the typed path, so the SDK
    converts them; there, vendor parameters the SDK does not know (``top_k``,
    ``mock``...) go into ``extra_body``.
    """
    options = {k: params.pop(k) for k in _REQUEST_OPTIONS if k in params}
    extra_body = options.pop("extra_body", None) or {}
    body = {**params, **extra_body}
    try:
        json.dumps(body)
    except (TypeError, ValueError):
        known = _known_params(create)
        kwargs = {k: v for k, v in params.items() if k in known}
        extra = {k: v for k, v in body.items() if k not in kwargs}
        return {**kwargs, **options, "extra_body": extra} if extra else {**kwargs, **options}
    return {**placeholders, "stream": True, **options, "extra_body": body}


def _body_chunks(
    response: Any, push: Callable[[bytes], bool] | None = None
) -> AsyncGenerator[bytes, None]:
    """The response body's bytes: raw when it has no content encoding (nothing to decode).

    ``push`` is :func:`pipeline.runtime.http_body.raw_body`'s: where the body is
    read that way, a whole chunk that arrives while the next is awaited may be
    handed to it instead of being yielded.
    """
    http = getattr(response, "http_response", None)
    if isinstance(http, httpx2.Response) and "content-encoding" not in http.headers:
        # What ``iter_bytes`` yields here: straight from the h11 connection when
        # it can (one generator instead of six per chunk), else ``aiter_raw``.
        return raw_body(http, push) or http.aiter_raw()
    chunks: AsyncGenerator[bytes, None] = response.iter_bytes()  # an async generator
    return chunks


async def _relay_in_turns(
    messages: list[SSEMessage],
    on_next: Callable[[SSEMessage], None],
    room: int,
    allowance: int,
    gate: FlowGate | None,
) -> tuple[int, int]:
    """Hand on ``messages``, letting the loop turn each time ``room`` is used up.

    The room is then refilled with twice the last ``allowance`` (at most
    :data:`TURN_MESSAGES`); a held ``gate`` is waited for instead of the
    turn, as between two reads. Returns the room and the allowance left.
    """
    for message in messages:
        on_next(message)
        room -= 1
        if room == 0:
            allowance = min(2 * allowance, TURN_MESSAGES)
            room = allowance
            if gate is not None and gate.held:
                await gate.wait_open()
            else:
                await asyncio.sleep(0)
    return room, allowance


_PUSH_LINES = 2 * TURN_MESSAGES
"""Line breaks a chunk may hold to be taken in the connection's callback (see ``push``)."""


class _Open:
    """What closes the open response's connection at once; shared by the task and its handle.

    Apart from both, so that the task's coroutine does not refer to the handle
    that refers to the task: a cycle would leave every finished stream's
    task, response and buffers to the cyclic collector instead of freeing them
    when the subscription goes.
    """

    __slots__ = ("close_now",)

    def __init__(self) -> None:
        self.close_now: Callable[[], None] | None = None


class _CancelTask(abc.DisposableBase):
    """Disposing cancels the task (idempotent) and closes the open response's connection.

    Lighter than a ``Disposable`` and its lock. The task's cancellation runs
    when the loop next steps it, a turn later (long on a saturated loop);
    the connection, when the HTTP client can close it at once (rxllm's
    network backend, :meth:`pipeline.runtime.http_backend.AsyncioStream.close_now`),
    is closed in the call itself, so the upstream sees the client leave and
    stops generating (and billing) then.
    """

    __slots__ = ("_open", "_task")

    def __init__(self, task: asyncio.Task[None], open_: _Open) -> None:
        self._task = task
        self._open = open_

    def dispose(self) -> None:
        close, self._open.close_now = self._open.close_now, None
        self._task.cancel()
        if close is not None:
            close()


def _closer(response: Any) -> Callable[[], None] | None:
    """What closes ``response``'s connection at once, if its network stream can."""
    http = getattr(response, "http_response", None)
    if not isinstance(http, httpx2.Response):
        return None
    stream = http.extensions.get("network_stream")
    close: Callable[[], None] | None = getattr(stream, "close_now", None)
    return close


def _from_request(open_response: Callable[[], Any]) -> Observable[SSEMessage]:
    """A cold observable of the messages of one streamed request per subscription.

    What ``from_async_iterable`` over :func:`decode_sse` does, in one task with
    no async generator between the HTTP body and the observer (this runs for
    every chunk): disposing cancels the task, which closes the response.

    One rule shares the event loop: at most ``allowance`` messages are
    handed on between two loop turns. The first message goes on alone, then
    the allowance doubles with each turn up to :data:`TURN_MESSAGES`. The
    chunks of a body often hold several messages, and a fast upstream's
    arrive hundreds at a time (what one socket read took, iterated without
    a wait): handed on in one go, the first token would wait until all of
    them had gone through the operators and the sinks, and every other
    stream on the loop would wait too. A turn lets the consumers (the SSE
    responder) send what is ready and the other streams run. The turn is
    taken after the message that uses up the allowance, before the next
    read: at a real token rate, where each read waits anyway, no message
    waits for it, and a chunk of one message costs one comparison.

    Between two reads, the task waits while the stream's flow gate is held
    (:mod:`pipeline.core.flow_control`, read at subscription): a reader
    that falls behind stops the upstream read instead of filling memory.

    On rxllm's network backend a whole chunk that arrives while the task
    waits for its next read is handled in the connection's callback instead
    (``push``, :func:`pipeline.runtime.http_body.raw_body`): decoded and handed
    on there, with no task wake-up, unless the gate is held or the chunk
    may hold more messages than a turn's allowance (then the task reads it
    as above).
    """

    def subscribe(
        observer: abc.ObserverBase[SSEMessage], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        loop = _loop_for(scheduler)
        gate = CURRENT_FLOW.get()  # the stream's flow gate, if it has one

        async def pump() -> None:
            # Nothing is sent after the terminal notification, and a disposed chain's
            # stages drop what comes: no AutoDetachObserver call per message.
            on_next = direct_on_next(observer)
            # Offsets count from the request, not from the response's headers: a
            # server that holds its headers until the first token (rxllm serve
            # does) would otherwise show a time to first token of nothing.
            start = _clock()
            decoder = SSEDecoder()
            decode = decoder.decode
            t = 0.0

            def push(piece: bytes) -> bool:
                """A whole chunk taken in the connection's callback while the read waits.

                What the loop below does with a chunk, without waking this task
                for it (one wake-up fewer per chunk at a real token rate). Not
                while the flow gate is held, nor for a chunk that may hold more
                messages than the task hands on between two loop turns: the
                task reads those and takes its turns.
                """
                nonlocal t
                if (gate is not None and gate.held) or piece.count(b"\n") > _PUSH_LINES:
                    return False
                t = _clock() - start
                for message in decode(piece, t):
                    on_next(message)
                return True

            try:
                async with open_response() as response:
                    open_.close_now = _closer(response)
                    chunks = _body_chunks(response, push)
                    async with contextlib.aclosing(chunks):
                        room = allowance = 1  # messages before the next loop turn
                        async for chunk in chunks:
                            if gate is not None and gate.held:  # held by a chunk pushed before
                                await gate.wait_open()
                            t = _clock() - start
                            messages = decode(chunk, t)
                            if len(messages) < room:
                                room -= len(messages)
                                for message in messages:
                                    on_next(message)
                            else:
                                room, allowance = await _relay_in_turns(
                                    messages, on_next, room, allowance, gate
                                )
                            if gate is not None and gate.held:  # a reader is behind: wait
                                await gate.wait_open()
                        for message in decoder.flush(t):
                            on_next(message)
                    open_.close_now = None  # the body is read: the connection is reused
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                open_.close_now = None
                observer.on_error(exc)
                return
            observer.on_completed()

        open_ = _Open()
        # Eager: the request goes out in the subscriber's step (pipeline.runtime.eager_task).
        return _CancelTask(eager_task(loop, pump()), open_)

    return Observable(subscribe)


def chat_completions(client: AsyncOpenAI, **params: Any) -> Observable[SSEMessage]:
    """Stream ``POST /chat/completions`` with ``params`` (``stream=True`` is added).

    Works with any OpenAI-compatible base URL; parameters the SDK does not
    know are sent in the JSON body (``extra_body``). Errors: ``openai.APIStatusError``
    for an HTTP error status, ``openai.APIConnectionError`` /
    ``APITimeoutError`` when the request fails, the HTTP library's transport
    errors when the connection drops mid-stream.
    """
    direct = direct_stream(client, "/chat/completions", {**params, "stream": True})
    if direct is not None:
        return _from_request(direct)
    create = client.chat.completions.with_streaming_response.create
    kwargs = _request_kwargs(
        client.chat.completions.create,
        {**params, "stream": True},
        {"model": params.get("model", ""), "messages": []},
    )
    return _from_request(lambda: create(**kwargs))


def responses(client: AsyncOpenAI, **params: Any) -> Observable[SSEMessage]:
    """Stream ``POST /responses`` (the Responses API); see :func:`chat_completions`."""
    direct = direct_stream(client, "/responses", {**params, "stream": True})
    if direct is not None:
        return _from_request(direct)
    create = client.responses.with_streaming_response.create
    kwargs = _request_kwargs(client.responses.create, {**params, "stream": True}, {})
    return _from_request(lambda: create(**kwargs))


def anthropic_messages(client: AsyncAnthropic, **params: Any) -> Observable[SSEMessage]:
    """Stream ``POST /v1/messages`` (Anthropic Messages) with ``params`` as its body.

    The ``anthropic`` client makes the request (``x-api-key``,
    ``anthropic-version``, base URL); the body travels whole, as it is, in
    ``extra_body`` (fields the SDK does not know are kept), and the response
    is read raw like :func:`chat_completions`'. Errors: ``anthropic.APIStatusError``
    for an HTTP error status (529 when overloaded), ``anthropic.APIConnectionError``
    / ``APITimeoutError`` when the request fails.
    """
    direct = direct_stream(client, "/v1/messages", {**params, "stream": True})
    if direct is not None:
        return _from_request(direct)
    create = client.messages.with_streaming_response.create
    options = {k: params.pop(k) for k in _REQUEST_OPTIONS if k in params}
    body = {**params, **(options.pop("extra_body", None) or {}), "stream": True}
    kwargs = {
        "model": body.get("model", ""),
        "max_tokens": body.get("max_tokens", 1),
        "messages": [],
        "stream": True,
        **options,
        "extra_body": body,
    }
    return _from_request(lambda: create(**kwargs))
