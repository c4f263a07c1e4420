"""CPU per body message written by uvicorn's h11 protocol: its own ``send`` against rxllm's.

Three ways to write one streamed chunk: ``uvicorn`` (its ``send``) and
``rxllm`` (:func:`pipeline.apps.server.chunked_body.body_send`), each given
a message and stepped by hand, as an SSE response writes in its producer's
step (what ``rxllm serve`` did before ``write_now``), and ``write_now`` (no
message and no coroutine: what its SSE responses do now).

``rxllm serve`` writes a streamed response's middle chunks with
:func:`pipeline.apps.server.chunked_body.body_send` (the chunk's frame
written straight to the transport) instead of uvicorn's ``send`` (an h11
``Data`` event, h11's state machine and chunked writer). This measures
both in one process, over a real loopback socket: uvicorn (uvloop, its h11
protocol) serves an app that sends ``--messages`` body messages of a Chat
Completions text delta's size, through one ``send`` or the other, while a
thread reads the socket and drops what it reads; a loop turn after each
message, as at a real rate, where each chunk is written alone. The figure
is the CPU of the server's thread over the sends, per message (the socket's
``write`` and the loop turn included: both pay them, so the difference is
what h11's path costs). Rounds alternate the two.

    python -m bench.body_write
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvicorn
from starlette.types import Receive, Scope, Send

from pipeline.apps.server.chunked_body import body_send

__all__ = ["main"]

FRAME = (
    b'id: 12\ndata: {"id":"chatcmpl-x","object":"chat.completion.chunk","created":0,'
    b'"model":"m","choices":[{"index":0,"delta":{"content":" word"},"finish_reason":null}]}\n\n'
)


def make_app(results: dict[str, list[float]], messages: int) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        mode = scope["path"].strip("/")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        body = send if mode == "uvicorn" else body_send(send)
        message = {"type": "http.response.body", "body": FRAME, "more_body": True}
        write_now = getattr(body, "write_now", None)
        start = time.thread_time()
        if mode == "write_now" and write_now is not None:
            for _ in range(messages):
                if not write_now(FRAME):
                    await body(message)
                await asyncio.sleep(0)  # a loop turn per message, as at a real rate
        else:  # a message stepped by hand, as an SSE response wrote in its producer's step
            for _ in range(messages):
                steps = body({"type": "http.response.body", "body": FRAME, "more_body": True})
                try:
                    steps.__await__().send(None)
                except StopIteration:
                    pass
                else:  # the send waits for the socket: not what this measures
                    raise RuntimeError("the reader fell behind; run the bench on a quieter machine")
                await asyncio.sleep(0)  # a loop turn per message, as at a real rate
        results[mode].append((time.thread_time() - start) / messages * 1e6)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def _drain(port: int, mode: str) -> None:
    """A client that asks for ``mode`` and reads the answer to its end."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"GET /{mode} HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n".encode())
        while sock.recv(1 << 16):
            pass


async def _run(messages: int, rounds: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"uvicorn": [], "rxllm": [], "write_now": []}
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]
    config = uvicorn.Config(make_app(results, messages), log_level="warning", http="h11")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(1000):
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        for _ in range(rounds + 1):  # the first round of each warms up
            for mode in results:
                await asyncio.to_thread(_drain, port, mode)
    finally:
        server.should_exit = True
        await task
        sock.close()
    return {mode: values[1:] for mode, values in results.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.body_write", description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    import uvloop

    results = uvloop.run(_run(args.messages, args.rounds))
    for mode, values in results.items():
        rounds = " / ".join(f"{v:.2f}" for v in values)
        print(f"{mode:9s} best {min(values):.2f} µs CPU per body message ({rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
