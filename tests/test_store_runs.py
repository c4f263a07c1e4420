"""The store writes a row per run of a stream's events of one type, and reads them back whole.

Real SQLite files and a real PostgreSQL server (``db_url``, see ``tests/pg.py``).
Each batch here is written when the test flushes, in one transaction: the
writer's timer is off and ``batch_size`` is larger than anything queued.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, Text, cast, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pipeline.core.events import (
    ChoiceFinished,
    Event,
    Finished,
    Started,
    TextDelta,
    ToolCallDelta,
    ToolCallStarted,
    dump_event,
)
from sinks.store import Store, StoreSettings, TranscriptSink
from sinks.store import migrations as store_migrations
from sinks.store.batch_writer import BatchWriter, event_row, run_rows
from sinks.store.queries import load_events
from sinks.store.tables import events_table, streams_table
from tests.store_rows import stored_events

Row = tuple[int, int | None, str]
"""A stored row as these tests look at it: ``seq``, ``last_seq``, ``type``."""


def one_batch() -> StoreSettings:
    return StoreSettings(
        flush_interval=3600,
        batch_size=10_000,
        retry_initial=0.01,
        retry_max=0.05,
        close_timeout=15.0,
        owner="runs",
    )


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    async with Store(db_url, settings=one_batch()) as opened:
        yield opened


def answer(stream_id: str, words: int) -> list[Event]:
    """started, ``words`` text deltas, choice finished, finished: ``t`` is ``seq / 10``."""
    kinds: list[Any] = [Started] + [TextDelta] * words + [ChoiceFinished, Finished]
    events: list[Event] = []
    for seq, kind in enumerate(kinds):
        fields: dict[str, Any] = {"text": f"w{seq} "} if kind is TextDelta else {}
        if kind is ChoiceFinished:
            fields["finish_reason"] = "stop"
        events.append(kind(stream_id=stream_id, seq=seq, t=seq / 10, **fields))
    return events


def interleaved(*streams: list[Event]) -> list[Event]:
    """The streams' events taken in turn, one of each, as concurrent streams arrive."""
    mixed: list[Event] = []
    for i in range(max(len(s) for s in streams)):
        mixed += [s[i] for s in streams if i < len(s)]
    return mixed


