"""The batched writer: a bounded in-memory queue drained by one background task.

Producers (the sinks) call :meth:`BatchWriter.put_event` and
:meth:`BatchWriter.put_control` from ``on_next``: both append to a deque and
return at once; nothing awaits, nothing blocks the stream. The writer task
wakes every ``flush_interval`` seconds, when ``batch_size`` events are
waiting, or when :meth:`BatchWriter.flush` asks, and writes one transaction
per batch:

1. new stream rows (``INSERT ... ON CONFLICT DO NOTHING``),
2. the batch's events, a row per run (:func:`run_rows`): a stream's
   consecutive events of one type in the batch are one row, its ``data`` the
   JSON array of theirs (``INSERT ... ON CONFLICT (stream_id, seq) DO UPDATE``
   only for a longer run, below),
3. the final updates whose events are all written by now (an upsert).

The queue still holds one entry per event (the fair share, ``max_buffer``
and the drops count events); the runs are made at write time, because a row
per run rather than per event is fewer inserts for the database.

Everything put is numbered; a final update is numbered after its stream's
events, and a batch takes only the control records numbered before its last
event's successor, so a stream's final row is written in the same
transaction as its last events, or after. A batch leaves the queue only once
its transaction has committed; a retried batch is written again and the
``ON CONFLICT`` clauses make that harmless, so nothing is lost and nothing is
stored twice. A retried batch starts at the same event (the queue's head) but
may take more (the backlog grew): each stream's rows start at the same
``seq`` as before and its last run may be longer, so a row written again
replaces the stored one only when it ends later.

A database that is up but behind (a flood of events: a stream whose reader
or upstream is much faster than the others) is caught up in two ways. A batch
takes ``batch_size`` events, or, with ``max_batch_factor`` above 1, a quarter
of the backlog up to ``batch_size * max_batch_factor``, so a long queue is
written in fewer, larger transactions (a larger batch is longer work on the
event loop between two of its turns). And once the backlog passes half of
``max_buffer``, a stream that puts an event while it has more than its fair
share queued (the backlog divided among the streams with events queued)
holds its flow gate (:class:`pipeline.core.flow_control.FlowGate`, given
with :class:`StreamShare`): its source stops reading its upstream until the
backlog is down to a quarter of ``max_buffer``. A flood slows itself, the
others go on, and nothing is dropped while the database keeps up at all.
While writes fail (below) nobody is held, and those held are released: a
database outage must not stall the streams.

Failures. An error that may pass (SQLite ``database is locked``, a lock or
statement timeout, a dropped connection, a server restarting: see
:func:`is_retryable`) is retried with exponential backoff, capped at
``retry_max``. Meanwhile events queue up to ``max_buffer``; past that new
events are dropped, counted in :attr:`BatchWriter.dropped` (and passed to the
``on_drop`` hook) and a warning is logged once per spell. Stream rows and
final updates are kept apart from the events and never dropped: a stream is
always finalized, even if some of its events were lost. A failed write is
logged as an error (the 1st, 2nd, 4th... retry) and ``on_available(False)``
is called at the first, ``on_available(True)`` once a write succeeds again;
``on_hold`` is called with the number of streams held each time it
changes (a metric: how often the store slows its producers). ``precheck``
runs before each write (the store's: its SQLite file is still there). Any
other error (a value the database refuses) makes the writer retry the batch
one record at a time (an event as a row of its own), so one bad record costs
only itself (counted in :attr:`failed`).

The task, ``flush``/``close`` and the retry loop are
:class:`sinks._drain_writer.DrainWriter`'s (the Redis publisher's too); this
module says what a batch is and how it is written.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from pydantic import Field
from pydantic_core import PydanticSerializationError
from sqlalchemy import Table, func
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pipeline.core.events import Event, EventBase, Finished, event_json, load_event
from pipeline.core.flow_control import FlowGate
from pipeline.core.result import Accumulator, Result
from sinks._drain_writer import DrainWriter, DropHook, RetrySettings
from sinks.store.tables import Status, events_table, streams_table

__all__ = [
    "EVENT_COLUMNS",
    "BatchWriter",
    "DropHook",
    "EventRow",
    "RetryHook",
    "RunRow",
    "StoreSettings",
    "StreamClose",
    "StreamOpen",
    "StreamShare",
    "event_row",
    "final_values",
    "is_retryable",
    "now",
    "run_rows",
]

log = logging.getLogger(__name__)

RetryHook = Callable[[BaseException, int], None]
"""Called with the error and the attempt number each time a write is retried."""


class StoreSettings(RetrySettings):
    """How the store batches, buffers and retries; every field has a default."""

    flush_interval: float = Field(default=0.25, gt=0, description="seconds between flushes")
    batch_size: int = Field(
        default=2000, ge=1, description="events per transaction; a full batch flushes"
    )
    max_buffer: int = Field(
        default=50_000, ge=1, description="events held in memory; more are dropped"
    )
    max_batch_factor: int = Field(
        default=1, ge=1, description="a batch grows with the backlog up to this many batch_size"
    )
    retry_max: float = Field(default=5.0, gt=0, description="cap of the exponential backoff")
    lock_timeout: float = Field(
        default=5.0, gt=0, description="seconds a write waits for a lock (SQLite busy timeout, PG)"
    )
    close_timeout: float = Field(
        default=30.0, ge=0, description="seconds close() waits for the flush"
    )
    owner: str = Field(
        default_factory=socket.gethostname,
        description="who writes: open() marks this owner's running streams interrupted",
    )


class StreamShare:
    """One stream's events in the writer's queue, and its flow gate (see the module).

    The store's sink makes one per stream and passes it with each event.
    """

    __slots__ = ("gate", "holding", "queued")

    def __init__(self, gate: FlowGate | None = None) -> None:
        self.gate = gate
        self.queued = 0  # events of this stream in the queue
        self.holding = False  # whether the writer holds the gate


@dataclass(slots=True)
class StreamOpen:
    """A new stream's row (status ``running``), put at its first event."""

    stream_id: str
    created_at: datetime
    model: str | None
    request: Any
    n: int = 0

    def row(self, owner: str) -> dict[str, Any]:
        return {
            "id": self.stream_id,
            "created_at": self.created_at,
            "owner": owner,
            "model": self.model,
            "request": self.request,
            "status": "running",
        }


