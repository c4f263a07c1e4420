"""The Vercel AI SDK ``useChat`` routes: answer, resume, stop.

* ``POST /api/chat`` -- ``DefaultChatTransport``'s request (``id``, UI
  ``messages``, ``trigger``, ``messageId``): the messages are converted as
  the SDK's ``convertToModelMessages`` does
  (:mod:`pipeline.apps.server.ui_messages`), the tools the deployment
  declares (``[[tools]]`` in ``--config``) are offered to the model, and
  the answer streams back as the UI message stream (``vercel`` dialect:
  text, reasoning, ``tool-input-start/delta/available``). An answer that
  continues an assistant message (after tool outputs, the SDK's
  ``sendAutomaticallyWhen``) keeps that message's id.
* ``GET /api/chat/{id}/stream`` -- the SDK's ``resume: true`` reconnect: the
  chat's running answer from its start (the SDK's default
  ``resumeStreamIsReplay``), then live; 204 when none is running.
* ``POST /api/chat/{id}/stop`` -- cancels the chat's running answer (the
  upstream request is closed); ``{"stopped": false}`` when none was running.

Where it knowingly differs from ``/v1/chat/completions``: a request with a
chat ``id`` is resumable, so the answer does not stop when its client
leaves (a page reload is a disconnect too). It goes on for the server's
orphan timeout (``orphan_timeout``, 5 s by default) waiting for a reader to
resume it, and is cancelled then if none did. A stop button must therefore
call the stop route besides ``useChat``'s ``stop()``, which only closes the
connection. A request without ``id`` is cancelled when its client leaves.
Tools run in the browser (``onToolCall`` / ``addToolOutput``): the stream
carries no ``tool-output-*`` parts. With several processes sharing Redis
(``--redis``), resume and stop work on any of them: a chat's last answer is
recorded there, read from there while it runs, and cancelled through it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pipeline.apps.server.api_errors import ApiError
from pipeline.apps.server.gateway import Gateway
from pipeline.apps.server.remote_resume import open_resume
from pipeline.apps.server.request_bodies import (
    UIChatRequest,
    continue_header,
    header_timeouts,
    read_json,
    to_openai_messages,
    validate,
)
from pipeline.core.events import Event
from pipeline.runtime.async_bridges import finally_call
from pipeline.runtime.stream_hub import ResumeGapError, StreamNotFoundError
from sinks.dialects import VercelDialect
from sinks.redis_bus.bus_errors import BusUnavailableError
from sinks.sse_response import SSEResponse

__all__ = ["UseChat"]


class UseChat:
    """The ``useChat`` route handlers, bound to one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def answer(self, request: Request) -> Response:
        """``POST /api/chat``."""
        gw = self.gateway
        body = await read_json(
            request,
            gw.settings.max_body,
            read_timeout=gw.settings.body_timeout,
            on_timeout=lambda: gw.metrics.inc_connection_closed("body_timeout"),
        )
        ui = validate(UIChatRequest, body)
        model = ui.model or gw.default_model()
        models = gw.models
        if models is not None and model not in models:
            raise ApiError(404, f"the model '{model}' does not exist", param="model")
        chat_id = body.get("id")
        if chat_id is not None and not (isinstance(chat_id, str) and chat_id):
            raise ApiError(400, "invalid field 'id': the chat id must be a string", param="id")
        params: dict[str, Any] = {"model": model, "messages": to_openai_messages(ui.messages)}
        tools = gw.chat_tools or None
        if tools:
            params["tools"] = tools
        last = ui.messages[-1]
        # Continuing an assistant message (after tool outputs): the answer joins it.
        message_id = last.get("id") if last.get("role") == "assistant" else None
        message_id = message_id if isinstance(message_id, str) else None
        timeouts: dict[str, Any] = {**header_timeouts(request), "route": request.url.path}
        run = gw.open_stream(
            params, tools=tools, continue_after_first_token=continue_header(request), **timeouts
        )
        stream_id = run.stream_id or ""
        if chat_id is not None:
            gw.chat_started(chat_id, stream_id, message_id)
            if gw.bus is not None:  # so that any process can resume or stop it
                await gw.bus.register(stream_id)
                with contextlib.suppress(BusUnavailableError):
                    await gw.bus.remember_chat(chat_id, stream_id, message_id)
        events = run.iterate()
        run.start()
        if chat_id is not None:

            def left(reason: str) -> None:
                gw.watch_orphan(stream_id)  # resumable: cancelled if nobody resumes it

            on_disconnect = left
        else:
            on_disconnect = run.cancel
        return SSEResponse(
            events,
            dialect=VercelDialect(message_id=message_id),
            on_disconnect=on_disconnect,
            heartbeat=gw.settings.heartbeat,
            send_timeout=gw.settings.send_timeout,
            headers={"x-rxllm-stream-id": stream_id},
        )

    async def resume(self, request: Request) -> Response:
        """``GET /api/chat/{chat_id}/stream``."""
        gw = self.gateway
        chat_id = request.path_params["chat_id"]
        found = gw.chat_stream(chat_id)
        if found is None:
            return await self._resume_elsewhere(chat_id)
        stream_id, message_id = found
        try:
            events = gw.hub.events(stream_id)
        except (StreamNotFoundError, ResumeGapError):
            # Ended meanwhile, or too long to replay from its start.
            return Response(status_code=204)
        gw.reader_attached(stream_id)
        read = finally_call(events, lambda: gw.reader_detached(stream_id))
        return self._ui_stream(read, stream_id, message_id)

    async def _resume_elsewhere(self, chat_id: str) -> Response:
        """The chat's running answer held by another process (with ``--redis``); 204 if none."""
        gw = self.gateway
        bus = gw.bus
        if bus is None:
            return Response(status_code=204)
        try:
            found = await bus.chat(chat_id)
            if found is None or found[0] in gw.hub:  # unknown, or ours and ended
                return Response(status_code=204)
            stream_id, message_id = found
            if await bus.owner_of(stream_id) is None:  # ended, or its process is gone
                return Response(status_code=204)
        except BusUnavailableError:
            raise _bus_down("resume") from None
        events = await open_resume(stream_id, None, bus=bus, store=gw.store)
        if events is None:
            return Response(status_code=204)
        bus.reader_attached(stream_id)  # its process must not take it for an orphan
        read = finally_call(events, lambda: bus.reader_detached(stream_id))
        return self._ui_stream(read, stream_id, message_id)

    def _ui_stream(
        self, events: AsyncIterator[Event], stream_id: str, message_id: str | None
    ) -> SSEResponse:
        """A resumed answer as the UI message stream useChat reads."""
        settings = self.gateway.settings
        return SSEResponse(
            events,
            dialect=VercelDialect(message_id=message_id),
            heartbeat=settings.heartbeat,
            send_timeout=settings.send_timeout,
            headers={"x-rxllm-stream-id": stream_id},
        )

    async def stop(self, request: Request) -> Response:
        """``POST /api/chat/{chat_id}/stop``."""
        gw = self.gateway
        chat_id = request.path_params["chat_id"]
        found = gw.chat_stream(chat_id)
        if found is not None:
            stopped = gw.hub.cancel(found[0], "stopped by the user")
            return JSONResponse({"id": chat_id, "stopped": stopped})
        if gw.bus is not None:
            try:
                remote = await gw.bus.chat(chat_id)
                if remote is not None and remote[0] not in gw.hub:
                    outcome = await gw.bus.cancel(remote[0], "stopped by the user", wait=2.0)
                    if outcome == "cancelled":
                        return JSONResponse({"id": chat_id, "stopped": True})
                    if outcome == "requested":  # sent, the end not seen yet
                        return JSONResponse({"id": chat_id, "stopped": False}, status_code=202)
            except BusUnavailableError:
                raise _bus_down("stop") from None
        return JSONResponse({"id": chat_id, "stopped": False})


def _bus_down(what: str) -> ApiError:
    return ApiError(
        503,
        f"cannot reach Redis to {what} a chat answered by another process; retry",
        type="server_error",
        code="bus_unavailable",
    )
