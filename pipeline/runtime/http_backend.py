"""An asyncio-native network backend for the HTTP client under the ``openai`` SDK.

The SDK talks HTTP through httpx2 and httpcore2, whose default network
backend goes through anyio: every socket read enters an anyio cancel scope
(a ``sniffio`` lookup, the current task, a deadline) inside a
``map_exceptions`` context. At a real token rate every chunk is its own
read, and that layer costs a third of a stream's client CPU per chunk
(``bench/README.md``). :class:`AsyncioBackend` implements httpcore2's
``AsyncNetworkBackend`` on an asyncio protocol instead: a read takes what
has arrived, or waits on one future. A read timeout is a deadline that one
timer per connection checks (moved only when it would fire late), not a
timer armed and cancelled per read.

:func:`http_client` gives the SDK's default client (``DefaultAsyncHttpxClient``:
its timeouts, connection limits and redirects) on this backend; pass it as
``AsyncOpenAI(http_client=...)``. ``rxllm serve`` uses it for its upstreams. Its
pool is a :class:`pipeline.runtime.http_pool.LightPool`: httpcore2's, with a
lighter pass over the connections.
httpx2's transport has no parameter for a network backend, so it is set on
the transport's connection pool; if that pool is not where this module
expects it (another httpx2 version), the client keeps the default backend
and a debug line says so.

Errors are httpcore2's, as with the default backend (the SDK maps them):
``ConnectError`` / ``ConnectTimeout`` when connecting or in the TLS
handshake, ``ReadError`` / ``ReadTimeout``, ``WriteError`` /
``WriteTimeout``. Requests through a proxy (``proxy=``, or the proxy
variables of the environment) go through httpx2's proxy transports, which
keep the default backend (and its TLS inside TLS for an HTTPS proxy).
"""

# httpcore2's interface takes timeouts as parameters (ASYNC109).
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, cast

import httpcore2
import httpx2
from httpcore2 import (
    ConnectError,
    ConnectTimeout,
    ReadError,
    ReadTimeout,
    WriteError,
    WriteTimeout,
)
from openai import DefaultAsyncHttpxClient

from pipeline.runtime.eager_task import step_now, waiting_step
from pipeline.runtime.http_pool import LightPool

__all__ = ["AsyncioBackend", "AsyncioStream", "http_client"]

log = logging.getLogger(__name__)

READ_BUFFER = 256 * 1024
"""Bytes received and not yet read at which the socket stops being read."""

_TIMER_EARLY = 0.001  # a loop's timer may fire up to a clock tick before its time

_COMPACT_AT = 32  # chunks read while more wait: then the read ones are dropped from the list

HOLD_WRITES = 64 * 1024
"""Bytes of small writes held until the next read: a request's head and body in one send."""


