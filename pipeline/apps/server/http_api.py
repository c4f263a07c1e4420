"""``rxllm serve``'s HTTP API: the library wired up as a processing layer.

Routes (each also importable through :func:`routes`, to mount into an app):

* ``POST /v1/chat/completions`` -- OpenAI-compatible, streaming and not; every
  stream runs through the pipeline; the response has ``x-rxllm-stream-id``.
* ``POST /v1/responses`` -- the Responses API, streaming and not
  (``responses.create(stream=True)``, ``responses.stream()``);
* ``POST /v1/messages`` -- Anthropic Messages, streaming and not
  (``messages.stream()``), its errors in Anthropic's shape. Both run through
  the same pipeline and carry ``x-rxllm-stream-id``; an upstream that speaks
  the route's API gets the body as it is, another one a translation
  (:mod:`pipeline.runtime.api_routing`); a field none can carry is a 400 naming it.
* ``POST /v1/streams`` -- start a stream for the chat page; returns its id
  (the body's other fields pass upstream, as on ``/v1/chat/completions``).
* ``GET /v1/streams/{id}/events`` -- rxllm's own events, live or recent,
  resumable with ``Last-Event-ID``: from this process's hub, else (another
  process's stream, with ``--redis``) from Redis, else from the store.
* ``POST /v1/streams/{id}/cancel`` -- cancel a live stream, here or (with
  ``--redis``) on the process that holds it: 200 once it is cancelled, 202
  when the request was sent but the end was not seen within 2 s.
* ``POST /api/chat``, ``GET /api/chat/{id}/stream``, ``POST /api/chat/{id}/stop``
  -- the Vercel AI SDK's ``useChat``: answer, resume, stop
  (:mod:`pipeline.apps.server.use_chat`).
* ``GET /v1/models`` -- the upstreams' models (asked, cached) and the config's
  aliases (:mod:`pipeline.apps.server.model_list`).
* ``GET /v1/transcripts``, ``GET /v1/transcripts/{id}`` -- the store, read-only.
* ``GET /metrics`` -- Prometheus; ``GET /`` -- the chat page.
* ``GET /inspect``, ``GET /v1/inspect/streams[/{id}]`` -- the inspector, live and
  stored streams (:mod:`pipeline.apps.server.inspector_api`).

A streaming request whose upstream fails before the first token gets an
HTTP error with the upstream's status (a client's retry logic sees a 429 as
a 429), ``x-should-retry: false`` (rxllm has retried already) and, for a
rate limit, ``Retry-After``/``retry-after-ms``; after the first token, the
error is an event in the stream.

A client that leaves ends its upstream request, whenever it leaves: while a
non-streaming request waits for the whole answer, while a stream waits for
its first token or a failover's backoff (:mod:`.disconnect_watch`), and
while it streams (:class:`sinks.sse_response.SSEResponse`). A stream started
with ``POST /v1/streams`` that nobody reads is cancelled after
``orphan_timeout`` seconds (5 by default); the events route tells an
``EventSource`` to reconnect after :data:`EVENTS_RETRY_MS`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from importlib import resources
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline.apps.server.api_errors import ApiError, anthropic_error_response, error_response
from pipeline.apps.server.bearer_auth import BearerAuth, read_query
from pipeline.apps.server.chunked_body import body_send
from pipeline.apps.server.disconnect_watch import cancel_on_disconnect
from pipeline.apps.server.gateway import Gateway
from pipeline.apps.server.inspector_api import INSPECTOR_PATH, InspectorApi
from pipeline.apps.server.remote_resume import open_resume
from pipeline.apps.server.request_bodies import (
    ChatRequest,
    MessagesRequest,
    ResponsesRequest,
    UIChatRequest,
    check_chat_request,
    continue_header,
    header_timeouts,
    read_json,
    to_openai_messages,
    validate,
)
from pipeline.apps.server.server_settings import ServerSettings
from pipeline.apps.server.use_chat import UseChat
from pipeline.core.events import EventBase, StreamError
from pipeline.core.result import Accumulator
from pipeline.runtime.async_bridges import finally_call
from pipeline.runtime.stream_hub import ResumeGapError, StreamNotFoundError
from sinks.metrics import metrics_endpoint
from sinks.sse_response import BODY_SEND, CLIENT_GONE_HOOKS, SSEResponse

__all__ = ["create_app", "routes"]

Handler = Callable[[Request], Any]

EVENTS_RETRY_MS = 1000
"""The reconnection delay an ``EventSource`` is told on the events route: well within
the grace a stream nobody reads is given (``ServerSettings.orphan_timeout``)."""


def _page() -> str:
    return resources.files("pipeline.apps.server").joinpath("chat_page.html").read_text("utf-8")


def _upstream_error(event: StreamError) -> ApiError:
    """The HTTP error for a stream that failed before its first token."""
    if event.kind == "http" and event.status is not None:
        status = event.status
    elif event.kind == "timeout":
        status = 504
    else:
        status = 502
    return ApiError(status, event.message, type="upstream_error", code=event.code or event.kind)


def _retry_advice(event: StreamError, headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with the retry advice for a stream that failed before its first token.

    rxllm has already retried (and failed over) as its policy allows, so the
    client's own retries would only multiply the load on the upstream:
    ``x-should-retry: false`` (read by the openai and Anthropic SDKs) says not
    to. A rate limit carries ``Retry-After`` (whole seconds, rounded up) and
    ``retry-after-ms``: when the first upstream or key is free again.
    """
    advice = {**headers, "x-should-retry": "false"}
    wait = event.retry_after
    if wait is not None and math.isfinite(wait) and wait >= 0:
        advice["retry-after"] = str(math.ceil(wait))
        advice["retry-after-ms"] = str(math.ceil(wait * 1000))
    return advice


