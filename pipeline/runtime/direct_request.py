"""A streamed POST through an SDK client's own HTTP client, without the SDK's per-request work.

What ``client.chat.completions.with_streaming_response.create(...)`` does for
rxllm's sources, for a *plain* client: the same URL, the same headers (the
SDK builds them, auth and version headers included), the JSON body, sent
through the client's own ``httpx2.AsyncClient`` (straight to its transport
when nothing of the client applies: :mod:`pipeline.runtime.http_send`), and
the same exceptions:
an HTTP error status becomes the SDK's ``APIStatusError`` subclass (its own
mapping, body and request id included), a timeout ``APITimeoutError``, any
other transport failure ``APIConnectionError``. Failover classifies them as
before.

What it leaves out is the SDK's work around each request: copies of the
request options, the transform of its typed arguments, the retry loop and
the response wrappers. That work is CPU on the path of every request's first
token, which under load is what the time to first token follows
(bench/README.md, "The request path").

A client is plain when nothing of that work changes the request: an
``AsyncOpenAI`` or ``AsyncAnthropic`` itself (not a subclass such as Azure's,
which rewrites URLs), ``max_retries=0`` (rxllm serve's upstreams: failover
retries), no custom auth, no API-key provider, no workload identity, and a
body that is plain JSON. Any other client, or an SDK whose internals are not
where this module expects them, takes the SDK's own path.
"""

from __future__ import annotations

import importlib
import json
import weakref
from collections.abc import Callable
from typing import Any

import httpx2

from pipeline.runtime.http_send import build_post, send

__all__ = ["DirectResponse", "direct_stream"]

_UNSET_IF_PLAIN = (
    "custom_auth",
    "_api_key_provider",
    "_provider_runtime",
    "_workload_identity_auth",
)
"""Client attributes that, when set, change how the SDK sends a request."""

_NEEDED = ("_build_headers", "_prepare_url", "_make_status_error_from_response", "default_query")


class _Kind:
    """What this module uses of an SDK's module: its request options and its errors."""

    __slots__ = ("connection_error", "options", "timeout_error")

    def __init__(self, sdk: Any, models: Any) -> None:
        self.timeout_error: type[Exception] = sdk.APITimeoutError
        self.connection_error: type[Exception] = sdk.APIConnectionError
        self.options: Any = models.FinalRequestOptions


_CLIENTS = {"openai": "AsyncOpenAI", "anthropic": "AsyncAnthropic"}
"""The SDKs this module knows, and the one client class of each it sends for."""


def _kind_of(client: object) -> _Kind | None:
    """The SDK of ``client`` if it is exactly one of the clients this module knows."""
    cls = type(client)
    name = cls.__module__.split(".", 1)[0]
    if name not in _CLIENTS:
        return None
    try:
        sdk = importlib.import_module(name)
        models = importlib.import_module(f"{name}._models")
    except ImportError:  # pragma: no cover - an SDK without these internals
        return None
    if cls is not getattr(sdk, _CLIENTS[name], None):
        return None
    return _Kind(sdk, models)


class _HeaderCache:
    """The SDK's headers of a client's requests without extra headers, built once per timeout.

    The SDK builds them afresh for every request, the same each time for one
    client and timeout. The client's credentials are part of the key: a
    client given a new API key gets new headers.
    """

    def __init__(self) -> None:
        self._by_client: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], httpx2.Headers]] = (
            weakref.WeakKeyDictionary()
        )

    @staticmethod
    def _key(client: Any, timeout: dict[str, Any]) -> tuple[Any, ...]:
        return (
            getattr(client, "api_key", None),
            getattr(client, "auth_token", None),
            repr(timeout),
        )

    def get(self, client: Any, timeout: dict[str, Any]) -> httpx2.Headers | None:
        cached = self._by_client.get(client)
        return None if cached is None else cached.get(self._key(client, timeout))

    def put(self, client: Any, timeout: dict[str, Any], headers: httpx2.Headers) -> None:
        cached = self._by_client.setdefault(client, {})
        if len(cached) >= 8:  # timeouts that change per request: keep the newest few
            cached.clear()
        cached[self._key(client, timeout)] = headers


_HEADERS = _HeaderCache()


