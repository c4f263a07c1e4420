"""The transcript store: open a database, attach streams, query what was stored.

Example::

    async with Store() as store:                      # RXLLM_DB_URL, else ./rxllm.db
        run = StreamRun(llm_stream(sources.chat_completions(client, **request)), errors_mapped=True)
        store.attach(run, request)                   # before run.start()
        run.start()
        await run.wait()
        await store.flush()                          # only to read your own write now
        transcript = await store.get(run.stream_id)

``open()`` creates the database if needed, brings its schema to the newest
migration, and marks this owner's streams that were still ``running`` (the
process died) ``interrupted``, with their final message rebuilt from their
stored events. ``close()`` finalizes the streams still attached as
``interrupted``, flushes, then stops the writer.

Several processes may share one PostgreSQL database; give each a distinct
``StoreSettings.owner`` (default: the host name) that it keeps across
restarts, so that one process's ``open()`` never interrupts another's live
streams. ``recover(all_owners=True)`` marks every running stream.

Errors: ``ValueError`` for a URL that is neither SQLite nor PostgreSQL;
``RuntimeError`` when the store is used before ``open()``; database errors
from ``open()`` (after retries) and from the query methods.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sqlalchemy import event, false, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from pipeline.core.backoff import retry_within
from pipeline.core.flow_control import FlowGate
from pipeline.core.recording import Recording
from pipeline.core.result import Accumulator
from pipeline.runtime.multicast import StreamRun
from sinks.store import migrations
from sinks.store.batch_writer import (
    BatchWriter,
    DropHook,
    RetryHook,
    StoreSettings,
    final_values,
    is_retryable,
    now,
)
from sinks.store.queries import (
    StreamSummary,
    Transcript,
    get_transcript,
    list_streams,
    load_events,
)
from sinks.store.store_sink import TranscriptSink, scrub_request
from sinks.store.tables import Status, streams_table

__all__ = [
    "DEFAULT_URL",
    "ENV_URL",
    "Store",
    "StoreNotWritableError",
    "create_engine",
    "is_read_only",
    "resolve_url",
]

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite+aiosqlite:///rxllm.db"
ENV_URL = "RXLLM_DB_URL"


def resolve_url(url: str | None = None) -> str:
    """The database URL: ``url``, else ``$RXLLM_DB_URL``, else ``sqlite+aiosqlite:///rxllm.db``.

    A path (``./rxllm.db``, ``~/data/t.db``) is a SQLite file; ``sqlite://`` and
    ``postgresql://`` URLs get the async drivers the store uses (``aiosqlite``,
    ``asyncpg``).
    """
    given = url or os.environ.get(ENV_URL) or DEFAULT_URL
    scheme, sep, rest = given.partition("://")
    if not sep:
        return f"sqlite+aiosqlite:///{Path(given).expanduser()}"
    if scheme == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    return given


def create_engine(url: str, settings: StoreSettings | None = None) -> AsyncEngine:
    """An async engine set up for the store (SQLite: WAL, busy timeout; PG: lock timeout).

    Errors: ``ValueError`` for a backend other than SQLite and PostgreSQL.
    """
    settings = settings or StoreSettings()
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        memory = database in ("", ":memory:") or "mode=memory" in str(parsed.query)
        if not memory and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {
            "connect_args": {"timeout": settings.lock_timeout},
            "hide_parameters": True,  # errors must not copy transcripts into the logs
        }
        if memory:
            options["poolclass"] = StaticPool
        engine = create_async_engine(parsed, **options)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA foreign_keys=ON")
                if not memory:
                    cursor.execute("PRAGMA journal_mode=WAL")
                    cursor.execute("PRAGMA synchronous=NORMAL")
            finally:
                cursor.close()

        return engine
    if backend == "postgresql":
        timeout_ms = str(int(settings.lock_timeout * 1000))
        if parsed.get_driver_name() == "asyncpg":
            connect_args: dict[str, Any] = {
                "server_settings": {"lock_timeout": timeout_ms, "application_name": "rxllm"}
            }
        else:
            connect_args = {"options": f"-c lock_timeout={timeout_ms}"}
        return create_async_engine(
            parsed, pool_pre_ping=True, hide_parameters=True, connect_args=connect_args
        )
    raise ValueError(
        f"the transcript store supports SQLite and PostgreSQL, not {backend!r}: "
        "use a sqlite+aiosqlite:///path.db or postgresql+asyncpg://... URL"
    )


class Store:
    """The transcript store: owns an engine and the writer task; see the module docstring.

    ``on_drop`` is called with the number of events dropped on buffer
    overflow (``prometheus_client.Counter.inc`` fits); ``on_retry`` with the
    error and attempt number of each retried write; ``on_available`` with
    whether writes succeed, when that changes; ``on_hold`` with the number of
    streams whose upstream read the writer holds (it is behind), when that changes.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: StoreSettings | None = None,
        on_drop: DropHook | None = None,
        on_retry: RetryHook | None = None,
        on_available: Callable[[bool], None] | None = None,
        on_hold: Callable[[int], None] | None = None,
    ) -> None:
        self.url = resolve_url(url)
        self.settings = settings or StoreSettings()
        self._on_drop = on_drop
        self._on_retry = on_retry
        self._on_available = on_available
        self._on_hold = on_hold
        self._file: tuple[Path, tuple[int, int]] | None = None  # SQLite: the file opened
        self._engine: AsyncEngine | None = None
        self._writer: BatchWriter | None = None
        self._sinks: set[TranscriptSink] = set()

    # -- lifecycle --------------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        """The engine (after :meth:`open`)."""
        if self._engine is None:
            raise RuntimeError("the transcript store is not open: await store.open() first")
        return self._engine

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` has run and :meth:`close` has not."""
        return self._writer is not None

    @property
    def dropped(self) -> int:
        """Events dropped because the buffer was full."""
        return self._writer.dropped if self._writer is not None else 0

    @property
    def failed(self) -> int:
        """Records the database refused for good (see the log)."""
        return self._writer.failed if self._writer is not None else 0

    @property
    def retries(self) -> int:
        """Writes retried after an error that may pass."""
        return self._writer.retries if self._writer is not None else 0

    @property
    def pending(self) -> int:
        """Events waiting in memory to be written."""
        return self._writer.pending if self._writer is not None else 0

    async def open(self) -> None:
        """Create or upgrade the schema, mark interrupted streams, start the writer.

        A locked or unreachable database is retried (for ``close_timeout``
        seconds at most) before the error is raised.
        """
        if self._engine is not None:
            raise RuntimeError("the transcript store is already open")
        engine = create_engine(self.url, self.settings)
        try:
            await self._retrying("migrate", lambda: _migrate(engine))
            # A database that reads but cannot be written would lose every transcript.
            await self._retrying("write", lambda: _probe_write(engine))
            self._engine = engine
            await self._retrying("recover", lambda: self.recover())
        except BaseException:
            self._engine = None
            await engine.dispose()
            raise
        path = _sqlite_file(self.url)
        if path is not None:
            self._file = (path, _identity(path) or (0, 0))
        self._writer = BatchWriter(
            engine,
            self.settings,
            on_drop=self._on_drop,
            on_retry=self._on_retry,
            on_available=self._on_available,
            on_hold=self._on_hold,
            precheck=self._check_file if path is not None else None,
        )
        self._writer.start()

    async def _check_file(self) -> None:
        """Before a write: the SQLite file is still the one opened, else reconnect or wait.

        A deleted database file is still written through the open connection,
        without an error, and lost. So: while the file (and its directory) is
        gone, writes fail here (retried; events wait in the bounded buffer,
        loudly); once its directory is back, or another file stands at its
        path, the store connects afresh and makes its schema there.
        """
        assert self._file is not None
        path, opened = self._file
        now = _identity(path)
        if now == opened:
            return
        if now is None and not path.parent.is_dir():
            raise OSError(
                f"the transcript store's database file {path} is gone with its directory; "
                "events wait in memory until the directory is back"
            )
        log.error(
            "the transcript store's database file %s was %s; writing to a new one there",
            path,
            "deleted" if now is None else "replaced",
        )
        engine = self.engine
        await engine.dispose()  # connections to the old file
        await _migrate(engine)
        self._file = (path, _identity(path) or (0, 0))

    async def close(self) -> None:
        """Finalize attached streams as ``interrupted``, flush, stop the writer, dispose."""
        writer, engine = self._writer, self._engine
        if writer is None or engine is None:
            return
        for sink in list(self._sinks):
            sink.interrupt()
        self._sinks.clear()
        try:
            await writer.close(self.settings.close_timeout)
        finally:
            self._writer = None
            self._engine = None
            await engine.dispose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def flush(self) -> None:
        """Wait until everything the sinks have queued so far is written."""
        await self._require_writer().flush()

    # -- writing ----------------------------------------------------------------

    def attach(self, run: StreamRun, request: Mapping[str, Any] | None = None) -> TranscriptSink:
        """Store ``run``: subscribe a sink to it (call before ``run.start()``).

        ``request`` (model, messages, tools, parameters) is stored with the
        stream, scrubbed of credentials (:func:`sinks.store.store_sink.scrub_request`).
        """
        sink = self.sink(request, flow=run.flow)
        sink.subscription = run.subscribe(sink)
        return sink

    def sink(
        self, request: Mapping[str, Any] | None = None, *, flow: FlowGate | None = None
    ) -> TranscriptSink:
        """A sink for one stream, to subscribe to any observable of events yourself.

        With ``flow`` (the stream's flow gate), a stream that floods a store
        that is behind is held until the store catches up (:mod:`sinks.store.batch_writer`).
        """
        writer = self._require_writer()
        sink = TranscriptSink(
            writer, scrub_request(request), on_done=self._sinks.discard, flow=flow
        )
        self._sinks.add(sink)
        return sink

    async def recover(self, *, owner: str | None = None, all_owners: bool = False) -> list[str]:
        """Mark running streams ``interrupted``, rebuilding their final message.

        By default only this store's owner's streams (``settings.owner``);
        another ``owner``, or all of them. Returns the ids marked.
        """
        engine = self.engine
        query = select(streams_table.c.id).where(streams_table.c.status == "running")
        if not all_owners:
            query = query.where(streams_table.c.owner == (owner or self.settings.owner))
        async with engine.connect() as conn:
            ids = [row[0] for row in (await conn.execute(query)).all()]
        for stream_id in ids:
            async with engine.begin() as conn:
                events = await load_events(conn, stream_id)
                accumulator = Accumulator()
                for item in events:
                    accumulator.add(item)
                values = final_values(
                    accumulator.result(),
                    "interrupted",
                    now(),
                    error={"kind": "interrupted", "message": "the process stopped mid-stream"},
                    duration=events[-1].t if events else None,
                )
                # The requested model stays; the reported one fills in for none.
                values["model"] = func.coalesce(streams_table.c.model, values["model"])
                await conn.execute(
                    update(streams_table)
                    .where(streams_table.c.id == stream_id, streams_table.c.status == "running")
                    .values(**values)
                )
        if ids:
            log.warning("marked %d streams interrupted (running when stopped)", len(ids))
        return ids

    # -- reading ----------------------------------------------------------------

    async def list(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        model: str | None = None,
        status: Status | Sequence[Status] | None = None,
        text: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[StreamSummary]:
        """Stored streams, newest first; see :func:`sinks.store.queries.list_streams`."""
        return await list_streams(
            self.engine,
            since=since,
            until=until,
            model=model,
            status=status,
            text=text,
            limit=limit,
            offset=offset,
        )

    async def get(self, stream_id: str) -> Transcript | None:
        """The transcript of ``stream_id`` with its final message (as last flushed)."""
        return await get_transcript(self.engine, stream_id)

    async def events(self, stream_id: str, after_seq: int | None = None) -> Recording:
        """The events of ``stream_id`` in ``seq`` order, after ``after_seq`` if given.

        Includes events still waiting in the buffer, so a stream that has
        just finished reads whole (the fallback of live-stream resume). The
        list is a :class:`~pipeline.core.recording.Recording`: in a notebook
        it shows itself as a marble diagram.
        """
        stored = await load_events(self.engine, stream_id, after_seq)
        writer = self._writer
        if writer is None:
            return Recording(stored)
        last = stored[-1].seq if stored else (-1 if after_seq is None else after_seq)
        buffered = [e for e in writer.pending_events(stream_id) if e.seq > last]
        if not buffered:
            return Recording(stored)
        merged = {e.seq: e for e in stored}
        for item in buffered:
            merged.setdefault(item.seq, item)
        return Recording(merged[seq] for seq in sorted(merged))

    # -- helpers ----------------------------------------------------------------

    def _require_writer(self) -> BatchWriter:
        if self._writer is None:
            raise RuntimeError("the transcript store is not open: await store.open() first")
        return self._writer

    async def _retrying(self, what: str, action: Callable[[], Awaitable[object]]) -> None:
        def retrying(error: Exception, attempt: int) -> None:
            log.warning(
                "the transcript store could not %s (attempt %d): %s; retrying",
                what,
                attempt,
                error,
            )
            if self._on_retry is not None:
                self._on_retry(error, attempt)

        async def checked() -> None:
            try:
                await action()
            except Exception as error:
                if is_read_only(error):  # no wait makes it writable: say so now
                    raise StoreNotWritableError(
                        f"the transcript store cannot {what}: its database is read-only "
                        f"({_short(error)}); make it writable, give another --db, "
                        "or run with --no-store"
                    ) from None
                raise

        await retry_within(
            checked,
            self.settings.retry_backoff,
            within=self.settings.close_timeout,
            retryable=is_retryable,
            on_retry=retrying,
        )


class StoreNotWritableError(RuntimeError):
    """The store's database refuses writes (read-only): raised by :meth:`Store.open`."""


def is_read_only(error: BaseException) -> bool:
    """Whether ``error`` says the database is read-only (SQLite, PostgreSQL 25006)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).lower()
        if "readonly database" in text or "read-only transaction" in text:
            return True
        state = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if state == "25006":
            return True
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False


def _short(error: BaseException) -> str:
    orig = getattr(error, "orig", None)
    return str(orig if orig is not None else error).splitlines()[0][:200]


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (``None``: another backend, or in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or "mode=memory" in str(parsed.query):
        return None
    if database.startswith("file:"):
        database = database[len("file:") :].split("?", 1)[0]
    return Path(database).expanduser().absolute()


def _identity(path: Path) -> tuple[int, int] | None:
    """The file's device and inode, or ``None`` if there is none at ``path``."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


async def _probe_write(engine: AsyncEngine) -> None:
    """A write that changes nothing: fails on a read-only database."""
    async with engine.begin() as conn:
        table = streams_table
        await conn.execute(update(table).where(false()).values(id=table.c.id))


async def _migrate(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(migrations.upgrade)
