"""A streamed HTTP/1.1 response body read straight from httpcore2's h11 connection.

httpx2 hands each piece of a body up through five async-generator layers
(``Response.aiter_raw``, ``BoundAsyncStream``, ``AsyncResponseStream``,
httpcore2's ``HTTP11ConnectionByteStream`` and its ``_receive_response_body``)
and httpcore2 enters an exception-mapping context manager around every h11
event. At a real token rate each chunk is its own socket read and climbs all
of them; :func:`raw_body` reads the same h11 connection from one generator
(the figures are in ``bench/README.md``, "Real rate").

It does what those layers do, once per body instead of once per chunk: the
same h11 events, the same exceptions (h11's protocol errors become
httpcore2's, which httpx2's own mapping turns into ``httpx2.ReadTimeout``,
``ReadError``, ``RemoteProtocolError``..., with the request attached), and
the response closed at the end, which hands the connection back to the pool
when the body was read whole and closes it otherwise (an error, a consumer
that left).

Where it knowingly differs: a read that holds exactly one whole chunk of a
chunked body (a size line without extension, the data, its line break) while
h11 is between chunks, the usual case at a real rate, is cut out here and
h11 never sees it; h11's reader and state machine cost more than the rest of
the read. Anything else (a chunk split across reads, several in one read, an
extension, the last chunk, a ``Content-Length`` body) goes to h11 as before,
so h11 still parses and checks every byte it is given. Such a chunk may
also be handed to the caller's ``push`` in the connection's callback while
the generator waits (see :func:`raw_body`): it then never wakes the task.

It knows only the responses it can read this way: an httpx2 response over
httpcore2's HTTP/1.1 connection, without a ``trace`` extension or httpcore2's
debug logging (their hooks are httpcore2's). For any other (HTTP/2, a proxy's
tunnel, another httpx2 version) it returns ``None`` and the caller reads the
body as before.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, Callable
from typing import Any

import h11
import httpcore2
import httpx2

__all__ = ["raw_body"]

try:  # private names of httpx2 and httpcore2: without them, every body takes the usual path
    from h11._readers import ChunkedReader
    from httpcore2._async.connection_pool import PoolByteStream
    from httpcore2._async.http11 import HTTP11ConnectionByteStream
    from httpx2._client import BoundAsyncStream
    from httpx2._exceptions import request_context
    from httpx2._transports.default import AsyncResponseStream, map_httpcore_exceptions
except ImportError:  # pragma: no cover - another httpx2 / httpcore2 layout
    _LAYOUT_KNOWN = False
else:
    # The chunked reader's state is read on every chunk: an h11 without it takes the usual path.
    _LAYOUT_KNOWN = all(
        hasattr(ChunkedReader(), name)
        for name in ("_bytes_in_chunk", "_bytes_to_discard", "_reading_trailer")
    )

_HTTPCORE_LOG = logging.getLogger("httpcore2.http11")

_WHOLE_CHUNK = re.compile(rb"([0-9A-Fa-f]{1,16})\r\n(.*)\r\n", re.DOTALL)
"""One whole chunk of a chunked body: its size line (no extension), its data, its end."""


def _whole_chunk(data: bytes) -> bytes | None:
    """The data of ``data`` if it is exactly one whole chunk (not the last, empty one)."""
    whole = _WHOLE_CHUNK.fullmatch(data)
    if whole is None:
        return None
    piece = whole[2]
    return piece if piece and len(piece) == int(whole[1], 16) else None


def _between_chunks(reader: Any) -> bool:
    """h11's chunked reader is at the start of a chunk (nothing of one read or to skip)."""
    return (
        reader._bytes_in_chunk == 0 and not reader._bytes_to_discard and not reader._reading_trailer
    )


def _connection_of(response: httpx2.Response) -> tuple[Any, httpcore2.Request] | None:
    """httpcore2's HTTP/1.1 connection under ``response`` and its request, if it is one."""
    if not _LAYOUT_KNOWN:  # pragma: no cover
        return None
    stream = response.stream
    if type(stream) is not BoundAsyncStream:
        return None
    transport_stream = getattr(stream, "_stream", None)
    if type(transport_stream) is not AsyncResponseStream:
        return None
    pool_stream = getattr(transport_stream, "_httpcore_stream", None)
    if type(pool_stream) is not PoolByteStream:
        return None
    body = getattr(pool_stream, "_stream", None)
    if type(body) is not HTTP11ConnectionByteStream:
        return None
    connection = getattr(body, "_connection", None)
    request = getattr(body, "_request", None)
    h11_state = getattr(connection, "_h11_state", None)
    if not isinstance(h11_state, h11.Connection) or not isinstance(request, httpcore2.Request):
        return None
    if request.extensions.get("trace") is not None or _HTTPCORE_LOG.isEnabledFor(logging.DEBUG):
        return None
    return connection, request


