"""The transcript store's tables: SQLAlchemy 2 declarative models.

Two tables, prefixed so they can live in an application's own database:

* ``rxllm_streams`` -- one row per stream: when it was created, its request
  (scrubbed of credentials), its status (``running`` until its final update),
  the assembled final message per choice, usage, timings and error;
* ``rxllm_events`` -- the events of a stream, keyed by ``(stream_id, seq)``.
  A row holds one event (``last_seq`` NULL, ``data`` its JSON object) or a
  run of a stream's consecutive events of one type, ``seq`` to ``last_seq``
  (``data`` a JSON array of their objects, ``t`` the first one's): a row per
  run rather than per event is fewer inserts for the writer.
  :func:`sinks.store.queries.load_events` reads both. Writing a row again (a
  retried batch) stores it once, or replaces it with a longer run from the
  same ``seq``.

The schema is created and changed only by the Alembic migrations in
``sinks/store/migrations``; a test checks that these models and the
migrations agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "STATUSES",
    "Base",
    "EventRow",
    "Status",
    "StreamRow",
    "UTCDateTime",
    "events_table",
    "metadata",
    "streams_table",
]

Status = Literal["running", "finished", "error", "cancelled", "interrupted"]
STATUSES: tuple[Status, ...] = ("running", "finished", "error", "cancelled", "interrupted")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite has no time zones: values are stored as UTC and read back aware.
    A naive value given to a query is taken to be UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC) if dialect.name != "sqlite" else value
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = metadata


class StreamRow(Base):
    """One stream: its request, how it ended and its final message."""

    __tablename__ = "rxllm_streams"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    owner: Mapped[str] = mapped_column(String(255))
    model: Mapped[str | None] = mapped_column(String(255), index=True)
    request: Mapped[Any] = mapped_column(JSON, nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    finish_reason: Mapped[str | None] = mapped_column(String(64))
    choices: Mapped[Any] = mapped_column(JSON, nullable=True)
    content: Mapped[str | None] = mapped_column(Text)
    usage: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[Any] = mapped_column(JSON, nullable=True)
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    first_token_at: Mapped[float | None] = mapped_column(Float)
    duration: Mapped[float | None] = mapped_column(Float)
    event_count: Mapped[int | None] = mapped_column(Integer)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (Index(None, "owner", "status"),)


class EventRow(Base):
    """An event of a stream, or a run of them (``last_seq`` set); ``(stream_id, seq)`` is unique."""

    __tablename__ = "rxllm_events"

    stream_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("rxllm_streams.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    t: Mapped[float] = mapped_column(Float)
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[Any] = mapped_column(JSON)
    last_seq: Mapped[int | None] = mapped_column(Integer)


streams_table: Table = metadata.tables["rxllm_streams"]
events_table: Table = metadata.tables["rxllm_events"]
