"""The inspector of ``rxllm serve``: a page and the JSON it reads, for live and stored streams.

Routes:

* ``GET /inspect`` -- the page (plain HTML and JS, no build step): a list of
  streams, filtered, updated every second; a stream's timeline, timing,
  final message and request, with a replay in the page.
* ``GET /v1/inspect/streams`` -- the streams, newest first: this process's
  live ones (from the hub) and the transcript store's (every process's,
  ``running`` ones included); with the store off, the hub's recently
  finished ones too. Query: ``model``, ``status``, ``q`` (text in
  the answer), ``since`` / ``until`` (ISO 8601), ``limit`` (at most 500).
* ``GET /v1/inspect/streams/{id}`` -- one stream: its summary, its events so
  far, its request (credentials removed) and, while it is live, the
  ``events_url`` that follows it (``GET /v1/streams/{id}/events``: this
  process's hub, another process's through Redis, else the store), with a
  read capability when the server has an ``--auth-token``.

The API routes need the bearer token like every other; the page itself holds
no data and passes without it (it asks for the token once per tab). Requests
are shown through :func:`sinks.store.scrub_request` even when the store already
scrubbed them; events carry no credentials (error messages are scrubbed where
they are made).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from pipeline.apps.server.api_errors import ApiError
from pipeline.apps.server.bearer_auth import read_query
from pipeline.apps.server.gateway import Gateway
from pipeline.core.events import Event, Started, is_content, is_terminal
from pipeline.core.result import Accumulator
from pipeline.runtime.stream_hub import StreamHub
from sinks.store.store_sink import scrub_request

__all__ = ["INSPECTOR_PATH", "InspectorApi"]

INSPECTOR_PATH = "/inspect"
"""Where the page is served (it passes the bearer-token check: it holds no data)."""

_STATUSES = ("running", "finished", "error", "cancelled", "interrupted")
_HEAD = 32  # events parsed of a live stream for its list row


def _page() -> str:
    page = resources.files("pipeline.apps.server").joinpath("inspector_page.html")
    return page.read_text("utf-8")


def _when(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            400, f"{name} must be an ISO 8601 date and time, got {value!r}", param=name
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _hub_row(hub: StreamHub, stream_id: str, text: str | None) -> dict[str, Any] | None:
    """A list row for a stream of this process's hub (live, or recently finished).

    Only its first events are parsed (the model, the first token), unless a
    text filter needs the answer so far. ``None`` when the filter rules it out
    (or the stream was dropped meanwhile).
    """
    run = hub.get(stream_id)
    if run is None:
        return None
    events = hub.snapshot(stream_id, limit=None if text else _HEAD)
    if text is not None:
        acc = Accumulator()
        for event in events:
            acc.add(event)
        choices = acc.result().choices
        if not choices or text.lower() not in (choices[0].content or "").lower():
            return None
    started = next((e for e in events if isinstance(e, Started)), None)
    first = next((e.t for e in events if is_content(e)), None)
    terminal = run.terminal
    status = str(getattr(terminal, "type", "running")) if terminal is not None else "running"
    last = terminal.t if terminal is not None else (events[-1].t if events else None)
    return {
        "id": stream_id,
        "created_at": None,
        "model": started.model if started else None,
        "status": status,
        "first_token_at": first,
        "duration": last,
        "event_count": hub.buffered(stream_id),
        "live": terminal is None,
    }


def _stream_summary(stream_id: str, events: list[Event]) -> dict[str, Any]:
    """The summary of a stream the store does not hold (yet): from its events."""
    started = next((e for e in events if isinstance(e, Started)), None)
    terminal = next((e for e in reversed(events) if is_terminal(e)), None)
    return {
        "id": stream_id,
        "created_at": None,
        "model": started.model if started else None,
        "status": terminal.type if terminal is not None else "running",
        "first_token_at": next((e.t for e in events if is_content(e)), None),
        "duration": events[-1].t if events else None,
        "event_count": len(events),
    }


class InspectorApi:
    """The inspector's handlers, bound to one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def page(self, request: Request) -> Response:
        return HTMLResponse(_page())

    async def streams(self, request: Request) -> Response:
        gw = self.gateway
        q = request.query_params
        status = q.get("status") or None
        if status is not None and status not in _STATUSES:
            raise ApiError(
                400, f"status must be one of {', '.join(_STATUSES)}, got {status!r}", param="status"
            )
        try:
            limit = int(q.get("limit", "100"))
        except ValueError:
            raise ApiError(400, "limit must be an integer", param="limit") from None
        if not 1 <= limit <= 500:
            raise ApiError(400, "limit must be between 1 and 500", param="limit")
        since, until = _when(q.get("since"), "since"), _when(q.get("until"), "until")
        model, text = q.get("model") or None, q.get("q") or None
        rows: dict[str, dict[str, Any]] = {}
        if gw.store is not None:
            stored = await gw.store.list(
                model=model, status=status, text=text, since=since, until=until, limit=limit
            )
            for item in stored:
                row = item.model_dump(mode="json")
                row["live"] = item.status == "running"
                rows[item.id] = row
        # This process's streams: its live ones (the store may not have them yet), and
        # with the store off, the finished ones the hub still keeps.
        if since is None and until is None:
            for stream_id in gw.hub if gw.store is None else gw.hub.live():
                if stream_id in rows:
                    continue
                row = _hub_row(gw.hub, stream_id, text)
                if row is None or (model is not None and row["model"] != model):
                    continue
                if status is None or row["status"] == status:
                    rows[stream_id] = row
        data = sorted(rows.values(), key=lambda r: (not r["live"], _age(r["created_at"])))
        return JSONResponse({"data": data[:limit], "store": gw.store is not None})

    async def stream(self, request: Request) -> Response:
        gw = self.gateway
        stream_id = request.path_params["stream_id"]
        stored = await gw.store.get(stream_id) if gw.store is not None else None
        here = stream_id in gw.hub
        events: list[Event] = gw.hub.snapshot(stream_id) if here else []
        if gw.store is not None and (not events or events[0].seq > 0):
            # Not here, or its oldest events left the replay buffer: the store has them.
            merged = {e.seq: e for e in await gw.store.events(stream_id)}
            merged.update((e.seq, e) for e in events)
            events = [merged[seq] for seq in sorted(merged)]
        if stored is None and not here and not events:
            raise ApiError(404, f"no stream with id '{stream_id}'", code="stream_not_found")
        body: dict[str, Any] = (
            stored.model_dump(mode="json", exclude={"request", "choices", "content"})
            if stored is not None
            else _stream_summary(stream_id, events)
        )
        ended = any(is_terminal(e) for e in events[-1:])
        running = here or (stored is not None and stored.status == "running")
        body["live"] = running and not ended
        body["events"] = [e.model_dump(mode="json") for e in events]
        body["request"] = scrub_request(stored.request) if stored is not None else None
        events_url = f"v1/streams/{quote(stream_id, safe='')}/events"
        token = gw.settings.auth_token
        if token:
            events_url += "?" + read_query(token, stream_id)
        body["events_url"] = events_url
        return JSONResponse(body)


def _age(value: str | None) -> float:
    """Sorts the newest first; a live stream of this process (no time yet) before all."""
    if value is None:
        return -math.inf
    return -datetime.fromisoformat(value).timestamp()