def _upstream_error_response(event: StreamError, headers: dict[str, str]) -> Response:
    """The response for a stream that failed before its first token, with retry advice."""
    return error_response(_upstream_error(event), _retry_advice(event, headers))


def _native_error(event: StreamError) -> ApiError:
    """The HTTP error for a stream that failed before its first token, its status kept.

    As :func:`_upstream_error`, but an error the upstream sent in its stream
    (an Anthropic ``overloaded_error``) keeps the status it stands for (529).
    """
    error = _upstream_error(event)
    if event.kind == "upstream" and event.status is not None:
        error.status = event.status
    return error


def _early_error(
    answer: Callable[[StreamError], Response],
) -> Callable[[Sequence[EventBase]], Response | None]:
    """An SSE response's ``early_answer``: ``answer(error)`` for a stream that failed before
    its first token (the last event held), else ``None`` (stream it)."""

    def early(held: Sequence[EventBase]) -> Response | None:
        first = held[-1]
        if isinstance(first, StreamError) and not first.after_first_token:
            return answer(first)
        return None

    return early


def _completion(result: Any, stream_id: str, model: str) -> dict[str, Any]:
    """A ``chat.completion`` body from an accumulated result."""
    choices = []
    for c in result.choices:
        message: dict[str, Any] = {"role": "assistant", "content": c.content}
        if c.refusal is not None:
            message["refusal"] = c.refusal
        if c.reasoning is not None:
            message["reasoning_content"] = c.reasoning
        if c.tool_calls:
            message["tool_calls"] = [
                {
                    "id": tc.id,
                    "type": "function",
                    "function": {"name": tc.name, "arguments": tc.arguments},
                }
                for tc in c.tool_calls
            ]
        choices.append(
            {"index": c.index, "message": message, "finish_reason": c.finish_reason or "stop"}
        )
    return {
        "id": f"chatcmpl-{stream_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": result.model or model,
        "choices": choices,
        "usage": result.usage,
    }


_STATUSES = ("running", "finished", "error", "cancelled", "interrupted")
MAX_QUERY_TEXT = 1000
"""The longest ``?q=`` text search on ``/v1/transcripts``."""
MAX_OFFSET = 2**31
"""The largest ``?offset=`` on ``/v1/transcripts`` (a database integer holds it)."""
_MAX_SEQ_DIGITS = 18  # every sequence number below 10**18 fits a 64-bit integer


