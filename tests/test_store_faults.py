"""The transcript store when the database misbehaves: locked, unreachable, refusing.

Nothing waits on a clock: a spell of trouble lasts until the store has been
seen retrying (its ``on_retry`` hook), and ``await store.flush()`` is the
only synchronization with the writer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from reactivex.subject import Subject
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from pipeline.core.events import (
    ChoiceFinished,
    Event,
    EventBase,
    Finished,
    Started,
    TextDelta,
    is_terminal,
)
from pipeline.runtime.multicast import StreamRun
from pipeline.runtime.sources import sse_body
from pipeline.runtime.standard_chain import llm_stream
from sinks.store import Store, StoreSettings
from sinks.store.batch_writer import is_retryable
from sinks.store.tables import streams_table
from tests.fixtures import chunk, sse
from tests.pg import PostgresServer
from tests.store_rows import stored_events

SPELL_TIMEOUT = 20.0  # seconds: only reached if the store never retries (a failure)


def fast_retry(**overrides: Any) -> StoreSettings:
    base: dict[str, Any] = {
        "flush_interval": 0.02,
        "lock_timeout": 0.05,
        "retry_initial": 0.01,
        "retry_max": 0.1,
        "close_timeout": 20.0,
    }
    base.update(overrides)
    return StoreSettings(**base)


class Retries:
    """An ``on_retry`` hook that lets a test wait for the n-th retry."""

    def __init__(self) -> None:
        self.count = 0
        self.errors: list[BaseException] = []
        self._event = asyncio.Event()

    def __call__(self, error: BaseException, attempt: int) -> None:
        self.count += 1
        self.errors.append(error)
        self._event.set()

    async def wait(self) -> None:
        self._event.clear()
        await asyncio.wait_for(self._event.wait(), SPELL_TIMEOUT)


@asynccontextmanager
async def locked(url: str) -> AsyncIterator[None]:
    """Hold the store's tables locked from another connection until the block ends."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        assert path is not None

        def lock() -> sqlite3.Connection:
            conn = sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)
            conn.execute("BEGIN EXCLUSIVE")
            return conn

        conn = await asyncio.to_thread(lock)
        try:
            yield
        finally:
            await asyncio.to_thread(conn.execute, "COMMIT")
            await asyncio.to_thread(conn.close)
        return
    engine = create_async_engine(url)
    try:
        async with engine.connect() as pg, pg.begin() as transaction:
            await pg.execute(
                text("LOCK TABLE rxllm_streams, rxllm_events IN ACCESS EXCLUSIVE MODE")
            )
            try:
                yield
            finally:
                await transaction.rollback()
    finally:
        await engine.dispose()


class Driven:
    """A stream driven by hand through a StreamRun, with a sink recording what it sent."""

    def __init__(self, store: Store, stream_id: str) -> None:
        self.stream_id = stream_id
        self.subject: Subject[Event] = Subject()
        self.run = StreamRun(self.subject, stream_id=stream_id)
        self.seen: list[EventBase] = []
        store.attach(self.run, {"model": "m", "messages": [{"role": "user", "content": "q"}]})
        self.run.subscribe(self.seen.append)
        self.run.start()
        self.seq = 0
        self.emit(Started(stream_id=stream_id, seq=0))

    def emit(self, event: Event) -> None:
        self.subject.on_next(event)
        self.seq += 1

    def say(self, text: str) -> None:
        self.emit(TextDelta(stream_id=self.stream_id, seq=self.seq, t=self.seq * 0.001, text=text))

    def finish(self) -> None:
        self.emit(ChoiceFinished(stream_id=self.stream_id, seq=self.seq, finish_reason="stop"))
        self.emit(Finished(stream_id=self.stream_id, seq=self.seq, finish_reason="stop"))

    @property
    def done(self) -> bool:
        return self.run.terminal is not None


