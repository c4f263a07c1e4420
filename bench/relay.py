"""A minimal Python relay: the reference the real-rate rows are measured against.

uvicorn (uvloop, h11: what ``rxllm serve`` runs on) and a bare ASGI app that
forwards the request body to one upstream over a new connection and the
upstream's chunked answer back, each HTTP chunk's bytes in one
``http.response.body`` message, as they arrive. No parsing of the events, no
pool, no timeouts, no store: what any Python proxy at least pays per chunk
(one wake-up on the upstream read, one ``send``). It is a benchmark
instrument, not a proxy to deploy: a client that leaves early only ends the
relay's copy when the next write fails.

    python -m bench.relay PORT UPSTREAM_PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

__all__ = ["main", "make_app"]

Scope = dict[str, Any]


def make_app(upstream_port: int) -> Any:
    """The relay's ASGI app, forwarding to ``127.0.0.1:upstream_port``."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        reader, writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        try:
            writer.write(
                f"{scope['method']} {scope['path']} HTTP/1.1\r\n"
                f"host: 127.0.0.1:{upstream_port}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            status = int(head[0].split(" ")[1])
            headers = [line.split(":", 1) for line in head[1:] if ":" in line]
            fields = {name.strip().lower(): value.strip() for name, value in headers}
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", fields.get("content-type", "text/plain").encode()),
                        (b"cache-control", b"no-cache"),
                    ],
                }
            )
            if fields.get("transfer-encoding") == "chunked":
                while True:
                    size = int((await reader.readline()).split(b";")[0], 16)
                    if size == 0:
                        break
                    data = await reader.readexactly(size + 2)
                    await send({"type": "http.response.body", "body": data[:-2], "more_body": True})
            else:
                length = int(fields.get("content-length", "0"))
                data = await reader.readexactly(length) if length else b""
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return app


def main(argv: list[str]) -> None:
    """Serve the relay on ``argv[0]`` in front of ``argv[1]`` (both loopback ports)."""
    import uvicorn

    port, upstream = int(argv[0]), int(argv[1])
    uvicorn.run(
        make_app(upstream),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="h11",
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
