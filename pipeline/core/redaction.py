"""Redaction: the one list of secret names and patterns, and what hides them.

Three uses, one list:

* :func:`redact_text` masks secrets anywhere in free text: an error message,
  a repr. OpenAI-style keys (``sk-...``), ``Bearer`` tokens,
  ``authorization=``/``api-key:`` values, secret query parameters
  (``?key=``, ``&token=``...) and the user info of URLs
  (``https://user:pass@host``)::

      redact_text("401 for sk-proj-abc123xyz at https://u:p@h/v1?key=AIza9")
      == "401 for sk-*** at https://***@h/v1?key=***"

* :func:`redact_value` copies a request (any JSON-like value) for keeping:
  keys named in :data:`SECRET_NAMES` are dropped at any depth, URLs in
  strings lose their user info and secret query values, and objects that
  are not JSON are named (``"<AsyncOpenAI>"``), never rendered (a repr can
  hold a key). Other strings (message contents) are kept as they are.
* :func:`is_secret_name` says whether a parameter is a credential, for
  code that drops such parameters itself (the server, before a request goes
  upstream).

:func:`redact_url` is the URL part alone (user info and query secrets), for
showing where an upstream is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

__all__ = ["SECRET_NAMES", "is_secret_name", "redact_text", "redact_url", "redact_value"]

SECRET_NAMES = frozenset(
    {
        "api_key",
        "apikey",
        "x_api_key",
        "authorization",
        "proxy_authorization",
        "headers",
        "extra_headers",
        "default_headers",
        "cookie",
        "cookies",
        "password",
        "secret",
        "client_secret",
        "access_token",
        "refresh_token",
        "token",
        "bearer",
        "http_client",
        "client",
    }
)
"""Parameter names that hold credentials (compared lowercase, ``-`` read as ``_``)."""

_QUERY_NAMES = r"key|api[-_]?key|access_token|token|sig"
"""Query parameters that hold credentials (``?key=`` is Google's, ``sig`` Azure's SAS)."""

# Up to the last "@" before the path: a password may hold an "@" of its own.
_URL_USERINFO = (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s\"'<>]*@"), r"\1***@")
_URL_QUERY = (re.compile(rf"(?i)([?&](?:{_QUERY_NAMES})=)[^&#\s\"']+"), r"\1***")
_PATTERNS = [
    # sk-..., sk-proj-...: OpenAI-style keys anywhere in the text
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"), "sk-***"),
    # Authorization: Bearer <token>
    (re.compile(r"(?i)\b(bearer)\s+[^\s\"',;]+"), r"\1 ***"),
    # authorization=..., api-key: ..., "x-api-key": "..."
    (
        re.compile(
            r"(?i)\b(authorization|api[-_]?key)(['\"]?\s*[:=]\s*['\"]?)(?!bearer\b)[^\s\"',;&]+"
        ),
        r"\1\2***",
    ),
    _URL_QUERY,
    _URL_USERINFO,
]
"""Secrets in free text and their masks, applied in this order."""

_MAX_DEPTH = 64


def is_secret_name(name: str) -> bool:
    """Whether a parameter called ``name`` holds a credential (see :data:`SECRET_NAMES`)."""
    return name.lower().replace("-", "_") in SECRET_NAMES


def redact_text(text: str) -> str:
    """``text`` with every secret the patterns know masked (``***``)."""
    for pattern, mask in _PATTERNS:
        text = pattern.sub(mask, text)
    return text


def redact_url(url: str) -> str:
    """``url`` with its user info and secret query values masked (``***``).

    Also safe on any string: only URL user info and secret query parameters change.
    """
    if "@" in url:
        url = _URL_USERINFO[0].sub(_URL_USERINFO[1], url)
    if "=" in url:
        url = _URL_QUERY[0].sub(_URL_QUERY[1], url)
    return url


def redact_value(value: Any) -> Any:
    """A JSON-safe copy of ``value`` without credentials; see the module docstring."""
    return _redact(value, 0)


def _redact(value: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return "<too deep>"
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {
            str(key): _redact(item, depth + 1)
            for key, item in value.items()
            if not is_secret_name(str(key))
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(item, depth + 1) for item in value]
    if isinstance(value, str):
        return redact_url(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    # Unknown objects (clients, callables) are named, never rendered: a repr can hold a key.
    return f"<{type(value).__name__}>"
