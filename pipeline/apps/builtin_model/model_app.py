"""The mock's Starlette app: an OpenAI-compatible model server that plays scripts.

Routes: ``POST /v1/chat/completions``, ``POST /v1/responses``,
``POST /v1/messages`` (Anthropic Messages; its errors in Anthropic's shape),
each with ``stream`` true or false, and ``GET /v1/models``. A request whose bearer key
is one of ``reject_keys`` gets a 401 ``invalid_api_key`` (keys are otherwise
not checked; only their SHA-256 digests are kept, and no key is recorded).
The script of a request is the app's default :class:`MockScript` with the
request's ``mock`` body field laid over it; see :mod:`pipeline.apps.builtin_model.answer_script`.
The requested ``model`` is echoed back. A chat request whose messages end with
the start of the answer continues it (:mod:`pipeline.apps.builtin_model.prefill`).

Faults that need the socket (dropping the connection) use the
:class:`~pipeline.apps.builtin_model.traffic_log.ConnectionRecord` that
:class:`~pipeline.apps.builtin_model.model_server.RecordingProtocol` puts in the scope; under
another server a drop falls back to raising, which makes the server close
the connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from pipeline.apps.builtin_model.answer_script import Answer, MockScript, count_words, prompt_text
from pipeline.apps.builtin_model.anthropic_wire import (
    AnthropicWriter,
    anthropic_error,
    anthropic_message,
)
from pipeline.apps.builtin_model.chat_wire import ChatWriter, chat_completion
from pipeline.apps.builtin_model.prefill import continue_answer, find_prefill
from pipeline.apps.builtin_model.responses_wire import ResponsesWriter, response_object
from pipeline.apps.builtin_model.tool_use import ToolPlan, plan_tools
from pipeline.apps.builtin_model.traffic_log import (
    REQUEST_KEY,
    Recorder,
    RecordingMiddleware,
    RequestRecord,
)
from pipeline.apps.builtin_model.wire_frames import (
    Frame,
    Meta,
    StreamWriter,
    encode,
    error_object,
    malformed,
)

__all__ = [
    "DEFAULT_MODEL",
    "MAX_CHOICES",
    "ConnectionDropped",
    "MockState",
    "create_app",
    "mock_state",
]

DEFAULT_MODEL = "mock-model"
MAX_CHOICES = 128
"""The largest ``n`` a request may ask for (a 400 beyond it, as the real API answers)."""
_DROP_WAIT = 5.0  # seconds to wait for a dropped connection's socket to close


class MockState:
    """The app's mutable state: default script, recorder, ``fail_first`` counters.

    ``script`` may be replaced at any time (from any thread); the next
    request uses the new one.
    """

    def __init__(
        self,
        script: MockScript,
        recorder: Recorder,
        models: Sequence[str],
        strict_models: bool = False,
        reject_keys: Collection[str] = (),
    ) -> None:
        self.script = script
        self.recorder = recorder
        self.models = tuple(models)
        self.strict_models = strict_models
        self.rejected = frozenset(_digest(key) for key in reject_keys)
        self._seen: dict[str, int] = {}
        self._ids = itertools.count(1)
        self.created = int(time.time())  # the models' "created"

    def rejects(self, request: Request) -> bool:
        """Return whether the request's key (bearer, or Anthropic's ``x-api-key``) is rejected."""
        if not self.rejected:
            return False
        api_key = request.headers.get("x-api-key")
        if api_key is not None and _digest(api_key.strip()) in self.rejected:
            return True
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and _digest(key.strip()) in self.rejected

    def next_suffix(self) -> str:
        """Return a fresh id suffix like ``mock000001``."""
        return f"mock{next(self._ids):06d}"

    def faults_apply(self, script: MockScript) -> bool:
        """Count this request under its ``fault_key``; return whether its faults apply."""
        if not script.fail_first:
            return True
        seen = self._seen.get(script.fault_key, 0)
        self._seen[script.fault_key] = seen + 1
        return seen < script.fail_first


def create_app(
    script: MockScript | None = None,
    *,
    recorder: Recorder | None = None,
    models: Sequence[str] = (DEFAULT_MODEL,),
    strict_models: bool = False,
    reject_keys: Collection[str] = (),
) -> Starlette:
    """Return the mock's ASGI app, playing ``script`` unless a request says otherwise.

    With ``strict_models``, a model not in ``models`` gets a 404
    ``model_not_found``, as the real API answers; otherwise any name is echoed.
    A request with a key in ``reject_keys`` gets a 401 ``invalid_api_key``.
    """
    state = MockState(
        script or MockScript(), recorder or Recorder(), models, strict_models, reject_keys
    )
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", _chat, methods=["POST"]),
            Route("/v1/responses", _responses, methods=["POST"]),
            Route("/v1/messages", _messages, methods=["POST"]),
            Route("/v1/models", _models, methods=["GET"]),
        ],
        middleware=[Middleware(RecordingMiddleware, recorder=state.recorder)],
    )
    app.state.mock = state
    return app


def mock_state(app: Starlette) -> MockState:
    """Return the :class:`MockState` of an app made by :func:`create_app`."""
    state = app.state.mock
    if not isinstance(state, MockState):
        raise TypeError("this app was not made by pipeline.apps.builtin_model.create_app")
    return state


async def _models(request: Request) -> Response:
    state = mock_state(request.app)
    data = [
        {"id": name, "object": "model", "created": state.created, "owned_by": "rxllm-mock"}
        for name in state.models
    ]
    return JSONResponse({"object": "list", "data": data})


async def _chat(request: Request) -> Response:
    return await _answer(request, "messages", ChatWriter, chat_completion)


async def _responses(request: Request) -> Response:
    return await _answer(request, "input", ResponsesWriter, response_object)


async def _messages(request: Request) -> Response:
    response = await _answer(request, "messages", AnthropicWriter, anthropic_message)
    if response.status_code < 400 or not isinstance(response, JSONResponse):
        return response
    # The same errors, in the shape the anthropic SDK reads.
    error = json.loads(bytes(response.body)).get("error") or {}
    headers = {k: v for k, v in response.headers.items() if k.startswith("retry-after")}
    body = anthropic_error(response.status_code, error)
    return JSONResponse(body, response.status_code, headers)


async def _answer(
    request: Request,
    required: str,
    writer: Callable[[Answer, Meta], StreamWriter],
    whole: Callable[[Answer, Meta], dict[str, Any]],
) -> Response:
    state = mock_state(request.app)
    if state.rejects(request):
        # The real API's words, without echoing any part of the key.
        message = "Incorrect API key provided. You can find your API key in your account."
        return _error(401, message, "invalid_api_key")
    try:
        body = json.loads(await request.body())
    except ValueError:
        return _error(400, "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return _error(400, "The request body must be a JSON object.")
    if required not in body:
        message = f"Missing required parameter: '{required}'."
        return _error(400, message, "missing_required_parameter")
    model = body.get("model")
    if state.strict_models and model not in state.models:
        message = f"The model `{model}` does not exist or you do not have access to it."
        return _error(404, message, "model_not_found")
    try:
        script = state.script.merged(body.get("mock") or {})
    except (ValidationError, TypeError) as exc:
        return _error(400, f"Invalid mock script: {exc}", "invalid_mock_script")
    if not state.faults_apply(script):
        script = script.without_faults()
    status = script.failure_status()
    if status is not None:
        return _failure(script, status)
    n = body.get("n")
    if n is not None and (type(n) is not int or not 1 <= n <= MAX_CHOICES):
        # The real API's limit is 128, and so is ours: more would stream for minutes.
        message = f"Invalid 'n': expected an integer between 1 and {MAX_CHOICES}, got {n!r}."
        return _error(400, message, "invalid_value")
    model_name = str(body.get("model") or DEFAULT_MODEL)
    plan = plan_tools(body, model_name)
    if required == "input" or writer is AnthropicWriter:
        answer = _one_choice(script.answer(prompt_text(body), 1, model=model_name, plan=plan))
    else:
        answer = _chat_answer(script, body, n, model_name, plan)
    options = body.get("stream_options")
    meta = Meta(
        suffix=state.next_suffix(),
        model=model_name,
        created=int(time.time()),
        prompt_tokens=count_words(body),
        include_usage=isinstance(options, dict) and bool(options.get("include_usage")),
        tools=body["tools"] if isinstance(body.get("tools"), list) else [],
    )
    headers = {"x-request-id": f"req_{meta.suffix}"}
    if body.get("stream"):
        frames = _play(writer(answer, meta), script, request)
        headers["cache-control"] = "no-cache"
        return StreamingResponse(frames, media_type="text/event-stream", headers=headers)
    return await _whole(whole(answer, meta), answer, script, request, headers)


def _chat_answer(
    script: MockScript, body: dict[str, Any], n: int | None, model: str, plan: ToolPlan | None
) -> Answer:
    """The answer to a chat request: a prefilled one continues (:mod:`.prefill`)."""
    prefill = find_prefill(body)
    if prefill is not None:
        answer = continue_answer(
            script.answer(prefill.prompt, n, model=model), prefill, script.continue_overlap
        )
        if answer is not None:
            return answer
    return script.answer(prompt_text(body), n, model=model, plan=plan)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _one_choice(answer: Answer) -> Answer:
    return Answer(answer.text, answer.reasoning, answer.tool_calls, 1, answer.finish_reason)


def _error(
    status: int, message: str | None = None, code: str | None = None, headers: Any = None
) -> Response:
    return JSONResponse({"error": error_object(status, message, code)}, status, headers)


def _failure(script: MockScript, status: int) -> Response:
    headers: dict[str, str] = {}
    retry_after = script.retry_after
    if retry_after is None and status == 429:
        retry_after = 1.0
    if retry_after is not None:
        headers["retry-after"] = str(max(0, round(retry_after)))
        headers["retry-after-ms"] = str(round(retry_after * 1000))
    return _error(status, script.error_message, script.error_code, headers)


async def _play(writer: StreamWriter, script: MockScript, request: Request) -> AsyncIterator[bytes]:
    """Stream the writer's frames, with the script's timing and faults."""
    tokens = 0
    stalled = broken = False
    for frame in writer.frames():
        if frame.check:
            if not stalled and script.stall and tokens == script.stall_after:
                stalled = True
                await asyncio.sleep(script.stall)
            if tokens == script.drop_after:
                await _drop(request, script.drop_reset)
                return
            if tokens == script.error_after:
                error = error_object(500, script.error_message, script.error_code)
                yield encode(writer.error(error))
                return
            if not broken and tokens == script.malformed_after:
                broken = True
                yield encode(malformed(frame))
        if frame.token:
            # interval 0 still yields to the loop, so long streams share it fairly
            await asyncio.sleep(script.interval if tokens else 0)
            tokens += 1
        yield encode(frame)


async def _whole(
    body: dict[str, Any],
    answer: Answer,
    script: MockScript,
    request: Request,
    headers: dict[str, str],
) -> Response:
    """Answer in one body, after the time streaming would have taken, faults applied."""
    tokens = answer.tokens_per_choice * answer.n
    delay = script.interval * max(0, tokens - 1)
    if script.stall and script.stall_after <= tokens:
        delay += script.stall
    if delay:
        await asyncio.sleep(delay)
    if script.drop_after is not None and script.drop_after <= tokens:
        await _drop(request, script.drop_reset)
        return Response(status_code=500)  # never sent: the connection is gone
    if script.error_after is not None and script.error_after <= tokens:
        return _error(500, script.error_message, script.error_code, headers)
    if script.malformed_after is not None and script.malformed_after <= tokens:
        text = malformed(Frame(json.dumps(body))).payload
        return Response(text, media_type="application/json", headers=headers)
    return JSONResponse(body, headers=headers)


class ConnectionDropped(Exception):
    """Raised to make a server without a connection record drop the connection."""


async def _drop(request: Request, reset: bool) -> None:
    record: RequestRecord | None = request.scope.get("state", {}).get(REQUEST_KEY)
    connection = record.connection if record is not None else None
    if record is None or connection is None:
        raise ConnectionDropped("mock fault: dropping the connection")
    state = mock_state(request.app)
    state.recorder.update(record, outcome="dropped", ended_at=time.monotonic())
    connection._drop(reset)
    # Wait for the socket to close before anything else can be written to it.
    await state.recorder.wait_for_async(lambda: connection.closed_at, _DROP_WAIT)