async def check_stored(store: Store, streams: list[Driven]) -> None:
    """Every stream: one row, the status of its terminal event, every event exactly once."""
    async with store.engine.connect() as conn:
        statuses = dict(
            (await conn.execute(select(streams_table.c.id, streams_table.c.status))).all()
        )
    stored: defaultdict[str, list[tuple[int, str]]] = defaultdict(list)
    for stream_id, seq, kind in await stored_events(store.engine):  # runs opened
        stored[stream_id].append((seq, kind))
    assert len(statuses) == len(streams)
    for stream in streams:
        assert stream.seen and is_terminal(stream.seen[-1])
        terminal_type = stream.seen[-1].type  # type: ignore[attr-defined]
        assert statuses[stream.stream_id] == terminal_type, stream.stream_id
        expected = [(e.seq, e.type) for e in stream.seen]  # type: ignore[attr-defined]
        assert sorted(stored[stream.stream_id]) == expected, stream.stream_id
        kinds = Counter(kind for _, kind in stored[stream.stream_id])
        assert kinds["finished"] + kinds["error"] + kinds["cancelled"] == 1


# -- a locked database ------------------------------------------------------------------


async def test_locked_database_spell_retries_loses_nothing_and_never_blocks(
    db_url: str,
) -> None:
    retries = Retries()
    async with Store(db_url, settings=fast_retry(), on_retry=retries) as store:
        before = [Driven(store, f"before-{i}") for i in range(3)]
        for stream in before:
            stream.say("ready")
        await store.flush()

        async with locked(db_url):
            during = [Driven(store, f"during-{i}") for i in range(5)]
            for i, stream in enumerate(during):
                for word in ("the ", "database ", "is ", "locked"):
                    stream.say(word)
                if i % 2:
                    stream.run.cancel("client left")
                else:
                    stream.finish()
            for stream in before:
                stream.say(" and done")
                stream.finish()
            # The streams ran to their end while the database was locked.
            assert all(stream.done for stream in during + before)
            for stream in during:
                assert is_terminal(await asyncio.wait_for(stream.run.wait(), 1))
            flushing = asyncio.create_task(store.flush())
            await retries.wait()
            await retries.wait()  # the writer backs off and tries again
            assert not flushing.done()
            assert store.pending > 0
        await flushing

        assert store.retries >= 2 and store.dropped == 0 and store.failed == 0
        assert any(is_retryable(error) for error in retries.errors)
        await check_stored(store, before + during)
        transcript = await store.get("during-0")
        assert transcript is not None and transcript.content == "the database is locked"
        cancelled = await store.get("during-1")
        assert cancelled is not None and cancelled.status == "cancelled"


