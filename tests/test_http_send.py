"""The lean send (:mod:`pipeline.runtime.http_send`) against httpx2's ``build_request`` + ``send``.

A server of our own on a real socket records every request whole and
answers per path what the test says. The same request goes through
httpx2's own path and through the lean one: what reaches the server, what
the caller gets back and what the client keeps (cookies) must be the same.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from pipeline.runtime.http_backend import http_client
from pipeline.runtime.http_send import build_post, plain_client, send
from tests.recording_upstream import Upstream, serving


@pytest.fixture
async def server() -> AsyncIterator[Upstream]:
    async with serving(Upstream(body=b"data: hello\n\n")) as up:
        yield up


HEADERS = httpx2.Headers({"Authorization": "Bearer k", "X-Custom": "yes", "Content-Type": "a/b"})


async def opened(http: httpx2.AsyncClient, server: Upstream) -> httpx2.AsyncClient:
    """``http`` after one request through its own ``send`` (which opens it)."""
    response = await http.send(http.build_request("GET", f"http://127.0.0.1:{server.port}/open"))
    await response.aclose()
    return http


async def own_path(http: httpx2.AsyncClient, url: str, content: bytes) -> httpx2.Response:
    request = http.build_request("POST", url, headers=HEADERS, content=content, timeout=7.0)
    return await http.send(request, stream=True)


async def lean_path(http: httpx2.AsyncClient, url: str, content: bytes) -> httpx2.Response:
    return await send(http, build_post(http, httpx2.URL(url), HEADERS, content, 7.0))


async def read(response: httpx2.Response) -> bytes:
    try:
        return b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()


async def test_a_plain_client_sends_and_answers_as_its_own_path(
    server: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    http = http_client()
    assert not plain_client(http)  # not opened yet: its own send opens it
    await opened(http, server)
    assert plain_client(http)
    url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
    own = await own_path(http, url, b'{"a":1}')
    own_body = await read(own)

    async def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("the plain client's request took httpx2's own send")

    monkeypatch.setattr(http, "send", refuse)
    request = build_post(http, httpx2.URL(url), HEADERS, b'{"a":1}', 7.0)
    assert request.extensions == {"timeout": httpx2.Timeout(7.0).as_dict()}
    lean = await send(http, request)
    assert lean.request is request
    assert await read(lean) == own_body == b"data: hello\n\n"
    assert (lean.status_code, lean.headers.raw) == (own.status_code, own.headers.raw)
    assert lean.elapsed.total_seconds() > 0  # readable once closed, as on httpx2's path
    own_seen, lean_seen = server.seen[1:]
    assert own_seen == lean_seen
    assert ("authorization", "Bearer k") in lean_seen.raw_headers
    assert ("user-agent", http.headers["user-agent"]) in lean_seen.raw_headers


async def test_cookies_a_server_sets_are_kept_and_sent_as_httpx2_does(server: Upstream) -> None:
    url = f"http://127.0.0.1:{server.port}/v1/x"
    server.answers["/v1/x"] = (200, {"set-cookie": "session=abc; Path=/"})
    seen = []
    for path in (own_path, lean_path):
        http = await opened(http_client(), server)
        server.seen.clear()
        await read(await path(http, url, b"{}"))
        assert not plain_client(http)  # a client with cookies takes its own path
        await read(await path(http, url, b"{}"))
        seen.append(server.seen[1].raw_headers)
    assert ("cookie", "session=abc") in seen[1]
    assert seen[0] == seen[1]


@pytest.mark.parametrize("follow", [True, False])
async def test_a_redirect_is_left_to_the_clients_rule(server: Upstream, follow: bool) -> None:
    server.answers["/v1/old"] = (307, {"location": "/v1/new"})
    http = await opened(http_client(follow_redirects=follow), server)
    response = await lean_path(http, f"http://127.0.0.1:{server.port}/v1/old", b"{}")
    await read(response)
    if follow:
        assert (response.status_code, response.url.path) == (200, "/v1/new")
        assert [s.target for s in server.seen[-2:]] == ["/v1/old", "/v1/new"]
        assert server.seen[-1].raw_body == b"{}"  # a 307 keeps the method and the body
    else:
        assert response.status_code == 307 and response.url.path == "/v1/old"


async def test_hooks_and_auth_take_the_clients_own_path(server: Upstream) -> None:
    called: list[str] = []

    async def hook(request: httpx2.Request) -> None:
        called.append(request.url.path)

    hooked = await opened(http_client(event_hooks={"request": [hook]}), server)
    assert not plain_client(hooked)
    await read(await lean_path(hooked, f"http://127.0.0.1:{server.port}/v1/h", b"{}"))
    assert called == ["/open", "/v1/h"]
    authed = await opened(http_client(auth=("user", "pw")), server)
    assert not plain_client(authed)
    await read(await lean_path(authed, f"http://127.0.0.1:{server.port}/v1/a", b"{}"))
    assert ("authorization", "Basic dXNlcjpwdw==") in server.seen[-1].raw_headers


async def test_a_failure_carries_its_request(server: Upstream) -> None:
    http = await opened(http_client(), server)
    request = build_post(http, httpx2.URL("http://127.0.0.1:1/v1/x"), HEADERS, b"{}", 7.0)
    with pytest.raises(httpx2.ConnectError) as info:
        await send(http, request)
    assert info.value.request is request


async def test_the_request_is_logged_as_httpx2_logs_it(
    server: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    http = await opened(http_client(), server)
    url = f"http://127.0.0.1:{server.port}/v1/log"
    with caplog.at_level(logging.INFO, logger="httpx2"):
        await read(await own_path(http, url, b"{}"))
        await read(await lean_path(http, url, b"{}"))
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx2"]
    assert lines == [f'HTTP Request: POST {url} "HTTP/1.1 200 X"'] * 2
