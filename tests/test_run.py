"""``rxllm serve``'s listening socket: accepted connections get ``TCP_NODELAY``."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest
import uvloop

from pipeline.apps.server.uvicorn_runner import listening_socket


def _plain_socket(host: str, port: int) -> socket.socket:
    """The control: a TCP socket made without ``proto=IPPROTO_TCP``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


async def _accepted_nodelay(make: Callable[[str, int], socket.socket]) -> int:
    got: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            got.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    sock = make("127.0.0.1", 0)
    server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
    try:
        port = sock.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        value = await asyncio.wait_for(got, 5)
        writer.close()
        return value
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_accepted_connections_get_tcp_nodelay(loop: str) -> None:
    runner = asyncio.run if loop == "asyncio" else uvloop.run
    assert runner(_accepted_nodelay(listening_socket)) != 0


def test_control_asyncio_skips_tcp_nodelay_without_the_protocol() -> None:
    """Proves the test above can fail: asyncio leaves Nagle on for such a socket."""
    assert asyncio.run(_accepted_nodelay(_plain_socket)) == 0