@dataclass(slots=True)
class StreamClose:
    """A stream's final update, put once, after its terminal event (or instead of it)."""

    stream_id: str
    created_at: datetime
    status: Status
    accumulator: Accumulator
    finished_at: datetime
    terminal: EventBase | None = None
    error: dict[str, Any] | None = None
    duration: float | None = None
    n: int = 0
    _row: dict[str, Any] | None = field(default=None, repr=False)

    def row(self, owner: str) -> dict[str, Any]:
        """The row's values; computed (the text joined) once, in the writer."""
        if self._row is None:
            result = self.accumulator.result()
            values = final_values(
                result,
                self.status,
                self.finished_at,
                terminal=self.terminal,
                error=self.error,
                duration=self.duration,
            )
            self._row = {"id": self.stream_id, "created_at": self.created_at, "owner": owner}
            self._row.update(values)
        return self._row


def final_values(
    result: Result,
    status: Status,
    finished_at: datetime,
    *,
    terminal: EventBase | None = None,
    error: dict[str, Any] | None = None,
    duration: float | None = None,
) -> dict[str, Any]:
    """The final columns of a stream row from its accumulated :class:`Result`."""
    finish_reason = terminal.finish_reason if isinstance(terminal, Finished) else None
    if finish_reason is None and result.choices:
        finish_reason = result.choices[0].finish_reason
    texts = [c.content for c in result.choices if c.content]
    # PostgreSQL text cannot hold NUL; this column only serves the text search.
    content = "\n\n".join(texts).replace("\x00", "") if texts else None
    return {
        "status": status,
        "model": result.model,
        "finish_reason": finish_reason,
        "choices": [c.model_dump(mode="json") for c in result.choices],
        "content": content,
        "usage": result.usage,
        "error": error if error is not None else result.error,
        "cancel_reason": result.cancel_reason,
        "first_token_at": result.first_token_at,
        "duration": result.duration if result.duration is not None else duration,
        "event_count": result.events,
        "finished_at": finished_at,
    }


