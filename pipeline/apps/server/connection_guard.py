"""What a client connection may cost before it has sent a request: a header timeout and a limit.

uvicorn has no header read timeout: a connection that sends its request
headers a byte at a time (or nothing at all) is kept for as long as it
likes, and a thousand of them use every file descriptor, after which
normal requests are refused by the kernel. :func:`guarded_protocol` makes
uvicorn's h11 protocol class with two limits:

* ``header_timeout`` -- a connection must send complete request headers
  within this many seconds of opening (or of its previous response's end,
  on a kept-alive connection); else it is closed;
* ``max_connections`` -- a connection opened beyond this many is answered
  ``503`` and closed at once (default: what the process's open-file limit
  leaves room for, counting one upstream connection per client).

Each time one acts, it is counted (``rxllm_connections_closed_total``, by
``reason``) and logged, at most once per :data:`LOG_EVERY` seconds with the
number since the last line (an attack must not flood the log). The body's
own read timeout is the handler's (:func:`pipeline.apps.server.request_bodies.read_json`).

A request head that is not HTTP, or larger than ``max_head`` bytes, is
answered with a JSON error (``400``, or ``431`` for the size) rather than
uvicorn's plain-text one, and the connection is closed lingering: the
answer is written, the sending side shut, and what the client still sends
is read and dropped (for at most :data:`LINGER` seconds) before the socket
closes. A socket closed with unread bytes in it is reset by the kernel,
and a reset can destroy the answer before the client has read it.

It also tells the app at once when a client leaves: ``connection_lost``
calls the hooks the running request put in its scope
(:data:`sinks.sse_response.CLIENT_GONE_HOOKS`: the response's, the
handler's), so the upstream request is cancelled in that callback rather
than after the tasks waiting on ``receive()`` have woken up, a loop turn
each, which on a saturated loop is what made cancellation late.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from sinks.sse_response import CLIENT_GONE_HOOKS

__all__ = ["LINGER", "LOG_EVERY", "MAX_REQUEST_HEAD", "default_max_connections", "guarded_protocol"]

log = logging.getLogger("rxllm.serve")

LOG_EVERY = 10.0
"""Seconds between two log lines about closed connections of one reason."""

MAX_REQUEST_HEAD = 64 * 1024
"""Bytes a request line and headers may take (h11's own default is 16 KiB)."""

LINGER = 2.0
"""Seconds a connection answered with a protocol error keeps reading (and dropping) input."""


class _RecordingConnection(h11.Connection):
    """h11's connection keeping the error it raised (uvicorn drops it, and its size hint)."""

    error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.error = exc
            raise


def _error_response(
    status: int,
    reason: str,
    message: str,
    code: str,
    kind: str = "invalid_request_error",
    extra_head: str = "",
) -> bytes:
    """A whole HTTP/1.1 answer with a JSON error body, closing the connection."""
    body = json.dumps(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"connection: close\r\n{extra_head}content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


_BUSY = _error_response(
    503,
    "Service Unavailable",
    "too many connections; retry later",
    "overloaded",
    kind="server_error",
    extra_head="retry-after: 1\r\n",
)


def default_max_connections() -> int:
    """Client connections the open-file limit leaves room for (each has an upstream one too)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, (soft - 128) // 2)


class _Reporter:
    """Counts and logs (at most once per LOG_EVERY seconds) the connections closed for a reason."""

    def __init__(self, count: Callable[[str], None]) -> None:
        self._count = count
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def closed(self, reason: str, what: str) -> None:
        self._count(reason)
        self._since[reason] = self._since.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._last.get(reason, -LOG_EVERY) >= LOG_EVERY:
            self._last[reason] = now
            n = self._since.pop(reason)
            log.warning("closed %d connection(s) (%s): %s", n, reason, what)


def guarded_protocol(
    *,
    header_timeout: float | None,
    max_connections: int | None,
    on_closed: Callable[[str], None],
    max_head: int = MAX_REQUEST_HEAD,
    on_data: Callable[[], None] | None = None,
    on_parsed: Callable[[], None] | None = None,
) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the limits of the module docstring.

    ``on_closed(reason)`` counts a connection closed by a limit
    (``header_timeout`` or ``connection_limit``); ``on_data()`` is called as
    request bytes arrive (the collector's pacer), ``on_parsed()`` once they
    are parsed and handed to the request (the request's first step,
    :mod:`pipeline.apps.server.eager_requests`); pass the class as
    ``uvicorn.Config(http=...)``.
    """
    limit = default_max_connections() if max_connections is None else max_connections
    reporter = _Reporter(on_closed)

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _linger_timer: asyncio.TimerHandle | None = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.conn = _RecordingConnection(h11.SERVER, max_incomplete_event_size=max_head)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limit:
                transport.write(_BUSY)
                transport.close()
                reporter.closed(
                    "connection_limit", f"more than {limit} open connections; answered 503"
                )
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._linger_timer is not None:
                return  # answered with a protocol error: dropped (see send_400_response)
            if on_data is not None:
                on_data()
            super().data_received(data)
            if self._header_timer is not None and self.conn.their_state is not h11.IDLE:
                self._disarm()  # the request's headers are in
            if on_parsed is not None:
                on_parsed()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm()  # the next request's headers get as long

        def send_400_response(self, msg: str) -> None:
            """Answer a request head h11 refused with a JSON error, then close lingering."""
            self._disarm()
            if self.conn.our_state is not h11.IDLE:  # a body went wrong: its handler sees a leave
                self.transport.close()
                return
            error = self.conn.error if isinstance(self.conn, _RecordingConnection) else None
            if error is not None and error.error_status_hint == 431:
                answer = _error_response(
                    431,
                    "Request Header Fields Too Large",
                    f"the request line and headers are larger than {max_head} bytes",
                    "request_head_too_large",
                )
            else:
                answer = _error_response(
                    400, "Bad Request", "the request is not valid HTTP/1.1", "invalid_http_request"
                )
            self.transport.write(answer)
            if self.transport.can_write_eof():
                self.transport.write_eof()
            # Dropped by data_received from now on; closed at the client's end or after LINGER.
            self._linger_timer = self.loop.call_later(LINGER, self.transport.close)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._linger_timer is not None:
                self._linger_timer.cancel()
            self._disarm()
            cycle = self.cycle
            hooks = None
            if cycle is not None and not cycle.response_complete:
                hooks = cycle.scope.get(CLIENT_GONE_HOOKS)
            super().connection_lost(exc)
            if isinstance(hooks, list):
                for hook in list(hooks):
                    try:
                        hook()
                    except Exception:
                        log.exception("a client-gone hook failed")

        def _arm(self) -> None:
            self._disarm()
            if header_timeout is not None:
                self._header_timer = self.loop.call_later(header_timeout, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            self.transport.close()
            peer = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
            reporter.closed(
                "header_timeout", f"no complete request headers within {header_timeout:g}s ({peer})"
            )

    return GuardedH11Protocol
