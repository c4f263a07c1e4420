"""An HTTP upstream of the tests' own on a real socket: records each request whole, answers as told.

What the built-in model's recorder leaves out (credentials, the headers'
order and repeats, the body's bytes) is kept here, for tests that compare
what two ways of sending a request put on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Seen", "Upstream", "serving"]

SSE_OK = b'data: {"id":"c1","object":"chat.completion.chunk","choices":[]}\n\ndata: [DONE]\n\n'


@dataclass
class Seen:
    """One request as it arrived."""

    method: str
    target: str
    headers: dict[str, str]  # by lower-cased name (the last of a repeated one)
    body: Any  # the body's JSON, or None for no body
    raw_headers: list[tuple[str, str]]  # in order, repeats kept
    raw_body: bytes


@dataclass
class Upstream:
    """Records each request; answers ``status`` with ``body`` (or never, when ``stall``).

    ``answers`` gives a path its own status and extra headers.
    """

    status: int = 200
    body: bytes = SSE_OK
    content_type: str = "text/event-stream"
    extra: dict[str, str] = field(default_factory=dict)
    answers: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    stall: bool = False
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            raw_headers = [
                (name.strip().lower(), value.strip())
                for name, _, value in (line.partition(":") for line in lines[1:] if line)
            ]
            headers = dict(raw_headers)
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.seen.append(
                Seen(
                    method,
                    target,
                    headers,
                    json.loads(body) if body else None,
                    raw_headers,
                    body,
                )
            )
            if self.stall:
                await asyncio.sleep(30)
                return
            status, extra = self.answers.get(target, (self.status, self.extra))
            more = "".join(f"{k}: {v}\r\n" for k, v in extra.items())
            writer.write(
                f"HTTP/1.1 {status} X\r\ncontent-type: {self.content_type}\r\n"
                f"content-length: {len(self.body)}\r\n{more}connection: close\r\n\r\n".encode()
                + self.body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serving(up: Upstream) -> AsyncIterator[Upstream]:
    """``up`` listening on a free port of 127.0.0.1 (``up.port``) while in the block."""
    server = await asyncio.start_server(up.handle, "127.0.0.1", 0)
    up.port = server.sockets[0].getsockname()[1]
    try:
        yield up
    finally:
        server.close()
