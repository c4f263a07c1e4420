"""An upstream of our own that floods: it streams text as fast as its socket takes it.

An OpenAI-compatible ``POST /chat/completions`` on a loopback port, in a
thread with its own event loop (any other request gets a one-model list).
Each chat request is answered with
``chat.completion.chunk`` frames of ``chunk_size`` characters, without end,
until the connection closes; it counts what it sent (``sent``: bytes the
socket accepted, so it stops growing while the reader does not read) and
records when the connection closed (``closed_at``, ``time.monotonic()``).
``burst`` frames go out in one write; with ``frames``, the answer ends after
that many (a ``stop`` frame, then ``[DONE]``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self

__all__ = ["Flood", "FloodUpstream"]


@dataclass
class Flood:
    """One request: what it asked, what was sent, when its connection closed."""

    body: bytes
    sent: int = 0
    closed_at: float | None = None


class FloodUpstream:
    """See the module docstring; ``with FloodUpstream() as up: up.base_url``."""

    def __init__(
        self, chunk_size: int = 1024, *, burst: int = 1, frames: int | None = None
    ) -> None:
        text = "a" * chunk_size
        frame = {
            "id": "chatcmpl-flood",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "flood",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
        }
        self._chunk = f"data: {json.dumps(frame)}\n\n".encode() * burst
        self._burst = burst
        self._frames = frames
        frame["choices"] = [{"index": 0, "delta": {}, "finish_reason": "stop"}]
        self._end = f"data: {json.dumps(frame)}\n\ndata: [DONE]\n\n".encode()
        self.requests: list[Flood] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def sent(self) -> int:
        """Bytes sent to the latest request so far."""
        with self._lock:
            return self.requests[-1].sent if self.requests else 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        flood = Flood(b"")
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            flood.body = await reader.readexactly(length)
            if not head.startswith(b"POST ") or b"/chat/completions" not in head.split(b"\r\n")[0]:
                listing = b'{"object": "list", "data": [{"id": "flood", "object": "model"}]}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close"
                    b"\r\ncontent-length: " + str(len(listing)).encode() + b"\r\n\r\n" + listing
                )
                await writer.drain()
                return
            with self._lock:
                self.requests.append(flood)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
            )
            chunk = self._chunk
            left = self._frames
            while left is None or left > 0:
                writer.write(chunk)
                await writer.drain()
                with self._lock:
                    flood.sent += len(chunk)
                if left is not None:
                    left -= self._burst
            writer.write(self._end)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            flood.closed_at = time.monotonic()
            writer.close()

    def start(self) -> Self:
        self._thread.start()

        async def listen() -> int:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            port: int = self._server.sockets[0].getsockname()[1]
            return port

        self.port = asyncio.run_coroutine_threadsafe(listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
