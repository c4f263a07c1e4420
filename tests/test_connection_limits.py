"""Header and body read timeouts and a connection limit, each logged and counted.

Regression tests: connections that sent their headers slowly (or nothing)
were kept forever, so enough of them used every file descriptor and normal
requests were refused, with nothing in the log; a body that never finished
arriving held its request for ever too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from tests.serving import ServeProcess

pytestmark = pytest.mark.slow  # starts rxllm serve

LIMIT = 12


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("limits")
    args = ["--no-store", "--header-timeout", "1", "--body-timeout", "1"]
    args += ["--max-connections", str(LIMIT)]
    with ServeProcess(*args, log_path=tmp / "serve.log") as proc:
        yield proc


async def closed_count(http: httpx.AsyncClient, reason: str) -> float:
    text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(f'rxllm_connections_closed_total{{reason="{reason}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_connection_that_sends_its_headers_too_slowly_is_closed(
    served: ServeProcess,
) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        before = await closed_count(http, "header_timeout")
        silent = await asyncio.open_connection("127.0.0.1", served.port)
        slow = await asyncio.open_connection("127.0.0.1", served.port)
        slow[1].write(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n")  # never the blank line
        for reader, _ in (silent, slow):
            async with asyncio.timeout(10):
                assert await reader.read() == b""  # the server closed it
        assert await closed_count(http, "header_timeout") >= before + 2
        assert (await http.get("/v1/models")).status_code == 200
    assert "no complete request headers within 1s" in served.log()


async def test_a_body_that_does_not_arrive_in_time_is_a_408(served: ServeProcess) -> None:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        before = await closed_count(http, "body_timeout")
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
            b'content-type: application/json\r\ncontent-length: 100\r\n\r\n{"model"'
        )
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408")
        writer.close()
        assert await closed_count(http, "body_timeout") == before + 1
    assert "not received within 1s" in served.log()


async def test_connections_beyond_the_limit_get_a_503_and_the_server_recovers(
    served: ServeProcess,
) -> None:
    held = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(LIMIT + 4)]
    answers = []
    for reader, _ in held[LIMIT:]:
        async with asyncio.timeout(5):
            answers.append(await reader.read())
    assert all(a.startswith(b"HTTP/1.1 503") for a in answers), answers
    body = json.loads(answers[0].split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "overloaded"
    for _, writer in held:
        writer.close()
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        for _ in range(100):  # the server notices the closes
            response = await http.get("/v1/models")
            if response.status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert response.status_code == 200
        assert await closed_count(http, "connection_limit") >= 4
    assert "more than 12 open connections" in served.log()
