"""The stream hub: resume from any point, live continuation, gaps, cancel, retention."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from reactivex.subject import Subject

from pipeline.core.events import (
    Cancelled,
    Event,
    EventBase,
    Finished,
    Started,
    TextDelta,
    ToolCallDelta,
)
from pipeline.core.flow_control import TURN_MESSAGES
from pipeline.runtime.multicast import StreamRun
from pipeline.runtime.stream_hub import ResumeGapError, StreamHub, StreamNotFoundError


def make_events(n: int, stream_id: str = "s") -> list[Event]:
    """``started``, ``n`` text deltas ("0", "1", ...), ``finished``."""
    events: list[Event] = [Started(stream_id=stream_id, seq=0)]
    events += [TextDelta(stream_id=stream_id, seq=i + 1, text=str(i)) for i in range(n)]
    events.append(Finished(stream_id=stream_id, seq=n + 1))
    return events


def driven(hub: StreamHub, stream_id: str = "s", **kw: Any) -> tuple[StreamRun, Subject[Any]]:
    source: Subject[Any] = Subject()
    run = StreamRun(source, stream_id=stream_id)
    hub.register(run, **kw)
    run.start()
    return run, source


async def collect(events: AsyncIterator[Event]) -> list[Event]:
    async with asyncio.timeout(5):
        return [event async for event in events]


async def test_resume_after_any_seq_of_a_finished_stream() -> None:
    hub = StreamHub()
    events = make_events(6)
    run, source = driven(hub)
    for event in events:
        source.on_next(event)
    assert run.terminal is not None
    assert await collect(hub.events("s")) == events
    for after in range(-1, len(events) + 2):
        assert await collect(hub.events("s", after)) == events[after + 1 :], after


async def test_the_replay_buffer_holds_nothing_the_garbage_collector_walks() -> None:
    # Event objects (each a tracked instance plus a tracked set) kept by the thousand per
    # stream made every full collection of a busy server walk millions of them.
    hub = StreamHub()
    _, source = driven(hub)
    events = make_events(50)
    for event in events[:-1]:
        source.on_next(event)
    buffered = list(hub._entries["s"].buffer)
    gc.collect()  # tuples of untracked values are untracked by a collection
    assert len(buffered) == 51 and not any(gc.is_tracked(item) for item in buffered)
    source.on_next(events[-1])
    assert await collect(hub.events("s", 10)) == events[11:]


async def test_an_event_that_is_not_json_is_replayed_as_it_is() -> None:
    hub = StreamHub()
    _, source = driven(hub)
    odd = ToolCallDelta(stream_id="s", seq=1, index=0, arguments="{", partial=object())
    events = [Started(stream_id="s", seq=0), odd, Finished(stream_id="s", seq=2)]
    for event in events:
        source.on_next(event)
    replayed = await collect(hub.events("s"))
    assert replayed == events and replayed[1] is odd


@pytest.mark.parametrize("pushed_before", [0, 1, 3, 5, 8])
async def test_live_continuation_has_no_gap_and_no_duplicate(pushed_before: int) -> None:
    events = make_events(6)
    for after in [None, *range(-1, pushed_before)]:  # the reader saw up to `after`
        hub = StreamHub()
        _, source = driven(hub)
        for event in events[:pushed_before]:
            source.on_next(event)
        reader = hub.events("s", after)
        rest = iter(events[pushed_before:])
        # One event arrives before the first read, then one more after each read.
        first = next(rest, None)
        if first is not None:
            source.on_next(first)
        seen: list[Event] = []
        async with asyncio.timeout(5):
            async for event in reader:
                seen.append(event)
                following = next(rest, None)
                if following is not None:
                    source.on_next(following)
        start = 0 if after is None else after + 1
        assert seen == events[start:], (pushed_before, after)


async def test_a_slow_reader_gets_merged_deltas_without_duplicated_text() -> None:
    hub = StreamHub()
    events = make_events(40)
    _, source = driven(hub)
    for event in events[:4]:
        source.on_next(event)
    reader = hub.events("s", after=1, maxsize=2)
    for event in events[4:]:  # all before the reader reads: its live buffer merges deltas
        source.on_next(event)
    seen = await collect(reader)
    text = "".join(e.text for e in seen if isinstance(e, TextDelta))
    assert text == "".join(e.text for e in events[2:] if isinstance(e, TextDelta))
    assert [e.seq for e in seen] == sorted({e.seq for e in seen})
    assert seen[-1] == events[-1]


async def test_gap_when_resuming_from_before_the_buffer() -> None:
    hub = StreamHub(replay_size=3)
    events = make_events(8)  # seq 0..9
    _, source = driven(hub)
    for event in events:
        source.on_next(event)
    with pytest.raises(ResumeGapError) as info:
        hub.events("s", after=5)
    assert (info.value.oldest, info.value.dropped) == (7, 6)
    with pytest.raises(ResumeGapError):
        hub.events("s")
    assert await collect(hub.events("s", after=6)) == events[7:]
    assert await collect(hub.events("s", after=8)) == events[9:]


async def test_gap_check_detaches_the_live_reader() -> None:
    hub = StreamHub(replay_size=2)
    run, source = driven(hub)
    for event in make_events(5)[:5]:
        source.on_next(event)
    observers = run.sink_count
    with pytest.raises(ResumeGapError):
        hub.events("s", after=0)
    assert run.sink_count == observers
    reader = hub.events("s", after=3)
    assert run.sink_count == observers + 1
    assert [e.seq async for e in _take(reader, 1)] == [4]
    await reader.aclose()  # type: ignore[attr-defined]
    assert run.sink_count == observers


async def _take(events: AsyncIterator[Event], n: int) -> AsyncIterator[Event]:
    async with asyncio.timeout(5):
        for _ in range(n):
            yield await anext(events)


async def test_cancel_through_the_hub_reaches_readers_and_sinks() -> None:
    hub = StreamHub()
    source: Subject[Any] = Subject()
    run = StreamRun(source, stream_id="s")
    sink: list[EventBase] = []
    run.subscribe(sink.append)
    hub.register(run)
    run.start()
    source.on_next(Started(stream_id="s", seq=0))
    reader = hub.events("s")
    assert hub.live() == ["s"]
    assert hub.cancel("s", "operator asked") is True
    assert hub.cancel("s") is False
    seen = await collect(reader)
    assert isinstance(seen[-1], Cancelled) and seen[-1].reason == "operator asked"
    assert isinstance(sink[-1], Cancelled)
    assert hub.live() == []
    with pytest.raises(StreamNotFoundError):
        hub.cancel("nope")
    with pytest.raises(StreamNotFoundError):
        hub.events("nope")


def test_finished_streams_are_dropped_after_a_time_and_beyond_a_count() -> None:
    now = [0.0]
    hub = StreamHub(keep_finished=10, max_finished=2, clock=lambda: now[0])
    for name in "abc":
        _, source = driven(hub, name)
        for event in make_events(1, name):
            source.on_next(event)
        now[0] += 1
    driven(hub, "live")
    assert "a" not in hub  # the oldest of three finished streams, with two kept
    assert hub.get("b") is not None and list(hub) == ["b", "c", "live"]
    now[0] = 11.5  # b finished at 1, c at 2
    assert list(hub) == ["c", "live"]
    now[0] = 100
    assert list(hub) == ["live"] and len(hub) == 1


def test_register_checks() -> None:
    hub = StreamHub()
    source: Subject[Any] = Subject()
    with pytest.raises(ValueError, match="no id"):
        hub.register(StreamRun(source))
    assert hub.register(StreamRun(source), stream_id="x") == "x"
    with pytest.raises(ValueError, match="already registered"):
        hub.register(StreamRun(source, stream_id="x"))
    started = StreamRun(source, stream_id="y")
    started.start()
    with pytest.raises(ValueError, match=r"before run\.start"):
        hub.register(started)
    with pytest.raises(ValueError):
        StreamHub(replay_size=0)
    assert hub.get("missing") is None


async def test_a_long_replay_lets_the_loop_turn_every_few_events() -> None:
    # A resume replayed thousands of buffered events in one loop step: every other
    # stream waited for all of them. Loop turns are counted between the events read.
    hub = StreamHub()
    _, source = driven(hub, replay_size=5_000)
    events = make_events(3_000)
    for event in events:
        source.on_next(event)
    seen: list[Event | None] = []  # an event, or None for a turn of the other task
    done = False

    async def other_task() -> None:
        while not done:
            seen.append(None)
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    async for event in hub.events("s"):
        seen.append(event)
    done = True
    await other
    assert [item for item in seen if item is not None] == events
    runs = "".join("e" if item is not None else " " for item in seen).split()
    assert max(len(run) for run in runs) <= TURN_MESSAGES