EventRow = tuple[str, int, float, str, str]
"""An event's values, as queued: ``stream_id``, ``seq``, ``t``, ``type`` and its JSON."""

RunRow = tuple[str, int, float, str, str, int | None]
"""A row of ``rxllm_events`` in :data:`EVENT_COLUMNS` order: one event, or a run of them."""


def event_row(stream_id: str, event: Event) -> EventRow:
    """An event's values: its place, its kind and its JSON.

    The JSON is :func:`pipeline.core.events.dump_event`'s (called through
    ``event_json``: the hub has just made it for the same event).
    """
    return (stream_id, event.seq, event.t, event.type, event_json(event).decode())


EVENT_COLUMNS = ("stream_id", "seq", "t", "type", "data", "last_seq")


def run_rows(events: Iterable[EventRow]) -> list[RunRow]:
    """The rows of ``events`` (in queue order): a row per run of a stream's events.

    A run is a stream's consecutive events of one type, its ``seq`` rising; an
    event of another type of that stream ends it, events of other streams in
    between do not. A run of one event is the event's own row (``last_seq``
    ``None``, ``data`` its JSON object); a longer one is a row from its first
    event's ``seq`` and ``t`` to ``last_seq``, its ``data`` the JSON array of
    the events' JSON texts, each kept as it is.
    """
    runs: list[list[EventRow]] = []
    current: dict[str, list[EventRow]] = {}  # each stream's run so far
    for row in events:
        run = current.get(row[0])
        if run is not None and run[-1][3] == row[3] and run[-1][1] < row[1]:
            run.append(row)
        else:
            run = current[row[0]] = [row]
            runs.append(run)
    return [_run_row(run) for run in runs]


def _run_row(run: list[EventRow]) -> RunRow:
    first = run[0]
    if len(run) == 1:
        return (*first, None)
    data = "[" + ",".join([row[4] for row in run]) + "]"
    return (first[0], first[1], first[2], first[3], data, run[-1][1])


_RETRY_SQLSTATES = frozenset(
    {
        "40001",  # serialization failure
        "40P01",  # deadlock detected
        "55P03",  # lock not available (lock_timeout)
        "57014",  # query canceled (statement_timeout)
        "57P01",  # admin shutdown
        "57P02",  # crash shutdown
        "57P03",  # cannot connect now (starting up)
    }
)
_RETRY_SQLSTATE_CLASSES = frozenset({"08", "53"})  # connection exception, insufficient resources


def is_retryable(error: BaseException) -> bool:
    """Whether a failed write may succeed later (locks, timeouts, lost connections)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current,
            sa_exc.OperationalError
            | sa_exc.InterfaceError
            | sa_exc.DisconnectionError
            | sa_exc.TimeoutError
            | TimeoutError
            | OSError,
        ):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        state = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(state, str) and (
            state in _RETRY_SQLSTATES or state[:2] in _RETRY_SQLSTATE_CLASSES
        ):
            return True
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False


_Queued = tuple[int, EventRow, StreamShare | None]
"""A queued event: its number, its row, the stream's share.