class _Protocol(asyncio.Protocol):
    """Collects what arrives; wakes the one reader and the one writer waiting."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        # A list and the index of its first unread chunk, not a deque: an empty
        # deque is many times an empty list, per connection, and this list
        # rarely holds more than one.
        self.chunks: list[bytes] = []
        self.head = 0
        self.buffered = 0
        self.eof = False
        self.error: Exception | None = None
        self.reader: asyncio.Future[None] | None = None
        self.drained: asyncio.Future[None] | None = None
        self.writing_paused = False
        self.reading_paused = False
        # The read timeout is a deadline checked by one timer per connection,
        # moved only when it would fire late: no timer armed and cancelled per read.
        self.loop = asyncio.get_running_loop()
        self.deadline = 0.0  # loop time at which the waiting reader's read times out
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        # What takes a chunk in this callback while a read waits (AsyncioStream.push_to).
        self.push: Callable[[bytes], bool] | None = None
        self.push_timeout: float | None = None
        # The eager task whose read waits, stepped in this callback when data comes
        # (pipeline.runtime.eager_task.step_now): no loop turn before it reads it.
        self.waiting: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        push = self.push
        if push is not None and self.head == len(self.chunks):  # nothing unread before it
            reader = self.reader
            if reader is not None and not reader.done():
                try:
                    taken = push(data)
                except Exception as exc:  # the read that waits fails with it, in its task
                    reader.set_exception(exc)
                    return
                if taken:  # read and handled: the waiting read waits on, its deadline moved
                    timeout = self.push_timeout
                    if timeout is not None and not reader.done():
                        deadline = self.loop.time() + timeout
                        if self.timer is not None and self.timer_at <= deadline:
                            self.deadline = deadline  # read_deadline's usual case, inline
                        else:
                            self.read_deadline(timeout)
                    return
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > READ_BUFFER and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()
        reader = self.reader
        self._wake_reader()
        waiting, self.waiting = self.waiting, None
        if waiting is not None and reader is not None:
            step_now(reader, waiting)  # the reader's step now, not a loop turn later

    def eof_received(self) -> bool | None:
        self.eof = True
        self._wake_reader()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake_reader()
        self._wake_writer()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def read_deadline(self, timeout: float) -> None:
        """The waiting reader's read times out after ``timeout`` seconds from now."""
        self.deadline = deadline = self.loop.time() + timeout
        if self.timer is None or self.timer_at > deadline:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(deadline, self._check_deadline)
            self.timer_at = deadline

    def _check_deadline(self) -> None:
        self.timer = None
        reader = self.reader
        if reader is None or reader.done():
            return  # no read waiting: the next one arms the timer again
        if self.loop.time() + _TIMER_EARLY >= self.deadline:
            reader.set_exception(TimeoutError())
        else:  # the reader waiting now started later: its own deadline
            self.timer = self.loop.call_at(self.deadline, self._check_deadline)
            self.timer_at = self.deadline

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake_writer()

    def _wake_reader(self) -> None:
        if self.reader is not None and not self.reader.done():
            self.reader.set_result(None)

    def _wake_writer(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


async def _wait(
    future: asyncio.Future[None], timeout: float | None, late: type[Exception], what: str
) -> None:
    """Await ``future``; after ``timeout`` seconds (``None``: no limit) raise ``late``."""
    if timeout is None:
        await future
        return
    timer = asyncio.get_running_loop().call_later(timeout, _expire, future)
    try:
        await future
    except TimeoutError:
        raise late(f"{what} within {timeout} s") from None
    finally:
        timer.cancel()


class AsyncioStream(httpcore2.AsyncNetworkStream):
    """One connection: an asyncio transport and the protocol collecting its bytes."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._held: list[bytes] = []  # small writes not sent yet (see write)
        self._held_bytes = 0

    def _send_held(self) -> None:
        held, self._held, self._held_bytes = self._held, [], 0
        if held and not self._transport.is_closing():
            self._transport.write(b"".join(held))

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._held:  # a request goes out whole before its answer is awaited
            self._send_held()
        protocol = self._protocol
        while protocol.head == len(protocol.chunks):  # nothing unread
            if protocol.error is not None:
                raise ReadError(f"the connection was lost: {protocol.error}")
            if protocol.eof:
                return b""
            protocol.reader = reader = protocol.loop.create_future()
            protocol.waiting = waiting_step()
            if timeout is not None:
                protocol.read_deadline(timeout)
            try:
                await reader
            except TimeoutError:
                raise ReadTimeout(f"no data within {timeout} s") from None
            finally:
                protocol.reader = protocol.waiting = None
        chunks, head = protocol.chunks, protocol.head
        data = chunks[head]
        if len(data) > max_bytes:
            chunks[head] = data[max_bytes:]
            data = data[:max_bytes]
        elif head + 1 == len(chunks):
            chunks.clear()
            protocol.head = 0
        elif head + 1 < _COMPACT_AT:
            protocol.head = head + 1
        else:  # a reader that never quite catches up: drop what it has read
            del chunks[: head + 1]
            protocol.head = 0
        protocol.buffered -= len(data)
        if protocol.reading_paused and protocol.buffered <= READ_BUFFER // 4:
            protocol.reading_paused = False
            self._transport.resume_reading()
        return data

    def push_to(self, take: Callable[[bytes], bool] | None, timeout: float | None = None) -> None:
        """While a read waits, offer each chunk that arrives to ``take`` first.

        ``take(data)`` runs in the protocol's callback, when nothing received
        before is still unread and a read is waiting: ``True`` means it
        handled ``data`` (the read waits on, as if it had read it and been
        called again, ``timeout`` from now); ``False`` leaves ``data`` to the
        read, as without it. An exception it raises is the waiting read's.
        At a real token rate this saves a task wake-up per chunk: the
        chunk goes through in the callback that received it. ``None`` stops.
        """
        self._protocol.push = take
        self._protocol.push_timeout = timeout

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Send ``buffer``; a small one is held until the next read or write.

        httpcore2 writes a request's head and its body separately and then
        reads the answer: held, they leave in one system call and one TCP
        segment instead of two (a request always ends with a read, which
        sends what is held). Past :data:`HOLD_WRITES` (a large or streamed
        upload) everything held goes out at once, with the usual flow control.
        """
        if not buffer:
            return
        protocol = self._protocol
        if protocol.error is not None or self._transport.is_closing():
            raise WriteError("the connection is closed")
        if self._held_bytes + len(buffer) <= HOLD_WRITES:
            self._held.append(bytes(buffer))
            self._held_bytes += len(buffer)
            return
        self._send_held()
        self._transport.write(buffer)
        if protocol.writing_paused:
            protocol.drained = asyncio.get_running_loop().create_future()
            try:
                await _wait(protocol.drained, timeout, WriteTimeout, "the write did not drain")
            finally:
                protocol.drained = None
            if protocol.error is not None:
                raise WriteError(f"the connection was lost: {protocol.error}")

    async def aclose(self) -> None:
        self._send_held()
        self._transport.close()

    def close_now(self) -> None:
        """Close the connection without waiting for a task to run (a cancelled stream's
        upstream sees it leave in the callback that cancelled it; see ``sources``)."""
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            self._transport.close()
            raise ConnectTimeout(f"the TLS handshake took more than {timeout} s") from None
        except (OSError, ssl.SSLError) as exc:
            self._transport.close()
            raise ConnectError(f"the TLS handshake failed: {exc}") from exc
        if transport is None:  # the connection closed during the handshake
            raise ConnectError("the connection closed during the TLS handshake")
        # Reading is paused and resumed on the TLS transport from now on.
        self._protocol.transport = transport
        return AsyncioStream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        transport = self._transport
        if info == "ssl_object":
            return transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return transport.get_extra_info("sockname")
        if info == "server_addr":
            return transport.get_extra_info("peername")
        if info == "socket":
            return transport.get_extra_info("socket")
        if info == "is_readable":
            # An idle pooled connection with something to read (data, EOF) is
            # one the server has closed or broken: the pool drops it.
            protocol = self._protocol
            unread = protocol.head < len(protocol.chunks)
            return unread or protocol.eof or transport.is_closing()
        return None


class AsyncioBackend(httpcore2.AsyncNetworkBackend):
    """httpcore2's network backend on asyncio transports (see the module)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        local = (local_address, 0) if local_address else None
        connecting = asyncio.get_running_loop().create_connection(
            _Protocol, host, port, local_addr=local
        )
        return await _connect(connecting, f"{host}:{port}", timeout, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        connecting = asyncio.get_running_loop().create_unix_connection(_Protocol, path)
        return await _connect(connecting, path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _connect(
    connecting: Coroutine[Any, Any, tuple[asyncio.BaseTransport, _Protocol]],
    where: str,
    timeout: float | None,
    socket_options: Iterable[Any] | None,
) -> AsyncioStream:
    """Await ``connecting`` (a loop's ``create_*connection``) as httpcore2 expects.

    ``socket_options`` (``setsockopt`` arguments) are set on the new socket,
    TCP or Unix alike, as httpcore2's own backends do.
    """
    try:
        async with asyncio.timeout(timeout):
            transport, protocol = await connecting
    except TimeoutError:
        raise ConnectTimeout(f"connecting to {where} took more than {timeout} s") from None
    except OSError as exc:
        raise ConnectError(f"connecting to {where} failed: {exc}") from exc
    stream = AsyncioStream(cast(asyncio.Transport, transport), protocol)
    sock = stream.get_extra_info("socket")
    for option in socket_options or ():
        sock.setsockopt(*option)
    return stream


def http_client(
    default: Callable[..., httpx2.AsyncClient] = DefaultAsyncHttpxClient, **options: Any
) -> httpx2.AsyncClient:
    """An SDK's default async HTTP client on :class:`AsyncioBackend`.

    ``default`` makes it: the ``openai`` SDK's ``DefaultAsyncHttpxClient``,
    or the ``anthropic`` SDK's (which also sets TCP keep-alive options on its
    sockets). ``options`` go to it (``timeout``, ``limits``, ``proxy``...).
    Use it as ``AsyncOpenAI(http_client=http_client())``.
    """
    client = default(**options)
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    if isinstance(pool, httpcore2.AsyncConnectionPool) and hasattr(pool, "_network_backend"):
        pool._network_backend = AsyncioBackend()
        if type(pool) is httpcore2.AsyncConnectionPool:  # not a proxy's pool
            pool.__class__ = LightPool  # the same pool, its pass light on busy connections
    else:
        log.debug("httpx2's connection pool is not where expected: keeping its network backend")
    return client
