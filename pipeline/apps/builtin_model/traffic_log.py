"""What the mock saw: every request and every TCP connection, with monotonic times.

The server's event loop writes records (in its own thread); tests read them
and wait on them from any thread or event loop::

    request = server.recorder.last_request
    closed_at = await request.connection.wait_closed_async(timeout=5)

Times are ``time.monotonic()`` seconds, comparable with the test's own.
A connection's ``closed_at`` is taken in the transport's ``connection_lost``:
the moment the socket is closed. Headers that carry credentials
(``Authorization``, API keys, cookies) are never recorded.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CONNECTION_KEY",
    "REQUEST_KEY",
    "ConnectionRecord",
    "Outcome",
    "Recorder",
    "RecordingMiddleware",
    "RequestRecord",
]

CONNECTION_KEY = "rxllm.mock.connection"
"""Key of the :class:`ConnectionRecord` in the ASGI ``scope["state"]``."""
REQUEST_KEY = "rxllm.mock.request"
"""Key of the :class:`RequestRecord` in the ASGI ``scope["state"]``."""

Outcome = Literal["completed", "client_gone", "dropped", "error"]
_T = TypeVar("_T")
_SENSITIVE = ("authorization", "api-key", "api_key", "apikey", "cookie", "secret")


@dataclass(eq=False)
class ConnectionRecord:
    """One TCP connection: when it opened and closed, and the requests it served.

    ``error`` is the reason the transport gave when it closed on an error
    (a reset), ``None`` for an orderly close.
    """

    id: int
    peer: tuple[str, int] | None
    opened_at: float
    closed_at: float | None = None
    error: str | None = None
    requests: list[RequestRecord] = field(default_factory=list)
    _recorder: Recorder | None = field(default=None, repr=False)
    _transport: asyncio.Transport | None = field(default=None, repr=False)

    def wait_closed(self, timeout: float = 5.0) -> float:
        """Block until the connection is closed; return ``closed_at``.

        Raises ``TimeoutError`` if it is still open after ``timeout`` seconds.
        """
        return self._owner().wait_for(lambda: self.closed_at, timeout)

    async def wait_closed_async(self, timeout: float = 5.0) -> float:  # noqa: ASYNC109
        """Wait until the connection is closed; return ``closed_at``.

        Raises ``TimeoutError`` if it is still open after ``timeout`` seconds.
        """
        return await self._owner().wait_for_async(lambda: self.closed_at, timeout)

    def _owner(self) -> Recorder:
        if self._recorder is None:
            raise RuntimeError("this connection record belongs to no recorder")
        return self._recorder

    def _drop(self, reset: bool) -> bool:
        """Close the socket now, mid-response (a RST with ``reset``); call on the server loop."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        if reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()
        return True


@dataclass(eq=False)
class RequestRecord:
    """One HTTP request: what arrived, when, and how its response ended.

    ``outcome`` is ``None`` while the response is going on, then
    ``completed`` (the whole response was sent), ``client_gone`` (the client
    went away first), ``dropped`` (the mock dropped the connection: a fault)
    or ``error`` (the app failed).
    """

    id: int
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    arrived_at: float
    connection: ConnectionRecord | None = field(default=None, repr=False)
    status: int | None = None
    outcome: Outcome | None = None
    ended_at: float | None = None

    @property
    def script(self) -> Any:
        """The ``mock`` field of the request's body, if any."""
        return self.body.get("mock") if isinstance(self.body, dict) else None


