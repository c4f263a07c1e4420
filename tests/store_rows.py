"""The rows of ``rxllm_events`` as the tests read them: every event each row holds.

A row is one event or a run of a stream's events of one type
(:mod:`sinks.store.tables`). :func:`stored_events` opens each run into its
events without dropping any repeat (``load_events`` would), so a test that
counts events still sees an event stored twice; it also checks that each row
agrees with what it holds (its ``seq``, ``last_seq`` and ``type``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from sinks.store.tables import events_table

__all__ = ["StoredEvent", "row_events", "stored_events"]

StoredEvent = tuple[str, int, str]
"""An event as stored: its stream, its ``seq`` and its ``type``."""


def row_events(seq: int, last_seq: int | None, kind: str, data: Any) -> list[dict[str, Any]]:
    """The events (as JSON values) of one row; fails if the row is not well formed."""
    if last_seq is None:
        assert isinstance(data, dict), data
        items = [data]
    else:
        assert isinstance(data, list) and len(data) >= 2, data
        assert data[-1]["seq"] == last_seq
        items = data
    assert items[0]["seq"] == seq
    assert all(item["type"] == kind for item in items), (kind, items)
    seqs = [item["seq"] for item in items]
    assert seqs == sorted(set(seqs)), seqs
    return items


async def stored_events(engine: AsyncEngine, stream_id: str | None = None) -> list[StoredEvent]:
    """Every event of every row (of ``stream_id``, else of all streams), in row order."""
    columns = events_table.c
    query = select(columns.stream_id, columns.seq, columns.last_seq, columns.type, columns.data)
    if stream_id is not None:
        query = query.where(columns.stream_id == stream_id)
    query = query.order_by(columns.stream_id, columns.seq)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        (row[0], item["seq"], item["type"])
        for row in rows
        for item in row_events(row[1], row[2], row[3], row[4])
    ]