class _UrlCache:
    """``client._prepare_url(path)`` per client and path, while the client's base URL is the same.

    The SDK parses and joins it afresh for every request; it changes only
    when the client is given another base URL.
    """

    def __init__(self) -> None:
        self._by_client: weakref.WeakKeyDictionary[Any, tuple[Any, dict[str, httpx2.URL]]] = (
            weakref.WeakKeyDictionary()
        )

    def get(self, client: Any, path: str) -> httpx2.URL:
        base = client.base_url
        cached = self._by_client.get(client)
        if cached is None or cached[0] is not base:
            cached = (base, {})
            self._by_client[client] = cached
        urls = cached[1]
        url = urls.get(path)
        if url is None:
            url = urls[path] = client._prepare_url(path)
        return url


_URLS = _UrlCache()


def _plain(client: Any) -> bool:
    if getattr(client, "max_retries", None) != 0:
        return False
    if not isinstance(getattr(client, "_client", None), httpx2.AsyncClient):
        return False
    if any(not hasattr(client, name) for name in _NEEDED):
        return False
    return all(getattr(client, name, None) is None for name in _UNSET_IF_PLAIN)


class DirectResponse:
    """The opened response: what the SDK's streamed response gives rxllm's sources.

    An async context manager; entering it sends the request and raises the
    SDK's exceptions; leaving it closes the response.
    """

    __slots__ = ("_body", "_client", "_kind", "_options", "_path", "http_response")

    def __init__(
        self, client: Any, kind: _Kind, path: str, body: bytes, options: dict[str, Any]
    ) -> None:
        self._client = client
        self._kind = kind
        self._path = path
        self._body = body
        self._options = options
        self.http_response: httpx2.Response | None = None

    def _request(self) -> httpx2.Request:
        client = self._client
        options = self._options
        given = {"timeout": options["timeout"]} if "timeout" in options else {}
        timeout = given.get("timeout", client.timeout)
        extra = options.get("extra_headers")
        headers = None if extra else _HEADERS.get(client, given)
        if headers is None:
            # The SDK's own headers: auth, version, organization, the client's defaults,
            # the request's extra headers, its retry count and read timeout.
            final = self._kind.options.construct(
                method="post", url=self._path, headers=extra, **given
            )
            headers = client._build_headers(final)
            headers["Content-Type"] = "application/json"
            headers.setdefault("X-Stainless-Raw-Response", "stream")  # as the SDK's streamed call
            if not extra:
                _HEADERS.put(client, given, headers)
        params = {**client.default_query, **(options.get("extra_query") or {})}
        http: httpx2.AsyncClient = client._client
        if params:
            return http.build_request(
                "POST",
                client._prepare_url(self._path),
                headers=headers,
                params=params,
                content=self._body,
                timeout=timeout,
            )
        return build_post(http, _URLS.get(client, self._path), headers, self._body, timeout)

    async def __aenter__(self) -> DirectResponse:
        kind = self._kind
        request = self._request()
        try:
            response = await send(self._client._client, request)
        except httpx2.TimeoutException as error:
            raise kind.timeout_error(request=request) from error  # type: ignore[call-arg]
        except httpx2.RequestError as error:
            raise kind.connection_error(request=request) from error  # type: ignore[call-arg]
        if response.status_code >= 400:
            try:
                await response.aread()
            finally:
                await response.aclose()
            raise self._client._make_status_error_from_response(response) from None
        self.http_response = response
        return self

    async def __aexit__(self, *_: object) -> None:
        response, self.http_response = self.http_response, None
        if response is not None:
            await response.aclose()


def direct_stream(
    client: Any, path: str, params: dict[str, Any]
) -> Callable[[], DirectResponse] | None:
    """What opens one streamed ``POST path`` with body ``params`` per call, or ``None``.

    ``params`` is the body plus the SDK's request options (``extra_headers``,
    ``extra_query``, ``extra_body``, ``timeout``). ``None`` when ``client`` is
    not plain or the body is not plain JSON (see the module): then the SDK's
    own ``create`` is the way.
    """
    kind = _kind_of(client)
    if kind is None or not _plain(client):
        return None
    body = dict(params)
    options: dict[str, Any] = {
        k: body.pop(k) for k in ("extra_headers", "extra_query", "timeout") if k in body
    }
    body.update(body.pop("extra_body", None) or {})
    try:
        content = json.dumps(
            body, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    except (TypeError, ValueError):
        return None
    return lambda: DirectResponse(client, kind, path, content, options)
