"""A streamed request through an ``httpx2.AsyncClient`` without the client's per-request layers.

``AsyncClient.build_request`` merges the client's base URL, headers, cookies
and query into a new request, and ``AsyncClient.send`` runs it through an
auth flow (an async generator, even with no auth), a redirect loop, the
event hooks and a cookie extraction before the transport sees it. For a
*plain* client, one that has none of those to apply, all that work changes
nothing, and on the path of every request's first token it is CPU that a
probe waits for under load (bench/README.md, "The request path").

:func:`build_post` and :func:`send` do what those two do for a plain client,
with the transport's own request and response: the same ``Host``,
``Content-Length`` and headers, the ``timeout`` extension, the response
bound to its request with its elapsed time, cookies the server sets kept
in the client's jar, exceptions with the request attached, httpx2's
``HTTP Request`` log line. Any other client takes ``build_request`` and
``send``; so does a response that redirects, which is sent again through
``send`` so that httpx2 follows it (or not) by the client's rule.

A client is plain when it has no auth, no event hooks and no cookies, and
it is open (its first request goes through ``send``, which opens it); the
URL is absolute (a base URL applies to relative ones only) and carries no
credentials. An httpx2 whose private names moved makes every client not plain.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

import httpx2

__all__ = ["build_post", "plain_client", "send"]

try:  # private names of httpx2: without them, every request takes the client's own path
    from httpx2._client import BoundAsyncStream, ClientState
    from httpx2._exceptions import request_context
except ImportError:  # pragma: no cover - another httpx2 layout
    _OPEN: Any = None
else:
    _OPEN = ClientState.OPENED

_LOG = logging.getLogger("httpx2")  # the logger of httpx2's own "HTTP Request" line


def plain_client(http: httpx2.AsyncClient) -> bool:
    """Whether ``build_request`` and ``send`` would add nothing to a request of ``http``."""
    try:
        return (
            _OPEN is not None
            and http._state is _OPEN
            and http._auth is None
            and not http._event_hooks["request"]
            and not http._event_hooks["response"]
            and not http.cookies
        )
    except (AttributeError, KeyError):  # pragma: no cover - another httpx2 layout
        return False


def build_post(
    http: httpx2.AsyncClient,
    url: httpx2.URL,
    headers: httpx2.Headers,
    content: bytes,
    timeout: Any,
) -> httpx2.Request:
    """``http.build_request("POST", url, ...)`` for an absolute ``url`` without query params."""
    if not plain_client(http) or url.username or url.password:
        return http.build_request("POST", url, headers=headers, content=content, timeout=timeout)
    return httpx2.Request(
        "POST",
        url,
        headers=http._merge_headers(headers),
        content=content,
        extensions={"timeout": httpx2.Timeout(timeout).as_dict()},
    )


async def send(http: httpx2.AsyncClient, request: httpx2.Request) -> httpx2.Response:
    """``await http.send(request, stream=True)``; straight to the transport if ``http`` is plain."""
    if not plain_client(http) or request.url.username or request.url.password:
        return await http.send(request, stream=True)
    transport = http._transport_for_url(request.url)
    start = time.perf_counter()
    with request_context(request=request):
        response = await transport.handle_async_request(request)
    assert isinstance(response.stream, httpx2.AsyncByteStream)
    response.request = request
    response.stream = stream = BoundAsyncStream(response.stream, start=start)
    if response.is_closed:  # as httpx2: such a response never closes its stream
        stream.elapsed = datetime.timedelta(seconds=time.perf_counter() - start)
    if "set-cookie" in response.headers:
        http.cookies.extract_cookies(response)
    response.default_encoding = http._default_encoding
    if _LOG.isEnabledFor(logging.INFO):
        _LOG.info(
            'HTTP Request: %s %s "%s %d %s"',
            request.method,
            request.url,
            response.http_version,
            response.status_code,
            response.reason_phrase,
        )
    if response.has_redirect_location:  # rare on an API: the client's own rules decide
        await response.aclose()
        return await http.send(request, stream=True)
    return response
