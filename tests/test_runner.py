"""Multicast: one upstream subscription feeds every sink; cancel reaches all of them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import reactivex
from reactivex import Observable, abc
from reactivex.disposable import Disposable
from reactivex.subject import Subject

from pipeline.core.events import Cancelled, EventBase, Started, TextDelta, is_terminal
from pipeline.runtime.multicast import StreamRun
from pipeline.runtime.sources import sse_body
from pipeline.runtime.standard_chain import llm_stream
from tests.fixtures import TEXT_STREAM


class CountingSource:
    """A hot source that counts subscriptions and disposals."""

    def __init__(self) -> None:
        self.subject: Subject[Any] = Subject()
        self.subscriptions = 0
        self.disposed = 0
        self.observable: Observable[Any] = Observable(self._subscribe)

    def _subscribe(
        self, observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        self.subscriptions += 1
        inner = self.subject.subscribe(observer)

        def dispose() -> None:
            self.disposed += 1
            inner.dispose()

        return Disposable(dispose)


def text(seq: int, value: str) -> TextDelta:
    return TextDelta(stream_id="s", seq=seq, text=value)


def test_every_sink_gets_every_event_from_one_upstream_subscription() -> None:
    calls = 0

    def factory(_: abc.SchedulerBase | None) -> Observable[Any]:
        nonlocal calls
        calls += 1
        return sse_body(TEXT_STREAM)

    run = StreamRun(llm_stream(reactivex.defer(factory)))
    a: list[EventBase] = []
    b: list[EventBase] = []
    run.subscribe(a.append)
    run.subscribe(b.append)
    assert calls == 0, "nothing is requested before start()"
    run.start()
    assert calls == 1
    assert a == b
    assert a[0].type == "started"  # type: ignore[attr-defined]
    assert is_terminal(a[-1])


def test_cancel_disposes_upstream_and_sinks_get_cancelled() -> None:
    source = CountingSource()
    run = StreamRun(source.observable, stream_id="s")
    seen: list[EventBase] = []
    completed: list[bool] = []
    run.subscribe(reactivex.Observer(seen.append, None, lambda: completed.append(True)))
    run.start()
    source.subject.on_next(Started(stream_id="s", seq=0))
    source.subject.on_next(text(1, "a"))
    run.cancel("client went away")
    assert source.disposed == 1
    assert isinstance(seen[-1], Cancelled)
    assert seen[-1].seq == 2
    assert seen[-1].reason == "client went away"
    assert completed == [True]
    source.subject.on_next(text(2, "late"))  # nothing after the terminal event
    run.cancel("again")
    assert [e.seq for e in seen] == [0, 1, 2]


def test_cancel_after_terminal_is_a_no_op() -> None:
    run = StreamRun(llm_stream(sse_body(TEXT_STREAM)))
    seen: list[EventBase] = []
    run.subscribe(seen.append)
    run.start()
    run.cancel()
    assert [is_terminal(e) for e in seen].count(True) == 1
    assert seen[-1].type == "finished"  # type: ignore[attr-defined]


def test_upstream_error_becomes_terminal_event_for_all_sinks() -> None:
    source = CountingSource()
    run = StreamRun(source.observable, stream_id="s")
    seen: list[EventBase] = []
    run.subscribe(seen.append)
    run.start()
    source.subject.on_next(Started(stream_id="s", seq=0))
    source.subject.on_error(ConnectionResetError("peer reset"))
    assert seen[-1].type == "error"  # type: ignore[attr-defined]
    assert seen[-1].seq == 1


def test_a_failing_sink_is_detached_and_the_others_continue() -> None:
    source = CountingSource()
    run = StreamRun(source.observable, stream_id="s")
    good: list[EventBase] = []
    bad_calls = 0

    def bad(_: EventBase) -> None:
        nonlocal bad_calls
        bad_calls += 1
        raise RuntimeError("sink bug")

    run.subscribe(bad)
    run.subscribe(good.append)
    run.start()
    source.subject.on_next(Started(stream_id="s", seq=0))
    source.subject.on_next(text(1, "a"))
    source.subject.on_completed()
    assert bad_calls == 1
    assert [e.seq for e in good] == [0, 1, 2]


def test_start_twice_is_refused() -> None:
    run = StreamRun(llm_stream(sse_body(TEXT_STREAM)))
    run.start()
    with pytest.raises(RuntimeError):
        run.start()


async def test_async_reader_attached_before_start_misses_nothing() -> None:
    source = CountingSource()
    run = StreamRun(source.observable, stream_id="s")
    reader = run.iterate()
    run.start()
    source.subject.on_next(Started(stream_id="s", seq=0))
    source.subject.on_next(text(1, "a"))
    source.subject.on_completed()
    got = [e async for e in reader]
    assert [e.seq for e in got] == [0, 1, 2]
    assert (await run.wait()).type == "error"  # type: ignore[attr-defined]


async def test_closing_one_reader_does_not_cancel_the_stream() -> None:
    source = CountingSource()
    run = StreamRun(source.observable, stream_id="s")
    first = run.iterate()
    other: list[EventBase] = []
    run.subscribe(other.append)
    run.start()
    source.subject.on_next(Started(stream_id="s", seq=0))
    async for _ in first:
        break
    await first.aclose()
    source.subject.on_next(text(1, "a"))
    assert source.disposed == 0
    assert [e.seq for e in other] == [0, 1]
    run.cancel()
    await asyncio.wait_for(run.wait(), 1)


def test_sinks_detach_on_dispose_and_late_subscribers_get_only_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = CountingSource()
    run = StreamRun(source.observable, stream_id="s")
    kept: list[EventBase] = []
    left: list[EventBase] = []
    run.subscribe(kept.append)
    leaving = run.subscribe(left.append)
    assert run.sink_count == 2
    run.start()
    source.subject.on_next(Started(stream_id="s", seq=0))
    leaving.dispose()
    leaving.dispose()  # idempotent
    assert run.sink_count == 1
    joined: list[EventBase] = []
    run.observe(joined.append)  # a reader joining mid-stream on purpose: no warning
    assert not [r for r in caplog.records if "after it started" in r.message]
    run.subscribe(lambda _: None)  # a sink attached too late is warned about
    assert [r for r in caplog.records if "after it started" in r.message]
    source.subject.on_next(text(1, "a"))
    source.subject.on_completed()
    assert [e.seq for e in kept] == [0, 1, 2] and [e.seq for e in left] == [0]
    assert [e.seq for e in joined] == [1, 2]
    assert run.sink_count == 0, "the sinks are let go at the end"
    ends: list[str] = []
    run.events.subscribe(lambda _: ends.append("event"), None, lambda: ends.append("completed"))
    assert ends == ["completed"]


def test_a_sink_failing_at_the_end_does_not_keep_the_others_from_completing() -> None:
    source = CountingSource()
    run = StreamRun(source.observable, stream_id="s")
    done: list[str] = []

    def broken() -> None:
        raise RuntimeError("sink bug at the end")

    run.subscribe(reactivex.Observer(None, None, broken))
    run.subscribe(reactivex.Observer(None, None, lambda: done.append("completed")))
    run.start()
    source.subject.on_next(Started(stream_id="s", seq=0))
    source.subject.on_completed()
    assert done == ["completed"]