async def test_close_gives_up_after_close_timeout_on_a_database_that_stays_locked(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    retries = Retries()
    store = Store(db_url, settings=fast_retry(close_timeout=0.3), on_retry=retries)
    await store.open()
    stream = Driven(store, "stuck")
    async with locked(db_url):
        # Said under the lock: said before it, the writer could write it first and
        # never retry (the test then waited for a retry that never came).
        stream.say("x")
        await retries.wait()
        with caplog.at_level(logging.ERROR, logger="sinks.store"):
            await store.close()  # returns: the lock outlives close_timeout
    assert not store.is_open
    assert "lost" in caplog.text


# -- overflow -----------------------------------------------------------------------------


async def test_buffer_overflow_is_counted_and_logged_and_final_rows_still_written(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    parts = [f"w{i} " for i in range(30)]
    body = sse(*(chunk({"content": p}) for p in parts), chunk({}, finish="stop"))
    drops: list[int] = []
    small = fast_retry(max_buffer=8, batch_size=4)
    async with Store(db_url, settings=small, on_drop=drops.append) as store:
        runs: list[StreamRun] = []
        seen: list[list[EventBase]] = []
        with caplog.at_level(logging.WARNING, logger="sinks.store"):
            for _ in range(3):
                run = StreamRun(llm_stream(sse_body(body)))
                store.attach(run, {"model": "m"})
                events: list[EventBase] = []
                run.subscribe(events.append)
                run.start()  # the whole body goes through now, before the writer can run
                runs.append(run)
                seen.append(events)
            produced = sum(len(events) for events in seen)
            assert store.dropped == produced - 8
            assert sum(drops) == store.dropped
            await store.flush()
        assert "buffer full" in caplog.text
        assert "room again" in caplog.text

        assert len(await stored_events(store.engine)) == 8
        for run in runs:
            assert run.stream_id is not None
            transcript = await store.get(run.stream_id)
            assert transcript is not None
            # The final row is whole: the sink saw every event, even those not stored.
            assert transcript.status == "finished"
            assert transcript.content == "".join(parts)
            assert transcript.event_count == len(seen[0])


# -- many streams, everything at once ---------------------------------------------------------


async def test_a_thousand_streams_with_cancels_errors_and_a_locked_spell(db_url: str) -> None:
    rng = random.Random(20240501)
    retries = Retries()
    tuned = fast_retry(batch_size=400, max_buffer=100_000)
    async with Store(db_url, settings=tuned, on_retry=retries) as store:
        streams = [Driven(store, f"s{i:04d}") for i in range(1000)]
        live = list(streams)

        async def step(round_: int) -> None:
            nonlocal live
            for stream in live:
                roll = rng.random()
                if roll < 0.04:
                    stream.run.cancel("client went away")
                elif roll < 0.07:
                    stream.subject.on_error(ConnectionResetError("upstream reset"))
                elif round_ >= 3 and roll < 0.25:
                    stream.finish()
                else:
                    stream.say(f"r{round_} ")
            live = [stream for stream in live if not stream.done]
            await asyncio.sleep(0)  # let the writer take its turn (not a wait)

        for round_ in range(4):
            await step(round_)
        async with locked(db_url):
            for round_ in range(4, 7):
                await step(round_)
            await retries.wait()
            await step(7)
            await retries.wait()
            await step(8)
        for round_ in range(9, 12):
            await step(round_)
        for stream in live:
            stream.finish()
        await store.flush()

        assert store.retries >= 2
        assert store.dropped == 0 and store.failed == 0
        ends = Counter(s.seen[-1].type for s in streams)  # type: ignore[attr-defined]
        assert ends["cancelled"] > 10 and ends["error"] > 10 and ends["finished"] > 500
        await check_stored(store, streams)


# -- PostgreSQL: unreachable, refusing ---------------------------------------------------------


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database()


@pytest.mark.services
async def test_postgres_briefly_unreachable(postgres_server: PostgresServer, pg_url: str) -> None:
    retries = Retries()
    async with Store(pg_url, settings=fast_retry(), on_retry=retries) as store:
        first = Driven(store, "first")
        first.say("before")
        await store.flush()
        await asyncio.to_thread(postgres_server.stop_server)
        try:
            first.say(" during")
            first.finish()
            second = Driven(store, "second")
            second.say("while down")
            second.run.cancel()
            assert first.done and second.done  # the streams never waited for the database
            flushing = asyncio.create_task(store.flush())
            await retries.wait()
            await retries.wait()
            assert not flushing.done()
        finally:
            await asyncio.to_thread(postgres_server.start_server)
        await flushing
        await check_stored(store, [first, second])


@pytest.mark.services
async def test_a_record_the_database_refuses_costs_only_itself(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with Store(pg_url, settings=fast_retry()) as store:
        good = Driven(store, "good")
        bad = Driven(store, "x" * 300)  # longer than the id column: PostgreSQL refuses it
        for stream in (good, bad):
            stream.say("text")
            stream.finish()
        with caplog.at_level(logging.ERROR, logger="sinks.store"):
            await store.flush()
        assert store.failed == len(bad.seen) + 2  # its row, its events, its final update
        assert "refused" in caplog.text
        await check_stored(store, [good])


def test_which_errors_are_retried() -> None:
    locked_error = sa_exc.OperationalError("INSERT", {}, sqlite3.OperationalError("locked"))
    assert is_retryable(locked_error)
    assert is_retryable(ConnectionRefusedError())
    assert is_retryable(TimeoutError())

    class LockNotAvailable(Exception):
        sqlstate = "55P03"

    class AdminShutdown(Exception):
        sqlstate = "57P01"

    class ValueTooLong(Exception):
        sqlstate = "22001"

    assert is_retryable(sa_exc.DBAPIError("INSERT", {}, LockNotAvailable()))
    assert is_retryable(sa_exc.DBAPIError("INSERT", {}, AdminShutdown()))
    assert not is_retryable(sa_exc.DBAPIError("INSERT", {}, ValueTooLong()))
    assert not is_retryable(sa_exc.IntegrityError("INSERT", {}, Exception("duplicate")))
    assert not is_retryable(ValueError("bug"))
