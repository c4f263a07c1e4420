"""Sources: cold observables of raw server-sent events (:class:`SSEMessage`).

Nothing is requested before a subscription. Each subscription to an HTTP
source makes its own request from a task on the running event loop; disposing
the subscription cancels that task, which closes the HTTP response, so the
upstream sees its connection close (what stops generation and billing).

The ``openai`` client makes the request (auth, base URL, headers, retries,
HTTP error statuses raised as ``openai.APIStatusError``); the body is read raw
and decoded here, which is several times cheaper per chunk than the SDK's
object construction and yields exactly the provider's fields.

Pipe a source into :func:`operators.extract_deltas` to get events, or use
:func:`pipeline.stream.llm_stream` for the whole standard chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx2
from openai import AsyncOpenAI
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from pipeline.aio import _loop_for, from_async_iterable
from pipeline.sse import SSEDecoder, SSEMessage

__all__ = ["chat_completions", "decode_sse", "responses", "sse_body"]


async def decode_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[SSEMessage]:
    """Decode an async byte stream into messages stamped with their arrival offset."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    decoder = SSEDecoder()
    t = 0.0
    async for chunk in chunks:
        t = loop.time() - start
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


def _split_params(create: Callable[..., Any], params: dict[str, Any]) -> dict[str, Any]:
    """Move parameters the SDK method does not know into ``extra_body``.

    OpenAI-compatible servers take vendor parameters (``top_k``, ``mock``, ...)
    that the SDK's typed signature refuses; they travel in the JSON body.
    """
    known = inspect.signature(create).parameters
    extra = {k: params.pop(k) for k in [k for k in params if k not in known]}
    if extra:
        params["extra_body"] = {**extra, **(params.get("extra_body") or {})}
    return params


def _body_chunks(response: Any) -> AsyncGenerator[bytes, None]:
    """The response body's bytes: raw when it has no content encoding (nothing to decode)."""
    http = getattr(response, "http_response", None)
    if isinstance(http, httpx2.Response) and "content-encoding" not in http.headers:
        # What ``iter_bytes`` yields here, with two generator layers less per chunk.
        return http.aiter_raw()
    chunks: AsyncGenerator[bytes, None] = response.iter_bytes()  # an async generator
    return chunks


class _CancelTask(abc.DisposableBase):
    """Disposing cancels the task (idempotent); lighter than a ``Disposable`` and its lock."""

    __slots__ = ("_task",)

    def __init__(self, task: asyncio.Task[None]) -> None:
        self._task = task

    def dispose(self) -> None:
        self._task.cancel()


def _from_request(open_response: Callable[[], Any]) -> Observable[SSEMessage]:
    """A cold observable of the messages of one streamed request per subscription.

    What ``from_async_iterable`` over :func:`decode_sse` does, in one task with
    no async generator between the HTTP body and the observer (this runs for
    every chunk): disposing cancels the task, which closes the response.
    """

    def subscribe(
        observer: abc.ObserverBase[SSEMessage], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        loop = _loop_for(scheduler)

        async def pump() -> None:
            on_next = observer.on_next
            try:
                async with open_response() as response:
                    chunks = _body_chunks(response)
                    async with contextlib.aclosing(chunks):
                        running = asyncio.get_running_loop()
                        start = running.time()
                        decoder = SSEDecoder()
                        decode = decoder.decode
                        t = 0.0
                        async for chunk in chunks:
                            t = running.time() - start
                            for message in decode(chunk, t):
                                on_next(message)
                        for message in decoder.flush(t):
                            on_next(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                observer.on_error(exc)
                return
            observer.on_completed()

        return _CancelTask(loop.create_task(pump()))

    return Observable(subscribe)


def chat_completions(client: AsyncOpenAI, **params: Any) -> Observable[SSEMessage]:
    """Stream ``POST /chat/completions`` with ``params`` (``stream=True`` is added).

    Works with any OpenAI-compatible base URL; parameters the SDK does not
    know are sent in the JSON body (``extra_body``). Errors: ``openai.APIStatusError``
    for an HTTP error status, ``openai.APIConnectionError`` /
    ``APITimeoutError`` when the request fails, the HTTP library's transport
    errors when the connection drops mid-stream.
    """
    create = client.chat.completions.with_streaming_response.create
    params = _split_params(client.chat.completions.create, {**params, "stream": True})
    return _from_request(lambda: create(**params))


def responses(client: AsyncOpenAI, **params: Any) -> Observable[SSEMessage]:
    """Stream ``POST /responses`` (the Responses API); see :func:`chat_completions`."""
    create = client.responses.with_streaming_response.create
    params = _split_params(client.responses.create, {**params, "stream": True})
    return _from_request(lambda: create(**params))
