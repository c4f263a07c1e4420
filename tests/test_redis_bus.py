"""The Redis live-event bus against a real ``redis-server`` started by the tests.

Publisher and reader: every event after any ``seq``, exactly once and in
order, then live, to the terminal event; expiry and owner record; gaps;
Redis restarts (with and without its data) while streams go on; a full
buffer; cancel requests between two processes' buses.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from reactivex.subject import Subject

from pipeline.core.events import Cancelled, Event, Finished, Started, TextDelta
from pipeline.core.flow_control import TURN_MESSAGES
from pipeline.runtime.multicast import StreamRun
from sinks.redis_bus import (
    BusGapError,
    BusSettings,
    BusStreamNotFoundError,
    RedisBus,
    open_events,
)
from sinks.redis_bus.settings import entry_id, entry_seq, id_before
from tests.redis_server import RedisServer, start_redis
from tests.redis_server import redis_server as redis_server

pytestmark = pytest.mark.services  # needs Redis, started by the tests


def make_events(stream_id: str, n_text: int) -> list[Event]:
    """``started``, ``n_text`` text deltas, ``finished``: seq 0 to ``n_text + 1``."""
    events: list[Event] = [Started(stream_id=stream_id, seq=0, api="chat")]
    events += [TextDelta(stream_id=stream_id, seq=i, text=f" w{i}") for i in range(1, n_text + 1)]
    events.append(Finished(stream_id=stream_id, seq=n_text + 1, finish_reason="stop"))
    return events


class Live:
    """A started run whose events the test pushes one by one."""

    def __init__(self, bus: RedisBus, stream_id: str | None = None) -> None:
        self.stream_id = stream_id or uuid.uuid4().hex
        self.subject: Subject[Event] = Subject()
        self.run = StreamRun(self.subject, stream_id=self.stream_id)
        bus.attach(self.run)
        self.run.start()

    def push(self, events: list[Event]) -> None:
        for event in events:
            self.subject.on_next(event)
        if events and events[-1].type == "finished":
            self.subject.on_completed()


def settings(**overrides: Any) -> BusSettings:
    values: dict[str, Any] = {
        "prefix": f"t{uuid.uuid4().hex[:10]}",
        "flush_interval": 0.001,
        "retry_initial": 0.02,
        "retry_max": 0.2,
    }
    values.update(overrides)
    return BusSettings(**values)


@pytest.fixture
async def bus(redis_server: RedisServer) -> AsyncIterator[RedisBus]:
    async with RedisBus(redis_server.url, owner="proc-a", settings=settings()) as b:
        yield b


async def take(events: AsyncIterator[Event], n: int, limit: float = 5.0) -> list[Event]:
    async with asyncio.timeout(limit):
        return [await anext(events) for _ in range(n)]


async def drain(events: AsyncIterator[Event], limit: float = 10.0) -> list[Event]:
    async with asyncio.timeout(limit):
        return [event async for event in events]


def test_entry_ids_make_after_seq_trivial() -> None:
    assert [entry_id(s) for s in (0, 1, 41)] == ["0-1", "1-1", "41-1"]
    assert id_before(0) == "0-0" and id_before(42) == "41-1"
    assert entry_seq(b"41-1") == 41 and entry_seq("0-1") == 0


async def test_every_reader_gets_exactly_the_events_after_its_seq_then_live(
    bus: RedisBus,
) -> None:
    live = Live(bus)
    events = make_events(live.stream_id, 30)  # seq 0..31
    live.push(events[:11])
    await bus.publisher.flush()
    starts: list[int | None] = [None, *range(11)]
    readers = {after: await bus.events(live.stream_id, after) for after in starts}
    got: dict[int | None, list[Event]] = {}
    for after, reader in readers.items():
        first = 0 if after is None else after + 1
        got[after] = await take(reader, 11 - first)  # what Redis held when it opened
    live.push(events[11:])  # now live
    for after, reader in readers.items():
        got[after] += await drain(reader)  # ends by itself at the terminal event
        first = 0 if after is None else after + 1
        assert got[after] == events[first:], after
    # Opened after the end: the rest, or nothing at all.
    assert await drain(await bus.events(live.stream_id, 20)) == events[21:]
    assert await drain(await bus.events(live.stream_id, 31)) == []
    assert bus.publisher.published == len(events)
    assert bus.publisher.dropped == bus.publisher.failed == 0


async def test_live_key_expires_and_owner_record_goes_with_the_terminal_event(
    redis_server: RedisServer,
) -> None:
    config = settings(live_ttl=30.0, finished_ttl=5.0)
    async with RedisBus(redis_server.url, owner="proc-a", settings=config) as bus:
        live = Live(bus)
        events = make_events(live.stream_id, 3)
        key, owner_key = config.stream_key(live.stream_id), config.owner_key(live.stream_id)
        live.push(events[:2])
        await bus.publisher.flush()
        assert 5_000 < await bus.client.pttl(key) <= 30_000
        assert await bus.client.get(owner_key) == b"proc-a"
        assert await bus.owner_of(live.stream_id) == "proc-a"
        assert 5_000 < await bus.client.pttl(owner_key) <= 30_000
        live.push(events[2:])
        await bus.publisher.flush()
        assert 0 < await bus.client.pttl(key) <= 5_000
        assert await bus.client.exists(owner_key) == 0
        assert await bus.owner_of(live.stream_id) is None


async def test_unknown_stream_is_a_clear_not_found(bus: RedisBus) -> None:
    with pytest.raises(BusStreamNotFoundError, match="transcript store"):
        await bus.events("no-such-stream", 3)


async def test_events_trimmed_away_are_a_gap_naming_what_redis_still_has(bus: RedisBus) -> None:
    live = Live(bus)
    events = make_events(live.stream_id, 20)  # seq 0..21
    live.push(events)
    await bus.publisher.flush()
    await bus.client.xtrim(bus.settings.stream_key(live.stream_id), maxlen=5, approximate=False)
    with pytest.raises(BusGapError) as caught:
        await bus.events(live.stream_id, 3)
    assert (caught.value.expected, caught.value.available) == (4, 17)
    assert await drain(await bus.events(live.stream_id, 16)) == events[17:]


async def test_a_reader_stops_at_a_hole_in_the_live_part(bus: RedisBus) -> None:
    live = Live(bus)
    events = make_events(live.stream_id, 10)
    live.push(events[:3])
    await bus.publisher.flush()
    reader = await bus.events(live.stream_id, None)
    assert await take(reader, 3) == events[:3]
    # seq 3 never reaches Redis (as if dropped on overflow); 4 does.
    key = bus.settings.stream_key(live.stream_id)
    await bus.client.xadd(key, {"e": events[4].model_dump_json()}, id=entry_id(4))
    with pytest.raises(BusGapError) as caught:
        await anext(reader)
    assert (caught.value.expected, caught.value.available) == (3, 4)


async def test_graceful_redis_restart_mid_stream_loses_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sinks.redis_bus")
    with start_redis() as server:
        async with RedisBus(server.url, owner="proc-a", settings=settings()) as bus:
            live = Live(bus)
            events = make_events(live.stream_id, 40)
            live.push(events[:10])
            await bus.publisher.flush()
            reader = await bus.events(live.stream_id, None)
            assert await take(reader, 10) == events[:10]
            reading = asyncio.create_task(drain(reader, limit=30))  # blocked in XREAD

            await asyncio.to_thread(server.shutdown_save)
            live.push(events[10:25])  # Redis is down: buffered
            await asyncio.sleep(0.3)
            assert bus.publisher.pending == 15
            await asyncio.to_thread(server.start_again)
            live.push(events[25:])
            async with asyncio.timeout(15):
                await bus.publisher.flush()

            entries: Any = await bus.client.xrange(bus.settings.stream_key(live.stream_id))
            assert [entry_seq(entry) for entry, _ in entries] == list(range(len(events)))
            assert await reading == events[10:]
            assert bus.publisher.retries > 0
            assert bus.publisher.dropped == bus.publisher.failed == 0
    outages = [r for r in caplog.records if "cannot write to Redis" in r.getMessage()]
    recoveries = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(outages) == 1 and len(recoveries) == 1


async def test_crash_restart_without_data_goes_on_and_readers_see_the_gap() -> None:
    with start_redis() as server:
        async with RedisBus(server.url, owner="proc-a", settings=settings()) as bus:
            live = Live(bus)
            events = make_events(live.stream_id, 20)
            live.push(events[:10])
            await bus.publisher.flush()
            await asyncio.to_thread(server.restart, keep_data=False)
            live.push(events[10:])
            async with asyncio.timeout(15):
                await bus.publisher.flush()
            with pytest.raises(BusGapError) as caught:
                await bus.events(live.stream_id, None)
            assert (caught.value.expected, caught.value.available) == (0, 10)
            assert await drain(await bus.events(live.stream_id, 9)) == events[10:]
            # The owner record came back with the next write.
            assert await bus.owner_of(live.stream_id) is None  # ended by now


async def test_a_full_buffer_drops_events_but_never_the_terminal_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sinks.redis_bus")
    server = start_redis()
    url = server.url.replace("redis://", "redis://:pw-SECRET-77@")
    server.stop()  # nothing listens there now
    drops: list[int] = []
    config = settings(max_buffer=5, close_timeout=0.2)
    bus = RedisBus(url, owner="proc-a", settings=config, on_drop=drops.append)
    await bus.open()
    try:
        live = Live(bus)
        events = make_events(live.stream_id, 20)  # 21 non-terminal events, then the terminal
        live.push(events)
        assert live.run.terminal is not None  # the stream itself never waited
        assert bus.publisher.dropped == 16 and sum(drops) == 16
        assert bus.publisher.pending == 6  # 5 events and the terminal one
        await asyncio.sleep(0.2)
    finally:
        await bus.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("buffer full" in m for m in messages) == 1
    assert sum("cannot write to Redis" in m for m in messages) == 1
    assert not any("pw-SECRET-77" in m for m in messages)
    assert "pw-SECRET-77" not in caplog.text


async def test_cancel_from_another_process_reaches_the_owner(redis_server: RedisServer) -> None:
    config = settings()
    async with (
        RedisBus(redis_server.url, owner="proc-a", settings=config) as bus_a,
        RedisBus(redis_server.url, owner="proc-b", settings=config) as bus_b,
    ):
        runs: dict[str, StreamRun] = {}

        def on_cancel(stream_id: str, reason: str) -> None:
            run = runs.get(stream_id)
            if run is not None:
                run.cancel(reason)

        listener = bus_a.listen(on_cancel)
        async with asyncio.timeout(5):
            await listener.ready.wait()
        live = Live(bus_a)
        runs[live.stream_id] = live.run
        events = make_events(live.stream_id, 10)
        live.push(events[:4])
        await bus_a.publisher.flush()

        assert await bus_b.cancel(live.stream_id, "stop pressed", wait=5.0) == "cancelled"
        terminal = live.run.terminal
        assert isinstance(terminal, Cancelled) and terminal.reason == "stop pressed"
        seen = await drain(await bus_b.events(live.stream_id, None))
        assert seen[:4] == events[:4] and seen[-1] == terminal and len(seen) == 5
        assert await bus_b.cancel(live.stream_id, "again") == "not_found"  # ended
        assert await bus_b.cancel("no-such-stream") == "not_found"
        assert listener.received == 1


async def test_readers_on_other_processes_are_counted(bus: RedisBus) -> None:
    bus.reader_attached("s1")
    bus.reader_attached("s1")
    await wait_for(lambda: bus.readers("s1"), 2)
    bus.reader_detached("s1")
    await wait_for(lambda: bus.readers("s1"), 1)
    assert await bus.readers("s2") == 0


async def wait_for(count: Any, expected: int) -> None:
    for _ in range(500):
        if await count() == expected:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the count is not {expected} after 5 s")


async def test_open_readers_and_tasks_are_released(redis_server: RedisServer) -> None:
    bus = RedisBus(redis_server.url, owner="proc-a", settings=settings())
    await bus.open()
    bus.listen(lambda stream_id, reason: None)
    live = Live(bus)
    live.push(make_events(live.stream_id, 5)[:3])
    await bus.publisher.flush()
    reader = await open_events(bus.client, live.stream_id, None, bus.settings)
    await take(reader, 3)
    blocked = asyncio.create_task(anext(reader))  # blocked in XREAD
    await asyncio.sleep(0.05)
    blocked.cancel()
    await asyncio.wait([blocked])
    await reader.aclose()
    await bus.close()
    names = {task.get_name() for task in asyncio.all_tasks()}
    assert not {n for n in names if n.startswith("rxllm-redis")}


async def test_catching_up_on_a_long_stream_lets_the_loop_turn_every_few_events(
    bus: RedisBus,
) -> None:
    # A reader catching up got hundreds of entries per read and yielded them in one loop
    # step. Loop turns of another task are counted between the events read.
    live = Live(bus)
    events = make_events(live.stream_id, 2_000)
    live.push(events)
    await bus.publisher.flush()
    seen: list[Event | None] = []  # an event, or None for a turn of the other task
    done = asyncio.Event()

    async def other_task() -> None:
        while not done.is_set():
            seen.append(None)
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    reader = await bus.events(live.stream_id)
    async with asyncio.timeout(10):
        async for event in reader:
            seen.append(event)
    done.set()
    await other
    assert [item for item in seen if item is not None] == events
    runs = "".join("e" if item is not None else " " for item in seen).split()
    assert max(len(run) for run in runs) <= TURN_MESSAGES