class Feeder:
    """Puts events into the store through one sink per stream, as the streams would."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.sinks: dict[str, TranscriptSink] = {}

    def __call__(self, events: list[Event]) -> None:
        """The events, in the order given."""
        for event in events:
            sink = self.sinks.get(event.stream_id)
            if sink is None:
                sink = self.sinks[event.stream_id] = self.store.sink({"model": "m"})
            sink.on_next(event)


def put(store: Store, events: list[Event]) -> None:
    Feeder(store)(events)


async def rows(engine: AsyncEngine, stream_id: str) -> list[Row]:
    columns = events_table.c
    query = (
        select(columns.seq, columns.last_seq, columns.type)
        .where(columns.stream_id == stream_id)
        .order_by(columns.seq)
    )
    async with engine.connect() as conn:
        return [(r[0], r[1], r[2]) for r in (await conn.execute(query)).all()]


def dumps(events: list[Any]) -> list[str]:
    return [dump_event(e) for e in events]


def writer(store: Store) -> BatchWriter:
    assert store._writer is not None
    return store._writer


# -- writing runs ------------------------------------------------------------------------


async def test_interleaved_streams_are_written_a_row_per_run_and_read_whole(
    store: Store,
) -> None:
    streams = [answer(f"s{i}", 5) for i in range(3)]
    put(store, interleaved(*streams))
    await store.flush()

    for events in streams:
        stream_id = events[0].stream_id
        assert await rows(store.engine, stream_id) == [
            (0, None, "started"),
            (1, 5, "text"),
            (6, None, "choice.finished"),
            (7, None, "finished"),
        ]
        assert dumps(await load_events(store.engine, stream_id)) == dumps(events)
        assert dumps(await store.events(stream_id)) == dumps(events)
        transcript = await store.get(stream_id)
        assert transcript is not None and transcript.status == "finished"
        assert transcript.content == "w1 w2 w3 w4 w5 "
    everything = await stored_events(store.engine)
    assert len(everything) == sum(len(events) for events in streams)  # each stored once
    columns = events_table.c
    async with store.engine.connect() as conn:
        count = len((await conn.execute(select(columns.seq))).all())
        run = (
            await conn.execute(
                select(columns.t, cast(columns.data, Text)).where(
                    columns.stream_id == "s1", columns.seq == 1
                )
            )
        ).one()
    assert count == 12 < len(everything)
    assert run[0] == 0.1  # the first event's time
    assert run[1] == "[" + ",".join(dumps(streams[1][1:6])) + "]"  # each event's JSON as it is


async def test_after_seq_inside_a_run_returns_only_the_later_events(store: Store) -> None:
    events = answer("mid", 6)
    put(store, events)
    await store.flush()
    assert (1, 6, "text") in await rows(store.engine, "mid")

    for after in (0, 1, 3, 5, 6, 7):
        later = [e for e in events if e.seq > after]
        assert dumps(await load_events(store.engine, "mid", after)) == dumps(later), after
        assert dumps(await store.events("mid", after_seq=after)) == dumps(later), after
    assert await load_events(store.engine, "mid", 8) == []


async def test_a_run_ends_where_the_type_changes(store: Store) -> None:
    def delta(seq: int, arguments: str) -> ToolCallDelta:
        return ToolCallDelta(stream_id="tc", seq=seq, index=0, arguments=arguments)

    events: list[Event] = [
        Started(stream_id="tc", seq=0),
        TextDelta(stream_id="tc", seq=1, text="let me "),
        TextDelta(stream_id="tc", seq=2, text="look"),
        ToolCallStarted(stream_id="tc", seq=3, index=0, id="c1", name="f"),
        delta(4, '{"q":'),
        delta(5, ' "x"'),
        delta(6, "}"),
        TextDelta(stream_id="tc", seq=7, text="found "),
        TextDelta(stream_id="tc", seq=8, text="it"),
        Finished(stream_id="tc", seq=9),
    ]
    other = answer("other", 3)
    put(store, interleaved(events, other))  # another stream in between splits nothing
    await store.flush()
    assert await rows(store.engine, "tc") == [
        (0, None, "started"),
        (1, 2, "text"),
        (3, None, "tool_call.started"),
        (4, 6, "tool_call.delta"),
        (7, 8, "text"),
        (9, None, "finished"),
    ]
    assert dumps(await store.events("tc")) == dumps(events)
    assert dumps(await store.events("other")) == dumps(other)


def test_run_rows_keeps_queue_order_and_splits_where_seq_does_not_rise() -> None:
    def text_(stream_id: str, seq: int) -> Event:
        return TextDelta(stream_id=stream_id, seq=seq, t=float(seq), text=str(seq))

    queued = [text_("a", 0), text_("b", 0), text_("a", 1), text_("a", 1), text_("b", 1)]
    made = run_rows(event_row(e.stream_id, e) for e in queued)
    assert [(r[0], r[1], r[5]) for r in made] == [("a", 0, 1), ("b", 0, 1), ("a", 1, None)]
    assert made[0][4] == f"[{dump_event(queued[0])},{dump_event(queued[2])}]"
    assert made[2][4] == dump_event(queued[3])  # a run of one: the event's own object
    assert run_rows([]) == []


# -- a retried batch ---------------------------------------------------------------------


async def test_a_retried_batch_that_grew_stores_every_event_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = answer("a", 8), answer("b", 8)
    feed = Feeder(store)
    feed(interleaved(first[:4], second[:5]))  # a: started, 3 texts; b: started, 4 texts
    original = BatchWriter._write
    batches: list[Any] = []
    seen_after_first: list[list[Row]] = []

    async def committed_then_lost(self: BatchWriter, batch: Any) -> None:
        await original(self, batch)
        batches.append(batch)
        if len(batches) == 1:  # the commit went through, its answer did not
            seen_after_first.extend([await rows(store.engine, "a"), await rows(store.engine, "b")])
            feed(interleaved(first[4:], second[5:]))  # meanwhile the backlog grows
            raise ConnectionResetError("connection lost after the commit")

    monkeypatch.setattr(BatchWriter, "_write", committed_then_lost)
    await store.flush()
    await store.flush()

    assert store.retries == 1 and store.failed == 0 and store.pending == 0
    assert len(batches[1].events) > len(batches[0].events)  # the retry took more...
    assert batches[1].events[: len(batches[0].events)] == batches[0].events  # ...same head
    assert seen_after_first == [
        [(0, None, "started"), (1, 3, "text")],
        [(0, None, "started"), (1, 4, "text")],
    ]
    expected = [
        (0, None, "started"),
        (1, 8, "text"),  # the same row, a longer run
        (9, None, "choice.finished"),
        (10, None, "finished"),
    ]
    assert await rows(store.engine, "a") == expected
    assert await rows(store.engine, "b") == expected
    # The first, shorter batch written once more shortens nothing.
    await original(writer(store), batches[0])
    assert await rows(store.engine, "a") == expected
    stored = await stored_events(store.engine)
    assert sorted(stored) == sorted((e.stream_id, e.seq, e.type) for e in first + second)
    assert dumps(await load_events(store.engine, "a")) == dumps(first)
    assert dumps(await load_events(store.engine, "b")) == dumps(second)
    for stream_id in ("a", "b"):
        transcript = await store.get(stream_id)
        assert transcript is not None and transcript.status == "finished"
        assert transcript.event_count == len(first)


async def test_overlapping_rows_are_read_once_each_event(store: Store) -> None:
    events = answer("lap", 4)
    put(store, events)
    await store.flush()
    assert (1, 4, "text") in await rows(store.engine, "lap")
    # A row of one event inside the run (as a batch refused and written one by one
    # after an earlier try had committed could leave): read once, in order.
    async with store.engine.begin() as conn:
        await conn.execute(
            insert(events_table).values(
                stream_id="lap", seq=3, t=0.3, type="text", data=events[3].model_dump(mode="json")
            )
        )
    assert len(await stored_events(store.engine, "lap")) == len(events) + 1
    assert dumps(await load_events(store.engine, "lap")) == dumps(events)
    assert dumps(await load_events(store.engine, "lap", 2)) == dumps(events[3:])


# -- a refused batch ---------------------------------------------------------------------

REFUSE_SQLITE = """
CREATE TRIGGER refuse_poison BEFORE INSERT ON rxllm_events
WHEN NEW.data LIKE '%poison%'
BEGIN SELECT RAISE(ABORT, 'poison refused'); END
"""
REFUSE_PG = [
    """
    CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.data::text LIKE '%poison%' THEN
            RAISE EXCEPTION 'poison refused' USING ERRCODE = '22023';
        END IF;
        RETURN NEW;
    END $$
    """,
    """
    CREATE TRIGGER refuse_poison BEFORE INSERT ON rxllm_events
    FOR EACH ROW EXECUTE FUNCTION refuse_poison()
    """,
]


async def test_a_refused_batch_written_one_at_a_time_keeps_the_good_events(
    store: Store,
) -> None:
    async with store.engine.begin() as conn:
        if store.engine.dialect.name == "sqlite":
            await conn.execute(text(REFUSE_SQLITE))
        else:
            for statement in REFUSE_PG:
                await conn.execute(text(statement))
    events = answer("bad", 5)
    events[3] = TextDelta(stream_id="bad", seq=3, t=0.3, text="poison")
    good = answer("good", 3)
    put(store, interleaved(events, good))
    await store.flush()

    assert store.failed == 1  # the poisoned event, and only it
    kept = [e for e in events if e.seq != 3]
    assert dumps(await store.events("bad")) == dumps(kept)
    assert dumps(await store.events("good")) == dumps(good)
    # One at a time: each event a row of its own, as before runs.
    assert await rows(store.engine, "bad") == [(e.seq, None, e.type) for e in kept]
    assert all(last is None for _, last, _ in await rows(store.engine, "good"))
    transcript = await store.get("bad")
    assert transcript is not None and transcript.status == "finished"
    assert transcript.content == "w1 w2 poisonw4 w5 "  # the sink saw every event


# -- an older database --------------------------------------------------------------------


async def test_a_database_with_single_rows_at_0001_upgrades_and_reads_the_same(
    db_url: str,
) -> None:
    old = answer("old", 4)
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(store_migrations.upgrade, store_migrations.INITIAL_REVISION)
            await conn.execute(
                insert(streams_table).values(
                    id="old",
                    created_at=datetime(2024, 1, 2, tzinfo=UTC),
                    owner="o",
                    status="finished",
                )
            )
            for event in old:  # as revision 0001's writer stored them: a row each
                values = {"stream_id": "old", "seq": event.seq, "t": event.t, "type": event.type}
                values["data"] = event.model_dump(mode="json")
                await conn.execute(insert(events_table).values(**values))
    finally:
        await engine.dispose()

    async with Store(db_url, settings=one_batch()) as store:  # open() upgrades
        async with store.engine.connect() as conn:
            current = await conn.run_sync(store_migrations.current_revision)
        assert current == store_migrations.head_revision() != store_migrations.INITIAL_REVISION
        assert await rows(store.engine, "old") == [(e.seq, None, e.type) for e in old]
        assert dumps(await store.events("old")) == dumps(old)
        assert dumps(await store.events("old", after_seq=2)) == dumps(old[3:])
        new = answer("new", 4)
        put(store, new)
        await store.flush()
        assert (1, 4, "text") in await rows(store.engine, "new")

        def downgrade(sync: Connection) -> None:
            command.downgrade(store_migrations.alembic_config(connection=sync), "0001")

        async with store.engine.begin() as conn:
            await conn.run_sync(downgrade)
        # Back at 0001, a row per event again, each event's JSON as it was written.
        columns = events_table.c
        async with store.engine.connect() as conn:
            texts = (
                await conn.execute(
                    select(columns.seq, columns.type, cast(columns.data, Text))
                    .where(columns.stream_id == "new")
                    .order_by(columns.seq)
                )
            ).all()
        assert [tuple(r) for r in texts] == [(e.seq, e.type, dump_event(e)) for e in new]
        assert [json.loads(r[2]) for r in texts] == [e.model_dump(mode="json") for e in new]

        async with store.engine.begin() as conn:
            await conn.run_sync(store_migrations.upgrade)
        assert dumps(await store.events("new")) == dumps(new)
        assert dumps(await store.events("old")) == dumps(old)
