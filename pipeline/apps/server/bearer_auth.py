"""Bearer-token authentication for every route, compared in constant time.

Two requests pass without the token, because a browser's ``EventSource``
can send no header:

* ``GET /`` and ``GET /inspect``, the chat page and the inspector: static
  HTML that holds no data; they ask for the token and send it on every API call.
* ``GET /v1/streams/{id}/events?access=...&expires=...``, reading one
  stream's events with the capability that ``POST /v1/streams`` returned
  to a caller who had the token (:func:`read_capability`: an HMAC of the
  stream id and the expiry, keyed with the token). It reads that stream
  and nothing else, until it expires (:data:`READ_CAPABILITY_TTL`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["READ_CAPABILITY_TTL", "BearerAuth", "read_capability", "read_query"]

READ_CAPABILITY_TTL = 3600
"""Seconds a stream's read capability stays valid."""

_EVENTS_PATH = re.compile(r"/v1/streams/([^/]+)/events")
_PAGES = frozenset({"/", "/inspect"})  # static HTML that holds no data


def read_capability(token: str, stream_id: str, expires: int) -> str:
    """The ``access`` value that lets a request read ``stream_id`` until ``expires``."""
    message = f"read {stream_id} {expires}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def read_query(token: str, stream_id: str) -> str:
    """The query string (``access=...&expires=...``) of a read capability for ``stream_id``."""
    expires = int(time.time()) + READ_CAPABILITY_TTL
    return f"access={read_capability(token, stream_id, expires)}&expires={expires}"


class BearerAuth:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <token>``.

    On ``/v1/messages``, ``x-api-key: <token>`` is taken too: what the
    ``anthropic`` SDK sends for its ``api_key`` (tools built on it take an
    Anthropic base URL and a key).

    Except the chat page and reads with a stream's capability (see the
    module docstring). Anything else gets a 401 with an OpenAI-shaped JSON
    error. The token and capabilities are compared with
    :func:`hmac.compare_digest`, so their length and content don't leak
    through timing.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token
        self._expected = f"Bearer {token}".encode()
        self._api_key = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {
                "error": {
                    "message": "missing or wrong bearer token: "
                    "send 'Authorization: Bearer <token>'",
                    "type": "authentication_error",
                    "code": "unauthorized",
                    "param": None,
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="rxllm"'),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, scope: Scope) -> bool:
        given = api_key = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
            elif name == b"x-api-key":
                api_key = value
        if hmac.compare_digest(given, self._expected):
            return True
        if api_key and scope["path"] == "/v1/messages":
            return hmac.compare_digest(api_key, self._api_key)
        if scope["method"] != "GET":
            return False
        path = scope["path"]
        if path in _PAGES:
            return True
        match = _EVENTS_PATH.fullmatch(path)
        return match is not None and self._capability(match.group(1), scope)

    def _capability(self, stream_id: str, scope: Scope) -> bool:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        access, expires = query.get("access", [""])[-1], query.get("expires", [""])[-1]
        # ASCII digits of a plausible time ("²".isdigit() is true, and int() refuses it)
        if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
            return False
        if int(expires) < time.time():
            return False
        expected = read_capability(self._token, stream_id, int(expires))
        return hmac.compare_digest(access.encode(), expected.encode())
