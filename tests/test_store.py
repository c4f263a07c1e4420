"""The transcript store against a real SQLite file and a real PostgreSQL server.

Every test that takes ``db_url`` runs on both (see ``tests/pg.py``).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from reactivex.subject import Subject
from sqlalchemy import Connection, Text, cast, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import create_async_engine

import sinks.store
from pipeline.core.events import (
    ChoiceFinished,
    Event,
    EventBase,
    Finished,
    Started,
    TextDelta,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallStarted,
    UsageReport,
    dump_event,
    is_terminal,
)
from pipeline.runtime.multicast import StreamRun
from pipeline.runtime.sources import sse_body
from pipeline.runtime.standard_chain import llm_stream
from pipeline.runtime.stream_hub import StreamHub
from sinks.store import Store, StoreSettings, scrub_request
from sinks.store import migrations as store_migrations
from sinks.store.batch_writer import BatchWriter, EventRow, StreamClose, StreamOpen
from sinks.store.tables import events_table, metadata, streams_table
from tests.fixtures import TEXT_STREAM
from tests.store_rows import row_events, stored_events

REPO = Path(__file__).resolve().parent.parent
# The JSON column as the database holds it: its text, not the value it reads back as.
data_column = cast(events_table.c.data, Text)


def settings(**overrides: Any) -> StoreSettings:
    base: dict[str, Any] = {"flush_interval": 0.05, "close_timeout": 15.0}
    base.update(overrides)
    return StoreSettings(**base)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    async with Store(db_url, settings=settings(owner="test-owner")) as opened:
        yield opened


class Upstream:
    """A stream we drive by hand: a Subject behind a StreamRun, with a recording sink."""

    def __init__(self, store: Store, stream_id: str, request: dict[str, Any] | None = None):
        self.subject: Subject[Event] = Subject()
        self.run = StreamRun(self.subject, stream_id=stream_id)
        self.stream_id = stream_id
        self.seen: list[EventBase] = []
        store.attach(self.run, request)
        self.run.subscribe(self.seen.append)
        self.run.start()
        self.seq = 0

    def emit(self, make: Any, **fields: Any) -> None:
        self.subject.on_next(
            make(stream_id=self.stream_id, seq=self.seq, t=self.seq * 0.01, **fields)
        )
        self.seq += 1

    def start(self, model: str = "reported-model") -> None:
        self.emit(Started, api="chat", model=model)

    def say(self, *parts: str) -> None:
        for part in parts:
            self.emit(TextDelta, text=part)

    def finish(self, reason: str = "stop") -> None:
        self.emit(ChoiceFinished, finish_reason=reason)
        self.emit(Finished, finish_reason=reason)


def dumps(events: list[Any]) -> list[str]:
    return [dump_event(e) for e in events]


async def stored_rows(store: Store, stream_id: str) -> list[tuple[int, str]]:
    """``(seq, type)`` of each event stored, each row's events in turn (runs opened)."""
    return [(seq, kind) for _, seq, kind in await stored_events(store.engine, stream_id)]


# -- one stream, each way it can end ------------------------------------------------