class Recorder:
    """Thread-safe store of :class:`RequestRecord` and :class:`ConnectionRecord` items.

    ``max_records`` bounds each list (oldest dropped first); ``None`` keeps all.
    """

    def __init__(self, max_records: int | None = None) -> None:
        self._cond = threading.Condition()
        self._requests: deque[RequestRecord] = deque(maxlen=max_records)
        self._connections: deque[ConnectionRecord] = deque(maxlen=max_records)
        self._open: set[ConnectionRecord] = set()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._request_ids = 0
        self._connection_ids = 0

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the requests, oldest first."""
        with self._cond:
            return list(self._requests)

    @property
    def connections(self) -> list[ConnectionRecord]:
        """A snapshot of the connections, oldest first."""
        with self._cond:
            return list(self._connections)

    @property
    def open_connections(self) -> list[ConnectionRecord]:
        """A snapshot of the connections not closed yet."""
        with self._cond:
            return sorted(self._open, key=lambda c: c.id)

    @property
    def last_request(self) -> RequestRecord:
        """The latest request; raises ``LookupError`` if there is none."""
        with self._cond:
            if not self._requests:
                raise LookupError("the mock has received no request yet")
            return self._requests[-1]

    def wait_for(self, predicate: Callable[[], _T | None], timeout: float = 5.0) -> _T:
        """Block until ``predicate()`` is truthy (checked on every change); return it.

        Raises ``TimeoutError`` after ``timeout`` seconds. Do not call it on the
        server's own event loop.
        """
        with self._cond:
            result = self._cond.wait_for(predicate, timeout)
        if not result:
            raise TimeoutError(f"condition not met within {timeout:g}s")
        return result

    async def wait_for_async(
        self,
        predicate: Callable[[], _T | None],
        # A default bound keeps a forgotten wait from hanging a test forever.
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> _T:
        """Wait until ``predicate()`` is truthy (checked on every change); return it.

        Raises ``TimeoutError`` after ``timeout`` seconds. Works on any event
        loop, the server's included.
        """
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    future: asyncio.Future[None] = loop.create_future()
                    with self._cond:
                        result = predicate()
                        if result:
                            return result
                        self._waiters.add((loop, future))
                    try:
                        await future
                    finally:
                        with self._cond:
                            self._waiters.discard((loop, future))
        except TimeoutError:
            raise TimeoutError(f"condition not met within {timeout:g}s") from None

    # -- written by the server (on its event loop) ------------------------------

    def connection_made(
        self, peer: tuple[str, int] | None, transport: asyncio.Transport | None = None
    ) -> ConnectionRecord:
        """Record a new connection and return its record."""
        with self._cond:
            self._connection_ids += 1
            record = ConnectionRecord(
                self._connection_ids, peer, time.monotonic(), _recorder=self, _transport=transport
            )
            self._connections.append(record)
            self._open.add(record)
            self._changed()
        return record

    def connection_lost(self, record: ConnectionRecord, exc: BaseException | None) -> None:
        """Record that the connection's socket closed (``exc``: the error, if any)."""
        with self._cond:
            if record.closed_at is None:
                record.closed_at = time.monotonic()
                record.error = repr(exc) if exc is not None else None
            record._transport = None
            self._open.discard(record)
            self._changed()

    def request_arrived(
        self,
        method: str,
        path: str,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
        arrived_at: float,
        connection: ConnectionRecord | None,
    ) -> RequestRecord:
        """Record a request (credentials left out) and return its record."""
        kept = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in headers
            if not any(word in name.decode("latin-1").lower() for word in _SENSITIVE)
        }
        with self._cond:
            self._request_ids += 1
            record = RequestRecord(
                self._request_ids, method, path, kept, _parse(body), arrived_at, connection
            )
            self._requests.append(record)
            if connection is not None:
                connection.requests.append(record)
            self._changed()
        return record

    def update(self, record: RequestRecord, **changes: Any) -> None:
        """Change fields of a request record (``status``, ``outcome``, ``ended_at``)."""
        with self._cond:
            for name, value in changes.items():
                setattr(record, name, value)
            self._changed()

    def _changed(self) -> None:
        # Called with the lock held.
        self._cond.notify_all()
        for loop, future in self._waiters:
            try:
                loop.call_soon_threadsafe(_wake, future)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                continue
        self._waiters.clear()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _parse(body: bytes) -> Any:
    if not body:
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.decode("utf-8", errors="replace")
    if isinstance(parsed, dict):
        return {k: v for k, v in parsed.items() if k.lower() not in ("api_key", "apikey")}
    return parsed


class RecordingMiddleware:
    """ASGI middleware that records each HTTP request and how its response ended.

    It reads the whole body first (and replays it to the app), stores the
    :class:`RequestRecord` in ``scope["state"][REQUEST_KEY]``, and finds the
    connection in ``scope["state"][CONNECTION_KEY]`` when the server put it there.
    """

    def __init__(self, app: ASGIApp, recorder: Recorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Record the request, run the app, record the outcome."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived_at = time.monotonic()
        state: MutableMapping[str, Any] = scope.setdefault("state", {})
        connection: ConnectionRecord | None = state.get(CONNECTION_KEY)
        chunks: list[bytes] = []
        gone = False
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        method, path, headers = scope["method"], scope["path"], scope["headers"]
        record = self.recorder.request_arrived(
            method, path, headers, b"".join(chunks), arrived_at, connection
        )
        state[REQUEST_KEY] = record
        if gone:
            self._end(record, "client_gone")
            return
        body: bytes | None = b"".join(chunks)

        async def replay() -> Message:
            nonlocal body
            if body is not None:
                first: Message = {"type": "http.request", "body": body, "more_body": False}
                body = None
                return first
            message = await receive()
            if message["type"] == "http.disconnect":
                self._end(record, "client_gone")
            return message

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.recorder.update(record, status=message["status"])
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                gone = connection is not None and connection.closed_at is not None
                self._end(record, "client_gone" if gone else "completed")

        try:
            await self.app(scope, replay, watch)
        finally:
            closed = connection is not None and connection.closed_at is not None
            self._end(record, "client_gone" if closed else "error")

    def _end(self, record: RequestRecord, outcome: Outcome) -> None:
        if record.outcome is None:
            self.recorder.update(record, outcome=outcome, ended_at=time.monotonic())