def raw_body(
    response: httpx2.Response, push: Callable[[bytes], bool] | None = None
) -> AsyncGenerator[bytes, None] | None:
    """The body's bytes as ``response.aiter_raw()`` yields them; ``None`` if not readable here.

    Close the generator (``contextlib.aclosing``) to close the response.

    With ``push``, a whole chunk that arrives while the generator waits for
    the next one (on rxllm's network backend,
    :meth:`pipeline.runtime.http_backend.AsyncioStream.push_to`) is first
    offered to ``push(data)`` in the callback that received it: ``True``
    means it took the chunk's data, which the generator then does not yield;
    ``False`` leaves it to the generator. An exception it raises comes out
    of the generator.
    """
    if response.is_stream_consumed or response.is_closed:
        return None  # aiter_raw raises the error that says so
    found = _connection_of(response)
    if found is None:
        return None
    connection, request = found
    timeouts = request.extensions.get("timeout") or {}
    response.is_stream_consumed = True
    return _read(response, connection, timeouts.get("read"), push)


async def _read(
    response: httpx2.Response,
    connection: Any,
    read_timeout: float | None,
    push: Callable[[bytes], bool] | None,
) -> AsyncGenerator[bytes, None]:
    """httpcore2's ``_receive_response_body`` and ``_receive_event``, under httpx2's mapping."""
    h11_state: h11.Connection = connection._h11_state
    next_event = h11_state.next_event
    receive_data = h11_state.receive_data
    stream = connection._network_stream
    read = stream.read
    size: int = connection.READ_NUM_BYTES
    reader = getattr(h11_state, "_reader", None)
    buffer = getattr(h11_state, "_receive_buffer", None)
    chunked = type(reader) is ChunkedReader and buffer is not None
    push_to: Callable[..., None] | None = getattr(stream, "push_to", None)
    take: Callable[[bytes], bool] | None = None
    if push is not None and push_to is not None:

        def take(data: bytes) -> bool:
            # _whole_chunk's test, inline: this runs for every chunk at a real rate.
            whole = _WHOLE_CHUNK.fullmatch(data)
            if whole is None:
                return False
            piece = whole[2]
            if not piece or len(piece) != int(whole[1], 16) or not push(piece):
                return False
            response._num_bytes_downloaded += len(piece)
            return True

    try:
        with request_context(request=response.request), map_httpcore_exceptions():
            while True:
                try:
                    event = next_event()
                except h11.RemoteProtocolError as exc:  # as httpcore2 maps it
                    raise httpcore2.RemoteProtocolError(exc) from exc
                if event is h11.NEED_DATA:
                    data = await read(size, read_timeout)
                    # One whole chunk alone in a read, the usual case at a real rate, is cut
                    # out without h11's reader and event (bench/README.md, "Real rate").
                    if chunked and not buffer and _between_chunks(reader):
                        while (piece := _whole_chunk(data)) is not None:
                            response._num_bytes_downloaded += len(piece)
                            yield piece
                            if take is None or push_to is None:
                                data = await read(size, read_timeout)
                                continue
                            # Still between chunks: the next whole ones may be taken
                            # as they arrive, without this generator (bench/README.md).
                            push_to(take, read_timeout)
                            try:
                                data = await read(size, read_timeout)
                            finally:
                                push_to(None)
                    if not data and h11_state.their_state is h11.SEND_RESPONSE:
                        raise httpcore2.RemoteProtocolError(
                            "Server disconnected without sending a response."
                        )
                    receive_data(data)
                elif type(event) is h11.Data:
                    chunk = bytes(event.data)
                    if chunk:
                        response._num_bytes_downloaded += len(chunk)
                        yield chunk
                elif event is h11.PAUSED or type(event) is h11.EndOfMessage:
                    return
    finally:
        await response.aclose()  # the connection back to the pool, or closed
