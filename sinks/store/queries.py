"""Reading the store: list and filter streams, fetch a transcript, read events.

These functions take an ``AsyncEngine`` (or a connection) and read what is
committed; :class:`sinks.store.Store` wraps them and adds what is still in
its buffer where that matters (``events``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Row, Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pipeline.core.events import Event, load_event
from pipeline.core.result import ChoiceResult
from sinks.store.tables import Status, events_table, streams_table

__all__ = ["StreamSummary", "Transcript", "get_transcript", "list_streams", "load_events"]

_SUMMARY_COLUMNS = [
    streams_table.c.id,
    streams_table.c.created_at,
    streams_table.c.owner,
    streams_table.c.model,
    streams_table.c.status,
    streams_table.c.finish_reason,
    streams_table.c.usage,
    streams_table.c.error,
    streams_table.c.cancel_reason,
    streams_table.c.first_token_at,
    streams_table.c.duration,
    streams_table.c.event_count,
    streams_table.c.finished_at,
]


class StreamSummary(BaseModel):
    """One stored stream, without its request and message.

    ``model`` is the requested model (else the one the provider reported);
    ``first_token_at`` (time to first token) and ``duration`` are seconds
    from the stream's start; ``event_count`` counts the events the sink saw.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    created_at: datetime
    owner: str
    model: str | None = None
    status: Status
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    cancel_reason: str | None = None
    first_token_at: float | None = None
    duration: float | None = None
    event_count: int | None = None
    finished_at: datetime | None = None


class Transcript(StreamSummary):
    """A stream with its (scrubbed) request and its final message per choice."""

    request: dict[str, Any] | None = None
    choices: list[ChoiceResult] = []
    content: str | None = None

    @property
    def message(self) -> ChoiceResult | None:
        """The first choice's final message (``None`` if nothing was assembled)."""
        return self.choices[0] if self.choices else None


Executor = AsyncEngine | AsyncConnection


async def _rows(executor: Executor, query: Select[Any]) -> Sequence[Row[Any]]:
    if isinstance(executor, AsyncConnection):
        rows: Sequence[Row[Any]] = (await executor.execute(query)).all()
        return rows
    async with executor.connect() as conn:
        rows = (await conn.execute(query)).all()
        return rows


async def list_streams(
    executor: Executor,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
    status: Status | Sequence[Status] | None = None,
    text: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[StreamSummary]:
    """Streams created in ``[since, until)``, newest first, filtered.

    ``status`` is one status or several; ``text`` is searched, without regard
    to case, in the final content of every choice (``%`` and ``_`` are taken
    literally). Naive datetimes are taken as UTC.
    """
    query = select(*_SUMMARY_COLUMNS)
    if since is not None:
        query = query.where(streams_table.c.created_at >= since)
    if until is not None:
        query = query.where(streams_table.c.created_at < until)
    if model is not None:
        query = query.where(streams_table.c.model == model)
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        query = query.where(streams_table.c.status.in_(statuses))
    if text:
        query = query.where(streams_table.c.content.icontains(text, autoescape=True))
    query = (
        query.order_by(streams_table.c.created_at.desc(), streams_table.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [StreamSummary.model_validate(row._mapping) for row in await _rows(executor, query)]


async def get_transcript(executor: Executor, stream_id: str) -> Transcript | None:
    """The stored stream ``stream_id`` with its final message, or ``None``."""
    query = select(
        *_SUMMARY_COLUMNS,
        streams_table.c.request,
        streams_table.c.choices,
        streams_table.c.content,
    ).where(streams_table.c.id == stream_id)
    rows = await _rows(executor, query)
    if not rows:
        return None
    values = dict(rows[0]._mapping)
    if values["choices"] is None:
        values["choices"] = []
    return Transcript.model_validate(values)


async def load_events(
    executor: Executor, stream_id: str, after_seq: int | None = None
) -> list[Event]:
    """The stored events of ``stream_id`` in ``seq`` order (only those after ``after_seq``).

    The one reader of ``rxllm_events``: a row is an event or a run of them
    (:mod:`sinks.store.tables`), each run is read event by event. An event is
    returned once, even if two rows hold it (``seq`` must rise).
    """
    columns = events_table.c
    query = select(columns.seq, columns.last_seq, columns.data).where(
        columns.stream_id == stream_id
    )
    if after_seq is not None:
        query = query.where(func.coalesce(columns.last_seq, columns.seq) > after_seq)
    query = query.order_by(columns.seq)
    return _expand(await _rows(executor, query), after_seq)


def _expand(rows: Sequence[Sequence[Any]], after_seq: int | None) -> list[Event]:
    """The events of ``(seq, last_seq, data)`` rows in ``seq`` order, each ``seq`` rising."""
    events: list[Event] = []
    last = after_seq
    for row in rows:
        data = row[2]
        for item in data if row[1] is not None else (data,):
            event = load_event(item)
            if last is None or event.seq > last:
                events.append(event)
                last = event.seq
    return events