def _int_param(query: Any, name: str, default: int, low: int, high: int | None) -> int:
    """The integer query parameter ``name``: ASCII digits (and a sign), within bounds; else 400."""
    value = query.get(name)
    if value is None:
        return default
    text = value.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not (digits.isascii() and digits.isdigit() and len(digits) <= _MAX_SEQ_DIGITS):
        raise ApiError(400, f"{name} must be an integer, not {value[:40]!r}", param=name)
    number = int(text)
    if number < low or (high is not None and number > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise ApiError(400, f"{name} must be {bounds}, not {number}", param=name)
    return number


def _resume_point(request: Request) -> int | None:
    """The ``seq`` to resume after: ``Last-Event-ID``, else ``?after=``; a 400 if malformed."""
    for name, value in (
        ("Last-Event-ID", request.headers.get("last-event-id")),
        ("after", request.query_params.get("after")),
    ):
        text = (value or "").strip()
        if not text:
            continue
        if not (text.isascii() and text.isdigit() and len(text) <= _MAX_SEQ_DIGITS):
            raise ApiError(
                400,
                f"{name} must be an event's sequence number (ASCII digits), not {text[:40]!r}",
                param=name,
            )
        return int(text)
    return None


def _per_request(request: Request, req: ChatRequest) -> dict[str, Any]:
    """Per-request options: timeouts (headers), the conversation id, the route.

    A conversation (``x-rxllm-conversation-id``, else the request's ``user``)
    stays on one key of a sticky pool, so the provider's prompt cache keeps working.
    """
    options: dict[str, Any] = dict(header_timeouts(request))
    options["continue_after_first_token"] = continue_header(request)
    conversation = request.headers.get("x-rxllm-conversation-id")
    if conversation is None and req.model_extra:
        user = req.model_extra.get("user")
        conversation = user if isinstance(user, str) else None
    options["conversation_id"] = conversation
    options["route"] = request.url.path
    return options


class _Api:
    """The route handlers, bound to one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def _body(self, request: Request) -> dict[str, Any]:
        settings = self.gateway.settings
        metrics = self.gateway.metrics
        return await read_json(
            request,
            settings.max_body,
            read_timeout=settings.body_timeout,
            on_timeout=lambda: metrics.inc_connection_closed("body_timeout"),
        )

    def _check_model(self, model: str) -> None:
        models = self.gateway.models
        if models is not None and model not in models:
            raise ApiError(
                404,
                f"the model '{model}' does not exist; known models: {', '.join(sorted(models))}",
                param="model",
                code="model_not_found",
            )

    async def chat_completions(self, request: Request) -> Response:
        gw = self.gateway
        req = validate(ChatRequest, await self._body(request))
        check_chat_request(req, allow_request_options=gw.settings.allow_request_options)
        self._check_model(req.model)
        run = gw.open_stream(req.upstream_params(), tools=req.tools, **_per_request(request, req))
        headers = {"x-rxllm-stream-id": run.stream_id or ""}
        if not req.stream:
            acc = Accumulator()
            run.subscribe(acc.add)
            async with cancel_on_disconnect(request, run.cancel):
                run.start()
                terminal = await run.wait()
            if isinstance(terminal, StreamError):
                return _upstream_error_response(terminal, headers)
            body = _completion(acc.result(), run.stream_id or "", req.model)
            return JSONResponse(body, headers=headers)
        options = req.model_extra.get("stream_options") if req.model_extra else None
        include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        from sinks.dialects import OpenAIDialect

        events = run.iterate()
        run.start()
        # The status waits for the first token, and the response writes it in the
        # step that produced it (early_answer): no loop turn to wake this handler.
        return SSEResponse(
            events,
            early_answer=_early_error(lambda error: _upstream_error_response(error, headers)),
            dialect=OpenAIDialect(include_usage=include_usage),
            on_disconnect=run.cancel,
            heartbeat=gw.settings.heartbeat,
            send_timeout=gw.settings.send_timeout,
            headers=headers,
        )

    async def responses(self, request: Request) -> Response:
        """``POST /v1/responses``: a Responses API request, streamed or not."""
        from sinks.dialects import ResponsesDialect

        req = validate(ResponsesRequest, await self._body(request))
        self._check_model(req.model)
        params = req.upstream_params()
        dialect = ResponsesDialect(request=params, model=req.model)
        return await self._native(request, req, params, "responses", dialect, error_response)

    async def messages(self, request: Request) -> Response:
        """``POST /v1/messages``: an Anthropic Messages request, streamed or not."""
        from sinks.dialects import AnthropicDialect

        req = validate(MessagesRequest, await self._body(request))
        self._check_model(req.model)
        params = req.upstream_params()
        dialect = AnthropicDialect(model=req.model)
        return await self._native(
            request, req, params, "anthropic", dialect, anthropic_error_response
        )

    async def _native(
        self,
        request: Request,
        req: Any,
        params: dict[str, Any],
        api: str,
        dialect: Any,
        errors: Callable[[ApiError, dict[str, str] | None], Response],
    ) -> Response:
        """Run a request of ``api`` through the pipeline; answer in the same API.

        Not streamed: the dialect is fed every event and its message is the
        body. Streamed: as on ``/v1/chat/completions`` (an HTTP error before
        the first token, the rest as the dialect writes it).
        """
        gw = self.gateway
        run = gw.open_stream(params, api=api, tools=None, **_per_request(request, req))
        headers = {"x-rxllm-stream-id": run.stream_id or ""}
        if not req.stream:
            run.subscribe(dialect.encode)
            async with cancel_on_disconnect(request, run.cancel):
                run.start()
                terminal = await run.wait()
            if isinstance(terminal, StreamError):
                return errors(_native_error(terminal), _retry_advice(terminal, headers))
            return JSONResponse(dialect.body(), headers=headers)
        events = run.iterate()
        run.start()
        return SSEResponse(
            events,
            early_answer=_early_error(
                lambda error: errors(_native_error(error), _retry_advice(error, headers))
            ),
            dialect=dialect,
            on_disconnect=run.cancel,
            heartbeat=gw.settings.heartbeat,
            send_timeout=gw.settings.send_timeout,
            headers=headers,
        )

    async def start_stream(self, request: Request) -> Response:
        gw = self.gateway
        body = await self._body(request)
        ui = validate(UIChatRequest, body)
        model = ui.model or gw.default_model()
        self._check_model(model)
        # The body's other fields pass upstream, as on /v1/chat/completions.
        messages = to_openai_messages(ui.messages)
        req = validate(ChatRequest, {**body, "model": model, "messages": messages})
        check_chat_request(req, allow_request_options=gw.settings.allow_request_options)
        run = gw.open_stream(req.upstream_params(), tools=req.tools, **_per_request(request, req))
        stream_id = run.stream_id or ""
        if gw.bus is not None:  # other processes can read it as soon as the client has the id
            await gw.bus.register(stream_id)
        run.start()
        gw.watch_orphan(stream_id)
        # Where to read it: with --auth-token, a URL an EventSource can use without
        # the header (a capability for this stream only; see pipeline.apps.server.bearer_auth).
        # An absolute path (under the app's root path when it is mounted), so it
        # resolves the same from any page.
        root = str(request.scope.get("root_path", "")).rstrip("/")
        events_url = f"{root}/v1/streams/{quote(stream_id, safe='')}/events"
        token = gw.settings.auth_token
        if token:
            events_url += "?" + read_query(token, stream_id)
        return JSONResponse({"id": stream_id, "events_url": events_url}, status_code=201)

    async def stream_events(self, request: Request) -> Response:
        gw = self.gateway
        stream_id = request.path_params["stream_id"]
        after = _resume_point(request)
        try:
            events: AsyncIterator[Any] = gw.hub.events(stream_id, after)
        except (StreamNotFoundError, ResumeGapError):
            events = await self._stored_events(stream_id, after)
            return SSEResponse(
                events,
                dialect="rxllm",
                heartbeat=gw.settings.heartbeat,
                send_timeout=gw.settings.send_timeout,
            )
        gw.reader_attached(stream_id)
        return SSEResponse(
            finally_call(events, lambda: gw.reader_detached(stream_id)),
            dialect="rxllm",
            retry=EVENTS_RETRY_MS,
            heartbeat=gw.settings.heartbeat,
            send_timeout=gw.settings.send_timeout,
        )

    async def _stored_events(self, stream_id: str, after: int | None) -> AsyncIterator[Any]:
        """Another process's stream (from Redis, live or recent) or a stored one."""
        gw = self.gateway
        events = await open_resume(stream_id, after, bus=gw.bus, store=gw.store)
        if events is None:
            raise ApiError(404, f"no stream with id '{stream_id}'", code="stream_not_found")
        return events

    async def cancel_stream(self, request: Request) -> Response:
        stream_id = request.path_params["stream_id"]
        hub, bus = self.gateway.hub, self.gateway.bus
        reason = "cancelled by request"
        if stream_id in hub:
            if hub.cancel(stream_id, reason):
                return JSONResponse({"id": stream_id, "cancelled": True})
        elif bus is not None:
            from sinks.redis_bus import BusUnavailableError

            try:
                outcome = await bus.cancel(stream_id, reason, wait=2.0)
            except BusUnavailableError:
                raise ApiError(
                    503,
                    "cannot reach Redis to cancel a stream held by another process; retry",
                    type="server_error",
                    code="bus_unavailable",
                ) from None
            if outcome == "cancelled":
                return JSONResponse({"id": stream_id, "cancelled": True})
            if outcome == "requested":
                return JSONResponse({"id": stream_id, "cancelled": False}, status_code=202)
        raise ApiError(404, f"no live stream with id '{stream_id}'", code="stream_not_found")

    async def transcripts(self, request: Request) -> Response:
        store = self._require_store()
        q = request.query_params
        limit = _int_param(q, "limit", 50, 1, None)
        status = q.get("status")
        if status is not None and status not in _STATUSES:
            raise ApiError(
                400, f"status must be one of {', '.join(_STATUSES)}, not {status!r}", param="status"
            )
        text = q.get("q") or q.get("text")
        if text is not None and len(text) > MAX_QUERY_TEXT:
            raise ApiError(400, f"q is longer than {MAX_QUERY_TEXT} characters", param="q")
        items = await store.list(
            model=q.get("model"),
            status=status,
            text=text,
            limit=min(limit, 500),
            offset=_int_param(q, "offset", 0, 0, MAX_OFFSET),
        )
        return JSONResponse({"data": [_jsonable(item) for item in items]})

    async def transcript(self, request: Request) -> Response:
        store = self._require_store()
        stream_id = request.path_params["stream_id"]
        item = await store.get(stream_id)
        if item is None:
            raise ApiError(404, f"no transcript with id '{stream_id}'", code="not_found")
        events = await store.events(stream_id)
        body = _jsonable(item)
        body["events"] = [e.model_dump(mode="json") for e in events]
        return JSONResponse(body)

    def _require_store(self) -> Any:
        if self.gateway.store is None:
            raise ApiError(404, "the transcript store is disabled", code="store_disabled")
        return self.gateway.store

    async def models(self, request: Request) -> Response:
        data = await self.gateway.model_list.data()
        return JSONResponse({"object": "list", "data": data})

    async def page(self, request: Request) -> Response:
        return HTMLResponse(_page())


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (404 route, 405 method) as JSON too."""
    assert isinstance(exc, HTTPException)
    return error_response(ApiError(exc.status_code, str(exc.detail), code="http_error"))


def _jsonable(item: Any) -> dict[str, Any]:
    if hasattr(item, "model_dump"):
        return dict(item.model_dump(mode="json"))
    return dict(item)


def _api_errors(handler: Handler, shape: Callable[..., Response] = error_response) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            response: Response = await handler(request)
        except ApiError as exc:
            return shape(exc)
        except ClientDisconnect:  # left while sending its body: nobody to answer, nothing to log
            return Response(status_code=499)
        return response

    return wrapped


def routes(gateway: Gateway) -> list[BaseRoute]:
    """The server's routes, bound to ``gateway`` (mount them into your own app)."""
    api = _Api(gateway)
    chat = UseChat(gateway)
    inspector = InspectorApi(gateway)
    table: list[tuple[str, Handler, list[str]]] = [
        ("/v1/chat/completions", api.chat_completions, ["POST"]),
        ("/v1/models", api.models, ["GET"]),
        ("/v1/streams", api.start_stream, ["POST"]),
        ("/v1/streams/{stream_id}/events", api.stream_events, ["GET"]),
        ("/v1/streams/{stream_id}/cancel", api.cancel_stream, ["POST"]),
        ("/api/chat", chat.answer, ["POST"]),
        ("/api/chat/{chat_id}/stream", chat.resume, ["GET"]),
        ("/api/chat/{chat_id}/stop", chat.stop, ["POST"]),
        ("/v1/transcripts", api.transcripts, ["GET"]),
        ("/v1/transcripts/{stream_id}", api.transcript, ["GET"]),
        ("/", api.page, ["GET"]),
        (INSPECTOR_PATH, inspector.page, ["GET"]),
        ("/v1/inspect/streams", inspector.streams, ["GET"]),
        ("/v1/inspect/streams/{stream_id}", inspector.stream, ["GET"]),
    ]
    out: list[BaseRoute] = [Route(p, _api_errors(h), methods=m) for p, h, m in table]
    out.append(Route("/v1/responses", _api_errors(api.responses), methods=["POST"]))
    out.append(
        Route(
            "/v1/messages",
            _api_errors(api.messages, anthropic_error_response),
            methods=["POST"],
        )
    )
    out.append(metrics_endpoint(gateway.metrics))
    return out


# Middleware whose send wrapper changes at most the start message (CORS adds headers to it).
_BODY_AS_IS: tuple[Any, ...] = (CORSMiddleware, BearerAuth)


class _App(Starlette):
    """Starlette, giving an SSE response the server's ``send`` for its body messages.

    Starlette wraps ``send`` three times (its error middleware, its
    exception middleware, the route), and each wrapper only notes the
    ``http.response.start``; an :class:`SSEResponse` sends its start through
    them and every event after it straight to the server
    (:data:`sinks.sse_response.BODY_SEND`): three coroutine calls fewer per
    event. Only while every middleware added passes the body through as it
    is (the ones :func:`create_app` adds); with any other, nothing changes.
    """

    _body_as_is: bool = False

    def build_middleware_stack(self) -> ASGIApp:
        self._body_as_is = all(m.cls in _BODY_AS_IS for m in self.user_middleware)
        return super().build_middleware_stack()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        if scope["type"] == "http":
            scope[CLIENT_GONE_HOOKS] = []  # the server's protocol calls them (connection_guard)
            if self._body_as_is:
                scope[BODY_SEND] = body_send(send)
        await super().__call__(scope, receive, send)


def create_app(settings: ServerSettings | None = None, gateway: Gateway | None = None) -> Starlette:
    """The whole server as one Starlette app (its lifespan starts and stops the gateway)."""
    settings = settings or ServerSettings()
    gw = gateway or Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gw.startup()
        try:
            yield
        finally:
            await gw.shutdown()

    middleware: list[Middleware] = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=[
                    "authorization",
                    "content-type",
                    "last-event-id",
                    "x-api-key",
                    "anthropic-version",
                    "anthropic-beta",
                ],
                expose_headers=["x-rxllm-stream-id"],
            )
        )
    if settings.auth_token:
        middleware.append(Middleware(BearerAuth, token=settings.auth_token))
    app = _App(
        routes=routes(gw),
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.state.gateway = gw
    return app
