"""A light model and a light client, so that the load costs little next to the proxy.

The ``serve.ttft.p99`` row runs hundreds of streams at 20 tokens/s through
``rxllm serve``. The built-in model (uvicorn + Starlette + a task per
stream) and httpx2 clients cost 67 and 135 µs per chunk: at 200 streams they
already took 0.8 of the core they share, so on two cores the load, not the
proxy, decided how many streams the row could run. Here:

* :func:`serve_model` -- a minimal OpenAI-compatible model: ``POST
  /v1/chat/completions`` with ``stream: true`` answers with
  ``chat.completion.chunk`` frames over chunked HTTP/1.1 (keep-alive), the
  script taken from the body's ``mock`` object (``text``, split into words;
  ``interval`` seconds between tokens, each token on its own schedule from
  the start of its stream; ``first``, seconds before the headers and the
  first token, default none), one timer per stream and pre-encoded frames;
  then ``finish_reason``, usage when asked for, and ``[DONE]``. Anything
  else gets a 404. It is a load generator, not a model: no validation, no
  errors, no tools.
* :func:`read_stream` -- one streamed request over a raw connection, the
  answer read and dropped until its last chunk.

Run the model alone with ``python -m bench.light_load PORT``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
_END = b"0\r\n\r\n"


def _chunk(payload: bytes) -> bytes:
    """One HTTP chunk holding one SSE frame."""
    frame = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(frame), frame)


class _Answer:
    """One streamed answer on a connection: its frames, sent one per timer tick."""

    def __init__(self, conn: _ModelConnection, request: dict[str, Any]) -> None:
        script = request.get("mock") or {}
        words = str(script.get("text", "hello world")).split(" ")
        self.interval = float(script.get("interval", 0.05))
        self.first = float(script.get("first", 0.0))
        self.prefix = (
            b'{"id":"chatcmpl-load","object":"chat.completion.chunk","created":0,"model":'
            + json.dumps(str(request.get("model", "load"))).encode()
        )
        tokens = [words[0], *(" " + word for word in words[1:])]
        self.frames = [
            self._delta({"role": "assistant", "content": tokens[0]}),
            *(self._delta({"content": token}) for token in tokens[1:]),
        ]
        self.tail = [
            _chunk(self.prefix + b',"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}')
        ]
        options = request.get("stream_options") or {}
        if options.get("include_usage"):
            usage = {"prompt_tokens": 5, "completion_tokens": len(tokens)}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            body = self.prefix + b',"choices":[],"usage":' + json.dumps(usage).encode() + b"}"
            self.tail.append(_chunk(body))
        self.tail.append(_chunk(b"[DONE]") + _END)
        self.conn = conn
        self.next = 0
        self.start_time = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def _delta(self, delta: dict[str, str]) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": None}
        return _chunk(self.prefix + b',"choices":[' + json.dumps(choice).encode() + b"]}")

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.first > 0:  # a model that thinks before it answers
            self.timer = loop.call_later(self.first, self._begin, loop)
        else:
            self._begin(loop)

    def _begin(self, loop: asyncio.AbstractEventLoop) -> None:
        self.conn.write(_HEAD + self.frames[0])
        self.next = 1
        self.start_time = loop.time()
        self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.next < len(self.frames):
            # Token n is due at start + n * interval, not interval after the last one
            # went out: a late loop turn would otherwise shift every stream it served to
            # the same phase, and the streams would end up arriving in one burst.
            due = self.start_time + self.next * self.interval
            self.timer = loop.call_at(due, self._tick, loop)
        else:
            self.conn.write(b"".join(self.tail))
            self.conn.answer_done()

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.conn.write(self.frames[self.next])
        self.next += 1
        self._schedule(loop)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


class _ModelConnection(asyncio.Protocol):
    """One client connection: requests one after another (keep-alive)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.answer: _Answer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._next_request()

    def _next_request(self) -> None:
        if self.answer is not None or self.transport is None:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].decode("latin-1").split("\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return
        body = self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        method, path = [*head[0].split(" "), "", ""][:2]
        if method != "POST" or not path.endswith("/chat/completions"):
            self.transport.write(_NOT_FOUND)
            self._next_request()
            return
        self.answer = _Answer(self, json.loads(body))
        self.answer.start(asyncio.get_running_loop())

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def answer_done(self) -> None:
        self.answer = None
        self._next_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.answer is not None:
            self.answer.cancel()
            self.answer = None


async def serve_model(host: str, port: int) -> None:
    """Serve the light model until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_ModelConnection, host, port, backlog=4096)
    async with server:
        await server.serve_forever()


class _Drain(asyncio.Protocol):
    """Reads a chunked answer and drops it; ``done`` when its last chunk arrived."""

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.tail = b""

    def data_received(self, data: bytes) -> None:
        self.tail = (self.tail + data)[-5:]
        if self.tail == _END and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed before the end"))


def request_bytes(host: str, port: int, path: str, body: dict[str, Any]) -> bytes:
    """A POST with a JSON body, as :func:`read_stream` sends it."""
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"accept: text/event-stream\r\ncontent-length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


async def read_stream(host: str, port: int, request: bytes) -> None:
    """Send ``request`` on a new connection; read the answer to its end, then close.

    Raises ``ConnectionError`` if the connection closes before the end.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    transport, _ = await loop.create_connection(lambda: _Drain(done), host, port)
    try:
        transport.write(request)
        await done
    finally:
        transport.close()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(serve_model("127.0.0.1", int(sys.argv[1])))