The row is made when the event is put (its JSON is the hub's, made in the same
emit: :func:`pipeline.core.events.event_json` keeps it): the event itself is not
held until the flush, and a row of plain values is no work for the garbage collector.
"""


@dataclass(slots=True)
class _Batch:
    events: list[_Queued]
    opens: list[StreamOpen]
    closes: list[StreamClose]
    controls: int
    boundary: int

    def __len__(self) -> int:
        return len(self.events) + self.controls


class BatchWriter(DrainWriter[_Batch]):
    """Owns the queue and the task that drains it into the database; see the module."""

    _log = log
    _what = "the transcript store writer"
    _task_name = "rxllm-store-writer"

    def __init__(
        self,
        engine: AsyncEngine,
        settings: StoreSettings,
        *,
        on_drop: DropHook | None = None,
        on_retry: RetryHook | None = None,
        on_available: Callable[[bool], None] | None = None,
        on_hold: Callable[[int], None] | None = None,
        precheck: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(settings.retry_backoff, on_drop=on_drop)
        self._engine = engine
        self._settings = settings
        self._on_retry = on_retry
        self._on_available = on_available
        self._on_hold = on_hold
        self._precheck = precheck
        self._events: deque[_Queued] = deque()
        self._active = 0  # streams with events queued
        self._holding: list[StreamShare] = []  # the streams whose gate the writer holds
        self._hold_at = max(settings.max_buffer // 2, 1)
        self._release_at = settings.max_buffer // 4
        self._writing = True  # False from a failed write until one succeeds
        self._controls: deque[StreamOpen | StreamClose] = deque()
        dialect = engine.dialect.name
        self._insert_streams = _insert(dialect, streams_table).on_conflict_do_nothing(
            index_elements=["id"]
        )
        # Events go through the driver's executemany with the statement compiled
        # once: SQLAlchemy's per-row parameter processing (a dict per row, the
        # JSON column's json.dumps) costs more than the database's own insert.
        compiled = _insert_runs(dialect).compile(dialect=engine.dialect)
        if tuple(compiled.positiontup or ()) != EVENT_COLUMNS:
            raise RuntimeError(f"unexpected parameter order {compiled.positiontup}")
        self._insert_events_sql = str(compiled)
        upsert = _insert(dialect, streams_table)
        excluded = upsert.excluded
        self._upsert_final = upsert.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "status": excluded.status,
                "model": func.coalesce(streams_table.c.model, excluded.model),
                "finish_reason": excluded.finish_reason,
                "choices": excluded.choices,
                "content": excluded.content,
                "usage": excluded.usage,
                "error": excluded.error,
                "cancel_reason": excluded.cancel_reason,
                "first_token_at": excluded.first_token_at,
                "duration": excluded.duration,
                "event_count": excluded.event_count,
                "finished_at": excluded.finished_at,
            },
        )

    # -- the hot path: called from on_next, never awaits --------------------

    @property
    def pending(self) -> int:
        """Events waiting in memory."""
        return len(self._events)

    def put_event(self, stream_id: str, event: Event, share: StreamShare | None = None) -> bool:
        """Queue an event's row; ``False`` if it was dropped (buffer full or writer
        closed) or is not JSON (a custom operator's value: logged, counted in :attr:`failed`).

        With ``share`` (the stream's), a stream over its fair share of a long
        backlog holds its flow gate (see the module).
        """
        events = self._events
        if self._closed or len(events) >= self._settings.max_buffer:
            self._drop(
                "transcript store buffer full (%d events, the database is slow or down): "
                "dropping events, starting with seq %d of stream %s; %d dropped so far",
                len(self._events),
                event.seq,
                stream_id,
                self.dropped + 1,
            )
            return False
        try:
            row = event_row(stream_id, event)
        except PydanticSerializationError as error:
            self.failed += 1
            log.error(
                "event %d of stream %s is not JSON; it is not stored: %s",
                event.seq,
                stream_id,
                _first_line(error),
            )
            return False
        self._accepted += 1  # _accept(), inline
        events.append((self._accepted, row, share))
        if share is not None:
            share.queued += 1
            if share.queued == 1:
                self._active += 1
            elif len(events) >= self._hold_at and share.queued * self._active >= len(events):
                self._hold(share)
        if len(events) >= self._settings.batch_size:
            self._wakeup.set()
        return True

    def _hold(self, share: StreamShare) -> None:
        """Hold the gate of a stream over its share of the backlog, while writes succeed."""
        if share.holding or share.gate is None or not self._writing or self._closed:
            return
        if not self._holding:
            log.info(
                "the transcript store is behind (%d events queued): holding the streams "
                "with the most events queued until it catches up",
                len(self._events),
            )
        share.holding = True
        share.gate.hold()
        self._holding.append(share)
        if self._on_hold is not None:
            self._on_hold(len(self._holding))

    def _release(self) -> None:
        """Release every gate the writer holds."""
        holding, self._holding = self._holding, []
        for share in holding:
            share.holding = False
            if share.gate is not None:
                share.gate.release()
        if holding and self._on_hold is not None:
            self._on_hold(0)

    def put_control(self, record: StreamOpen | StreamClose) -> None:
        """Queue a stream row or a final update: never dropped while the writer runs."""
        if self._closed:
            self.failed += 1
            log.error(
                "the transcript store is closed: the %s of stream %s is not written",
                "final update" if isinstance(record, StreamClose) else "row",
                record.stream_id,
            )
            return
        record.n = self._accept()
        self._controls.append(record)

    def pending_events(self, stream_id: str) -> list[Event]:
        """The events of ``stream_id`` still in memory, oldest first (read from their rows)."""
        return [load_event(row[4]) for _, row, _ in self._events if row[0] == stream_id]

    # -- the drain (see sinks._drain_writer) -------------------------------------

    async def close(self, grace: float) -> None:
        """Flush (for at most ``grace`` seconds), stop the task, release every gate held."""
        try:
            await super().close(grace)
        finally:
            self._release()

    def _lost(self, grace: float) -> None:
        log.error(
            "the transcript store could not write within %.1f s; %d events and "
            "%d stream updates are lost",
            grace,
            len(self._events),
            len(self._controls),
        )

    def _wait_timeout(self) -> float:
        return self._settings.flush_interval

    def _retryable(self, error: Exception) -> bool:
        return is_retryable(error)

    def _take(self) -> _Batch:
        settings = self._settings
        backlog = len(self._events)
        size = max(
            settings.batch_size, min(backlog // 4, settings.batch_size * settings.max_batch_factor)
        )
        events = list(islice(self._events, size))  # a deque's index is not O(1)
        # Control records up to the first event left out belong to this batch.
        more = len(self._events) > len(events)
        boundary = self._events[len(events)][0] - 1 if more else self._accepted
        opens: list[StreamOpen] = []
        closes: list[StreamClose] = []
        for record in self._controls:
            if record.n > boundary:
                break
            if isinstance(record, StreamOpen):
                opens.append(record)
            else:
                closes.append(record)
        return _Batch(events, opens, closes, len(opens) + len(closes), boundary)

    def _retrying(self, error: Exception, attempt: int, batch: _Batch) -> None:
        self._writing = False
        if self._holding:  # the database is down, not behind: hold nobody
            self._release()
        if attempt == 1 and self._on_available is not None:
            self._on_available(False)
        if attempt == 1 or attempt & (attempt - 1) == 0:  # the 1st, 2nd, 4th, 8th... time
            log.error(
                "the transcript store could not write %d records (attempt %d, %d events "
                "waiting): %s; retrying",
                len(batch),
                attempt,
                len(self._events),
                _first_line(error),
            )
        if self._on_retry is not None:
            try:
                self._on_retry(error, attempt)
            except Exception:
                log.exception("the store's on_retry hook failed")

    def _written(self, retries: int) -> None:
        self._writing = True
        if retries and self._on_available is not None:
            self._on_available(True)
        if retries:
            log.warning("the transcript store writes again after %d retries", retries)

    def _commit(self, batch: _Batch) -> int:
        popleft = self._events.popleft
        for _ in range(len(batch.events)):
            share = popleft()[2]
            if share is not None:
                share.queued -= 1
                if share.queued == 0:
                    self._active -= 1
        if self._holding and len(self._events) <= self._release_at:
            self._release()
        for _ in range(batch.controls):
            self._controls.popleft()
        if self._overflowing and len(self._events) < self._settings.max_buffer:
            self._overflowing = False
            log.warning(
                "the transcript store buffer has room again; %d events dropped in all",
                self.dropped,
            )
        return batch.boundary

    async def _write(self, batch: _Batch) -> None:
        if self._precheck is not None:
            await self._precheck()  # e.g. the SQLite file is still the one opened
        try:
            async with self._engine.begin() as conn:
                await self._execute(conn, batch.opens, batch.events, batch.closes)
        except Exception as error:
            if is_retryable(error):
                raise
            log.error(
                "the database refused a batch of %d records (%s); writing them one at a time",
                len(batch),
                _first_line(error),
            )
            await self._write_each(batch)

    async def _write_each(self, batch: _Batch) -> None:
        """Write each record in its own transaction; a refused one is logged and skipped."""
        for opens, events, closes in _singles(batch):
            try:
                async with self._engine.begin() as conn:
                    await self._execute(conn, opens, events, closes)
            except Exception as error:
                if is_retryable(error):
                    raise
                self.failed += 1
                if opens:
                    what = f"the row of stream {opens[0].stream_id}"
                elif events:
                    what = f"event {events[0][1][1]} of stream {events[0][1][0]}"
                else:
                    what = f"the final update of stream {closes[0].stream_id}"
                log.error("the database refused %s; it is not stored: %s", what, _first_line(error))

    async def _execute(
        self,
        conn: AsyncConnection,
        opens: list[StreamOpen],
        events: list[_Queued],
        closes: list[StreamClose],
    ) -> None:
        owner = self._settings.owner
        if opens:
            await conn.execute(self._insert_streams, [record.row(owner) for record in opens])
        if events:
            rows = run_rows([row for _, row, _ in events])
            await conn.exec_driver_sql(self._insert_events_sql, rows)
        if closes:
            await conn.execute(self._upsert_final, [record.row(owner) for record in closes])


def _singles(
    batch: _Batch,
) -> Iterator[tuple[list[StreamOpen], list[_Queued], list[StreamClose]]]:
    for record in batch.opens:
        yield [record], [], []
    for item in batch.events:
        yield [], [item], []
    for final in batch.closes:
        yield [], [], [final]


def _insert_runs(dialect: str) -> sqlite.Insert | postgresql.Insert:
    """The events' insert: a row already there is replaced only by one that ends later.

    A retried batch writes its rows again: the same rows, or a stream's last
    run longer (see the module). Rows of one event (``last_seq`` NULL) end at
    their ``seq``.
    """
    insert = _insert(dialect, events_table)
    excluded, stored = insert.excluded, events_table.c
    ends_later = func.coalesce(excluded.last_seq, excluded.seq) > func.coalesce(
        stored.last_seq, stored.seq
    )
    return insert.on_conflict_do_update(
        index_elements=["stream_id", "seq"],
        set_={"last_seq": excluded.last_seq, "data": excluded.data},
        where=ends_later,
    )


def _insert(dialect: str, table: Table) -> sqlite.Insert | postgresql.Insert:
    """The dialect's ``insert`` construct, which has ``ON CONFLICT``."""
    if dialect == "sqlite":
        return sqlite.insert(table)
    if dialect == "postgresql":
        return postgresql.insert(table)
    raise ValueError(
        f"the transcript store supports SQLite and PostgreSQL, not {dialect!r}: "
        "use a sqlite+aiosqlite:// or postgresql+asyncpg:// URL"
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def now() -> datetime:
    """The current UTC time (aware)."""
    return datetime.now(UTC)
