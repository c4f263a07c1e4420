"""A response body's chunks framed and written without h11's event machinery.

uvicorn's h11 protocol sends each ``http.response.body`` message through
h11: a ``Data`` event is built and validated, the connection's state
machine checks it, and the chunked writer frames it into a list that is
joined. For an SSE stream that is every token, and at a real token rate
it is a large share of what writing a chunk costs (bench/README.md,
"Real rate"). :func:`body_send` returns a ``send`` for the body messages
of one response that writes a chunk's frame (``<size hex>\\r\\n<data>\\r\\n``,
byte for byte what h11's ``ChunkedWriter`` writes) straight to the
transport while h11 would only have done that: the response is started
and chunked, h11 is in its ``SEND_BODY`` state, the message has a body
and more to come, the client is connected and its socket's buffer is not
full. Anything else (the last message, a ``HEAD`` or HTTP/1.0 response,
flow control, a closed connection) goes to uvicorn's own ``send``, so h11
still writes the end of the message and keeps its state. Its ``write_now``
(see :data:`sinks.sse_response.BODY_SEND`) is the same write for a body
already encoded, with no message and no coroutine.
"""

from __future__ import annotations

from typing import Any

import h11
from starlette.types import Message, Send
from uvicorn.protocols.http.h11_impl import RequestResponseCycle

__all__ = ["ChunkedBodySend", "body_send"]

_CHUNKED: type | None
try:  # h11's writer classes are not public: without this one every message takes uvicorn's path
    from h11._writers import ChunkedWriter as _CHUNKED
except ImportError:  # pragma: no cover - an h11 that moved it
    _CHUNKED = None


class ChunkedBodySend:
    """The ``send`` of one response's body messages (see the module)."""

    __slots__ = ("_chunked", "_conn", "_cycle", "_flow", "_send", "_transport")

    def __init__(self, send: Send, cycle: Any) -> None:
        self._send = send
        self._cycle = cycle
        self._conn: h11.Connection = cycle.conn
        self._transport = cycle.transport
        self._flow = cycle.flow
        self._chunked = False  # h11 seen in SEND_BODY with its chunked writer

    def write_now(self, body: bytes) -> bool:
        """Write ``body`` as a middle chunk now; ``False`` if only uvicorn's ``send`` may."""
        cycle = self._cycle
        if (
            not body
            or self._flow.write_paused
            or cycle.disconnected
            or cycle.response_complete
            or not (self._chunked or self._body_started())
        ):
            return False
        self._transport.write(b"%x\r\n%s\r\n" % (len(body), body))
        return True

    def _body_started(self) -> bool:
        """Whether h11 is writing this response's body, chunked; once true, it stays so.

        h11 leaves ``SEND_BODY`` only through uvicorn's ``send``: for the end of
        the body (``response_complete``, checked on every write) or a failure
        (the connection is then closed and ``disconnected`` set).
        """
        conn = self._conn
        self._chunked = (
            self._cycle.response_started
            and conn.our_state is h11.SEND_BODY
            and type(getattr(conn, "_writer", None)) is _CHUNKED
        )
        return self._chunked

    async def __call__(self, message: Message) -> None:
        if message.get("more_body", False) and self.write_now(message.get("body", b"")):
            return
        await self._send(message)


def body_send(send: Send) -> Send:
    """A faster ``send`` for the body messages of ``send``'s response (see the module)."""
    cycle: Any = getattr(send, "__self__", None)
    if _CHUNKED is None or type(cycle) is not RequestResponseCycle:
        return send
    return ChunkedBodySend(send, cycle)
