"""Header and body read timeouts, a connection limit and a request head limit.

Regression tests: connections that sent their headers slowly (or nothing)
were kept forever, so enough of them used every file descriptor and normal
requests were refused, with nothing in the log; a body that never finished
arriving held its request for ever too. A request line over h11's default
16 KiB was refused with uvicorn's plain-text 400 when it arrived in more than
one read (so a long query got a different answer by timing), and that answer
was often lost to a connection reset.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from pipeline.apps.server.connection_guard import MAX_REQUEST_HEAD
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


async def send_in_two_reads(port: int, request: bytes, then: bytes = b"") -> bytes:
    """Send ``request`` in two pieces a pause apart, then ``then``; read the answer to its end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    half = len(request) // 2
    writer.write(request[:half])
    await writer.drain()
    await asyncio.sleep(0.2)  # the server reads the first piece on its own
    writer.write(request[half:] + then)
    async with asyncio.timeout(10):
        answer = await reader.read()  # a reset raises ConnectionResetError here
    writer.close()
    return answer


def json_error(answer: bytes) -> tuple[bytes, dict[str, object]]:
    head, body = answer.split(b"\r\n\r\n", 1)
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)["error"]
    assert isinstance(error, dict)
    return head.split(b"\r\n", 1)[0], error


async def test_a_long_request_line_in_several_reads_reaches_the_handler(
    served: ServeProcess,
) -> None:
    pad = "a" * (MAX_REQUEST_HEAD - 1000)
    request = f"GET /v1/models?pad={pad} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    answer = await send_in_two_reads(served.port, request.encode())
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


async def test_a_request_head_over_the_limit_is_a_431_json_error_read_in_full(
    served: ServeProcess,
) -> None:
    # More than one read of the server's holds: it answers with bytes still unread, and
    # a socket closed on unread bytes resets the connection.
    pad = "a" * (64 * MAX_REQUEST_HEAD)
    request = f"GET /v1/models?pad={pad} HTTP/1.1\r\nhost: x\r\n\r\n".encode()
    answer = await send_in_two_reads(served.port, request)
    status, error = json_error(answer)
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert error["code"] == "request_head_too_large"
    assert str(MAX_REQUEST_HEAD) in str(error["message"])


async def test_a_request_that_is_not_http_is_a_400_json_error(served: ServeProcess) -> None:
    answer = await send_in_two_reads(served.port, b"NOT HTTP AT ALL\r\n\r\n", then=b"x" * 100_000)
    status, error = json_error(answer)
    assert status == b"HTTP/1.1 400 Bad Request"
    assert error["code"] == "invalid_http_request"
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        assert (await http.get("/v1/models")).status_code == 200


@pytest.mark.parametrize(
    "rest",
    [b"", b"zz\r\nnot a chunk size\r\n"],
    ids=["client-leaves", "bad-chunk"],
)
async def test_a_body_cut_short_or_not_http_ends_its_request_quietly(
    served: ServeProcess, rest: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b'transfer-encoding: chunked\r\n\r\n6\r\n{"mode\r\n'
    )
    await writer.drain()
    await asyncio.sleep(0.2)  # the handler is reading the body
    if rest:
        writer.write(rest)
        async with asyncio.timeout(10):
            assert await reader.read() == b""  # closed, with no answer to a broken body
    writer.close()
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        assert (await http.get("/v1/models")).status_code == 200
    assert "Traceback" not in served.log()
