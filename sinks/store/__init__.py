"""The transcript store: every stream with its request, events, final message and status.

SQLAlchemy 2 async: SQLite through aiosqlite by default (a file, created on
first use), PostgreSQL by URL (``postgresql+asyncpg://...``). Writes are
batched off the hot path and retried; a stream is finalized exactly once,
whatever ends it. See :class:`Store`.

Modules: ``tables``, ``batch_writer`` (the batched writer), ``store_sink`` (the
observer attached to a run), ``queries`` (reading), ``transcript_store``
(:class:`Store`), ``recordings`` (to and from JSON Lines files), ``migrations``
(Alembic, run on ``open()``).
"""

from __future__ import annotations

from sinks.store.batch_writer import StoreSettings
from sinks.store.queries import StreamSummary, Transcript
from sinks.store.store_sink import TranscriptSink, scrub_request
from sinks.store.tables import STATUSES, Status
from sinks.store.transcript_store import (
    DEFAULT_URL,
    ENV_URL,
    Store,
    StoreNotWritableError,
    create_engine,
    resolve_url,
)

__all__ = [
    "DEFAULT_URL",
    "ENV_URL",
    "STATUSES",
    "Status",
    "Store",
    "StoreNotWritableError",
    "StoreSettings",
    "StreamSummary",
    "Transcript",
    "TranscriptSink",
    "create_engine",
    "resolve_url",
    "scrub_request",
]