async def test_finished_stream_is_stored_whole(store: Store) -> None:
    run = StreamRun(llm_stream(sse_body(TEXT_STREAM)))
    seen: list[EventBase] = []
    store.attach(run, {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]})
    run.subscribe(seen.append)
    run.start()
    await run.wait()
    await store.flush()

    assert run.stream_id is not None
    transcript = await store.get(run.stream_id)
    assert transcript is not None
    assert transcript.status == "finished"
    assert transcript.finish_reason == "stop"
    assert transcript.model == "gpt-test"  # the requested model
    assert transcript.content == "Hello, world"
    assert transcript.message is not None and transcript.message.content == "Hello, world"
    assert transcript.usage == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert transcript.first_token_at is not None
    assert transcript.duration is not None
    assert transcript.event_count == len(seen)
    assert transcript.finished_at is not None and transcript.finished_at >= transcript.created_at
    assert transcript.request == {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert dumps(await store.events(run.stream_id)) == dumps(seen)


async def test_error_stream_is_stored_as_error_with_its_details(store: Store) -> None:
    up = Upstream(store, "err-1")
    up.start()
    up.say("par", "tial")
    up.subject.on_error(ConnectionResetError("peer reset"))
    await store.flush()

    transcript = await store.get("err-1")
    assert transcript is not None
    assert transcript.status == "error"
    assert transcript.error is not None
    assert transcript.error["kind"] == "connection"
    assert transcript.error["after_first_token"] is True
    assert transcript.content == "partial"
    rows = await stored_rows(store, "err-1")
    assert [t for _, t in rows] == ["started", "text", "text", "error"]
    assert dumps(await store.events("err-1")) == dumps(up.seen)


async def test_cancelled_stream_is_stored_with_everything_that_arrived(store: Store) -> None:
    up = Upstream(store, "cancel-1")
    up.start()
    up.say("Hel", "lo")
    up.run.cancel("client went away")
    up.say("late")  # after the terminal event: never delivered, never stored
    await store.flush()

    transcript = await store.get("cancel-1")
    assert transcript is not None
    assert transcript.status == "cancelled"
    assert transcript.cancel_reason == "client went away"
    assert transcript.content == "Hello"
    rows = await stored_rows(store, "cancel-1")
    assert [t for _, t in rows] == ["started", "text", "text", "cancelled"]
    assert [s for s, _ in rows] == [0, 1, 2, 3]


async def test_a_stream_that_ends_without_a_terminal_event_is_finalized_once(
    store: Store,
) -> None:
    sink = store.sink({"model": "m"})
    sink.on_next(Started(stream_id="raw-1", seq=0))
    sink.on_next(TextDelta(stream_id="raw-1", seq=1, text="x"))
    sink.on_completed()
    sink.on_completed()  # a second end changes nothing
    sink.on_error(RuntimeError("late"))
    await store.flush()
    transcript = await store.get("raw-1")
    assert transcript is not None
    assert transcript.status == "error"
    assert (
        transcript.error is not None and "without a terminal event" in transcript.error["message"]
    )


async def test_tool_calls_and_several_choices_are_assembled(store: Store) -> None:
    sink = store.sink()
    events: list[Event] = [
        Started(stream_id="tc", seq=0),
        TextDelta(stream_id="tc", seq=1, text="zero"),
        TextDelta(stream_id="tc", seq=2, text="one", choice=1),
        ToolCallStarted(stream_id="tc", seq=3, index=0, id="call_1", name="lookup"),
        ToolCallDelta(stream_id="tc", seq=4, index=0, arguments='{"q": '),
        ToolCallDelta(stream_id="tc", seq=5, index=0, arguments="1}"),
        ToolCallCompleted(
            stream_id="tc",
            seq=6,
            index=0,
            id="call_1",
            name="lookup",
            arguments='{"q": 1}',
            parsed={"q": 1},
        ),
        ChoiceFinished(stream_id="tc", seq=7, finish_reason="tool_calls"),
        UsageReport(stream_id="tc", seq=8, usage={"total_tokens": 9}),
        Finished(stream_id="tc", seq=9, finish_reason="tool_calls"),
    ]
    for event in events:
        sink.on_next(event)
    await store.flush()
    transcript = await store.get("tc")
    assert transcript is not None
    assert [c.content for c in transcript.choices] == ["zero", "one"]
    call = transcript.choices[0].tool_calls[0]
    assert (call.id, call.name, call.arguments, call.parsed) == (
        "call_1",
        "lookup",
        '{"q": 1}',
        {"q": 1},
    )
    assert transcript.finish_reason == "tool_calls"
    assert transcript.usage == {"total_tokens": 9}


async def test_awkward_text_round_trips(store: Store) -> None:
    up = Upstream(store, "odd")
    text_ = "nul\x00 byte, emoji \U0001f600, quote ' \" and \\ backslash, \u2028 separator"
    up.start()
    up.say(text_)
    up.finish()
    await store.flush()
    events = await store.events("odd")
    assert isinstance(events[1], TextDelta) and events[1].text == text_
    transcript = await store.get("odd")
    assert transcript is not None and transcript.message is not None
    assert transcript.message.content == text_
    assert transcript.content == text_.replace("\x00", "")


async def test_the_same_events_written_twice_are_stored_once(store: Store) -> None:
    events: list[Event] = [
        Started(stream_id="dup", seq=0),
        TextDelta(stream_id="dup", seq=1, text="a"),
        Finished(stream_id="dup", seq=2),
    ]
    for _ in range(2):  # as a retried batch would
        sink = store.sink()
        for event in events:
            sink.on_next(event)
        await store.flush()
    assert await stored_rows(store, "dup") == [(0, "started"), (1, "text"), (2, "finished")]
    assert store.failed == 0  # no conflict reached the database as an error
    listed = await store.list()
    assert [s.id for s in listed] == ["dup"]


async def test_an_event_that_is_not_json_costs_only_itself(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # A row is made when the event is put: an event a custom operator filled with a
    # value that is not JSON is counted and logged there, and the rest is stored.
    sink = store.sink()
    events: list[Event] = [
        Started(stream_id="odd", seq=0),
        ToolCallStarted(stream_id="odd", seq=1, index=0, id="c1", name="f"),
        ToolCallDelta(stream_id="odd", seq=2, index=0, arguments="{}", partial=object()),
        TextDelta(stream_id="odd", seq=3, text="a"),
        Finished(stream_id="odd", seq=4),
    ]
    for event in events:
        sink.on_next(event)
    await store.flush()
    assert await stored_rows(store, "odd") == [
        (0, "started"),
        (1, "tool_call.started"),
        (3, "text"),
        (4, "finished"),
    ]
    assert store.failed == 1 and "event 2 of stream odd is not JSON" in caplog.text
    transcript = await store.get("odd")
    assert transcript is not None and transcript.status == "finished"


async def test_stored_json_is_the_events_own_beside_the_hub(store: Store) -> None:
    # The hub serializes each event first; the store's row takes that JSON
    # (pipeline.core.events.event_json keeps the last one): byte for byte dump_event's.
    hub = StreamHub()
    events = llm_stream(sse_body(TEXT_STREAM), stream_id="both")
    run = StreamRun(events, stream_id="both", errors_mapped=True)
    hub.register(run)
    store.attach(run)
    seen: list[EventBase] = []
    run.subscribe(seen.append)
    run.start()
    await run.wait()
    await store.flush()
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            select(events_table.c.seq, events_table.c.last_seq, events_table.c.type, data_column)
            .where(events_table.c.stream_id == "both")
            .order_by(events_table.c.seq)
        )
        stored = [(r[0], r[1], r[2], r[3]) for r in rows]
    assert any(last_seq is not None for _, last_seq, _, _ in stored)  # runs were written
    jsons = {e.seq: e.model_dump_json() for e in seen}
    held: list[int] = []  # the seq of each event the rows hold, in row order
    for seq, last_seq, kind, text in stored:
        items = row_events(seq, last_seq, kind, json.loads(text))
        held += [item["seq"] for item in items]
        own = [jsons[item["seq"]] for item in items]
        # Each event's JSON as the hub made it, byte for byte: alone, or an array's elements.
        assert text == (own[0] if last_seq is None else "[" + ",".join(own) + "]")
    assert held == list(jsons)
    assert [e.model_dump(mode="json") for e in await store.events("both")] == [
        e.model_dump(mode="json") for e in seen
    ]
    assert hub.snapshot("both") == seen


async def test_final_update_is_written_once_and_after_the_streams_events(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[tuple[str, str, int]] = []  # (what, stream id, seq) in commit order
    original = BatchWriter._execute

    async def recording(
        self: BatchWriter,
        conn: Any,
        opens: list[StreamOpen],
        events: list[tuple[int, EventRow, Any]],
        closes: list[StreamClose],
    ) -> None:
        await original(self, conn, opens, events, closes)
        writes.extend(("open", o.stream_id, -1) for o in opens)
        writes.extend(("event", row[0], row[1]) for _, row, _ in events)
        writes.extend(("final", c.stream_id, -1) for c in closes)

    monkeypatch.setattr(BatchWriter, "_execute", recording)
    async with Store(db_url, settings=settings(batch_size=3)) as store:
        ups = [Upstream(store, f"o{i}") for i in range(3)]
        for up in ups:
            up.start()
        for word in ["one", "two", "three", "four", "five", "six", "seven"]:
            for up in ups:
                up.say(word)
        ups[1].finish()
        ups[0].run.cancel()
        ups[2].subject.on_error(RuntimeError("boom"))
        await store.flush()
    for up in ups:
        mine = [(what, seq) for what, sid, seq in writes if sid == up.stream_id]
        assert mine[0] == ("open", -1)
        assert mine[-1] == ("final", -1)
        assert [what for what, _ in mine].count("final") == 1
        assert [seq for what, seq in mine if what == "event"] == [e.seq for e in up.seen]


# -- the request ---------------------------------------------------------------------


class FakeClient:
    def __repr__(self) -> str:
        return "FakeClient(api_key='sk-live-SECRET123456')"


async def test_request_is_scrubbed_of_credentials(store: Store) -> None:
    request = {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "hello"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "temperature": 0.5,
        "api_key": "sk-live-SECRET123456",
        "Authorization": "Bearer sk-live-SECRET123456",
        "extra_headers": {"Authorization": "Bearer sk-live-SECRET123456", "X-Trace": "1"},
        "headers": {"x-api-key": "sk-live-SECRET123456"},
        "extra_body": {"provider": {"API-Key": "sk-live-SECRET123456", "order": ["a"]}},
        "base_url": "https://user:sk-live-SECRET123456@example.invalid/v1?key=sk-live-SECRET123456&x=1",
        "client": FakeClient(),
        "callback": FakeClient(),
    }
    run = StreamRun(llm_stream(sse_body(TEXT_STREAM)))
    store.attach(run, request)
    run.start()
    await store.flush()
    assert run.stream_id is not None
    transcript = await store.get(run.stream_id)
    assert transcript is not None and transcript.request is not None
    stored = transcript.request
    assert stored["model"] == "gpt-test"
    assert stored["messages"] == request["messages"]
    assert stored["tools"] == request["tools"]
    assert stored["temperature"] == 0.5
    for key in ("api_key", "Authorization", "extra_headers", "headers", "client"):
        assert key not in stored
    assert stored["extra_body"] == {"provider": {"order": ["a"]}}
    assert stored["callback"] == "<FakeClient>"
    assert stored["base_url"] == "https://***@example.invalid/v1?key=***&x=1"
    # Nowhere in the database, in any form.
    async with store.engine.connect() as conn:
        dump = json.dumps(
            [list(r) for r in (await conn.execute(select(streams_table))).all()], default=str
        )
    assert "SECRET" not in dump
    assert "sk-live" not in dump


def test_scrub_request_keeps_message_content_and_handles_none() -> None:
    assert scrub_request(None) is None
    request = {"messages": [{"role": "user", "content": "my api_key is in here"}], "n": 2}
    assert scrub_request(request) == request


# -- interrupted ------------------------------------------------------------------------

CRASH = """
import asyncio, os, sys
from reactivex.subject import Subject
from pipeline.core.events import Started, TextDelta
from pipeline.runtime.multicast import StreamRun
from pipeline.runtime.stream_hub import StreamHub
from sinks.store import Store, StoreSettings

async def main(url):
    for owner, sid in (("crash-owner", "crashed"), ("other-owner", "elsewhere")):
        store = Store(url, settings=StoreSettings(owner=owner))
        await store.open()
        subject = Subject()
        run = StreamRun(subject, stream_id=sid)
        store.attach(run, {"model": "m-" + sid})
        run.start()
        subject.on_next(Started(stream_id=sid, seq=0, model="reported"))
        subject.on_next(TextDelta(stream_id=sid, seq=1, t=0.5, text="half an "))
        subject.on_next(TextDelta(stream_id=sid, seq=2, t=0.7, text="answer"))
        await store.flush()
    os._exit(0)  # die mid-stream: no close(), no final update

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.slow  # a subprocess that dies mid-write
async def test_streams_running_when_the_process_died_are_interrupted_on_open(
    db_url: str,
) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", textwrap.dedent(CRASH), db_url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr

    async with Store(db_url, settings=settings(owner="crash-owner")) as store:
        transcript = await store.get("crashed")
        assert transcript is not None
        assert transcript.status == "interrupted"
        assert transcript.content == "half an answer"
        assert transcript.model == "m-crashed"
        assert transcript.duration == 0.7
        assert transcript.finished_at is not None
        assert [type(e).__name__ for e in await store.events("crashed")] == [
            "Started",
            "TextDelta",
            "TextDelta",
        ]
        # Another owner's stream may still be live in its own process: left alone.
        other = await store.get("elsewhere")
        assert other is not None and other.status == "running"
        assert await store.recover(all_owners=True) == ["elsewhere"]
        other = await store.get("elsewhere")
        assert other is not None and other.status == "interrupted"
        assert other.content == "half an answer"


async def test_close_finalizes_streams_still_attached_as_interrupted(db_url: str) -> None:
    async with Store(db_url, settings=settings()) as store:
        up = Upstream(store, "open-at-close")
        up.start()
        up.say("unfinished")
    assert up.run.terminal is None  # the stream itself goes on; the store let go
    writers = [t for t in asyncio.all_tasks() if t.get_name() == "rxllm-store-writer"]
    assert writers == []  # close() cancelled and awaited its task
    async with Store(db_url, settings=settings()) as store:
        transcript = await store.get("open-at-close")
        assert transcript is not None
        assert transcript.status == "interrupted"
        assert transcript.content == "unfinished"


# -- queries ------------------------------------------------------------------------------


async def test_list_filters(store: Store) -> None:
    marks: list[datetime] = []

    def make(stream_id: str, model: str, words: list[str], end: str) -> None:
        marks.append(datetime.now(UTC))
        up = Upstream(store, stream_id, {"model": model})
        up.start()
        up.say(*words)
        if end == "finished":
            up.finish()
        elif end == "cancelled":
            up.run.cancel()
        else:
            up.subject.on_error(TimeoutError("slow"))

    make("a", "alpha", ["The quick ", "brown fox"], "finished")
    make("b", "beta", ["100% ", "sure_thing"], "finished")
    make("c", "alpha", ["QUICK thinking"], "cancelled")
    make("d", "beta", ["nothing"], "error")
    marks.append(datetime.now(UTC))
    await store.flush()

    async def ids(**filters: Any) -> list[str]:
        return [s.id for s in await store.list(**filters)]

    assert await ids() == ["d", "c", "b", "a"]  # newest first
    assert await ids(model="alpha") == ["c", "a"]
    assert await ids(status="finished") == ["b", "a"]
    assert await ids(status=["cancelled", "error"]) == ["d", "c"]
    assert await ids(text="quick") == ["c", "a"]  # case-insensitive
    assert await ids(text="0% s") == ["b"]
    assert await ids(text="%") == ["b"]  # taken literally
    assert await ids(text="k_b") == []  # "_" is not a wildcard (it would match "k b")
    assert await ids(text="quick", model="alpha", status="finished") == ["a"]
    assert await ids(since=marks[1]) == ["d", "c", "b"]
    assert await ids(until=marks[2]) == ["b", "a"]
    assert await ids(since=marks[1], until=marks[3]) == ["c", "b"]
    naive = marks[2].replace(tzinfo=None)  # naive means UTC
    assert await ids(since=naive) == ["d", "c"]
    assert await ids(since=marks[4] + timedelta(seconds=1)) == []
    assert await ids(limit=2) == ["d", "c"]
    assert await ids(limit=2, offset=2) == ["b", "a"]
    summary = (await store.list(model="beta", status="error"))[0]
    assert summary.error is not None and summary.error["kind"] == "timeout"
    assert await store.get("missing") is None


async def test_events_after_seq_in_order(store: Store) -> None:
    up = Upstream(store, "ev")
    up.start()
    up.say("a", "b", "c")
    up.finish()
    await store.flush()
    everything = await store.events("ev")
    assert [e.seq for e in everything] == [0, 1, 2, 3, 4, 5]
    assert dumps(everything) == dumps(up.seen)
    assert [e.seq for e in await store.events("ev", after_seq=2)] == [3, 4, 5]
    assert await store.events("ev", after_seq=5) == []
    assert await store.events("nope") == []


async def test_events_include_what_is_still_buffered(db_url: str) -> None:
    lazy = settings(flush_interval=3600, batch_size=10_000)
    async with Store(db_url, settings=lazy) as store:
        up = Upstream(store, "buffered")
        up.start()
        up.say("x", "y")
        await store.flush()
        up.say("z")
        up.finish()
        assert store.pending == 3  # not written yet
        events = await store.events("buffered")
        assert dumps(events) == dumps(up.seen)
        assert [e.seq for e in await store.events("buffered", after_seq=2)] == [3, 4, 5]
        assert len(await stored_rows(store, "buffered")) == 3
    async with Store(db_url, settings=lazy) as store:  # close() flushed the rest
        assert len(await stored_rows(store, "buffered")) == 6


async def test_store_needs_opening(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(RuntimeError, match="not open"):
        store.attach(StreamRun(llm_stream(sse_body(TEXT_STREAM))))
    with pytest.raises(RuntimeError, match="not open"):
        await store.list()
    await store.close()  # closing a store never opened is fine


async def test_url_from_argument_environment_or_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RXLLM_DB_URL", raising=False)
    assert Store().url == "sqlite+aiosqlite:///rxllm.db"
    monkeypatch.setenv("RXLLM_DB_URL", "postgresql+asyncpg://h/db")
    assert Store().url == "postgresql+asyncpg://h/db"
    assert Store("sqlite+aiosqlite:///x.db").url == "sqlite+aiosqlite:///x.db"
    with pytest.raises(ValueError, match="SQLite and PostgreSQL"):
        await Store("mysql+aiomysql://h/db").open()
    # A SQLite file is created on first use, its folder too.
    path = tmp_path / "deep" / "er" / "store.db"
    async with Store(f"sqlite+aiosqlite:///{path}"):
        pass
    assert path.exists()


# -- migrations ----------------------------------------------------------------------------


async def test_migrations_upgrade_a_fresh_database_to_head(db_url: str) -> None:
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(store_migrations.current_revision) is None
        async with engine.begin() as conn:
            await conn.run_sync(store_migrations.upgrade)
        async with engine.connect() as conn:
            current = await conn.run_sync(store_migrations.current_revision)
            assert current == store_migrations.head_revision()

            def diff(sync: Connection) -> list[Any]:
                context = MigrationContext.configure(
                    sync,
                    opts={"version_table": store_migrations.VERSION_TABLE, "compare_type": True},
                )
                return list(compare_metadata(context, metadata))

            # The models and the migrations describe the same schema.
            assert await conn.run_sync(diff) == []
    finally:
        await engine.dispose()


async def test_a_database_at_the_initial_revision_upgrades(db_url: str) -> None:
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(store_migrations.upgrade, store_migrations.INITIAL_REVISION)
            assert (
                await conn.run_sync(store_migrations.current_revision)
                == store_migrations.INITIAL_REVISION
            )
            await conn.execute(
                streams_table.insert().values(
                    id="old", created_at=datetime(2024, 1, 2, 3, 4, 5), owner="o", status="finished"
                )
            )
    finally:
        await engine.dispose()
    async with Store(db_url, settings=settings()) as store:  # open() upgrades
        async with store.engine.connect() as conn:
            current = await conn.run_sync(store_migrations.current_revision)
        assert current == store_migrations.head_revision()
        old = await store.get("old")
        assert old is not None and old.status == "finished"
        assert old.created_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


async def test_migrations_run_from_alembic_commands_and_downgrade(db_url: str) -> None:
    def downgrade_then_check(sync: Connection) -> list[str]:
        config = store_migrations.alembic_config(connection=sync)
        command.downgrade(config, "base")
        return sorted(sa_inspect(sync).get_table_names())

    async with Store(db_url, settings=settings()):
        pass
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            tables = await conn.run_sync(downgrade_then_check)
        assert "rxllm_streams" not in tables and "rxllm_events" not in tables
    finally:
        await engine.dispose()
    async with Store(db_url, settings=settings()) as store:  # and back up
        assert await store.list() == []


# -- public surface ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module_name",
    [
        "sinks.store",
        "sinks.store.tables",
        "sinks.store.batch_writer",
        "sinks.store.store_sink",
        "sinks.store.queries",
        "sinks.store.transcript_store",
        "sinks.store.migrations",
    ],
)
def test_all_is_complete(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = set(module.__all__)
    assert all(hasattr(module, name) for name in exported)
    assert len(exported) == len(module.__all__)
    defined = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", None) == module_name
    }
    assert defined <= exported, f"public but not in __all__: {sorted(defined - exported)}"


def test_package_exports_the_store() -> None:
    assert sinks.store.Store is Store
    assert is_terminal(Finished(stream_id="s", seq=0))
