"""batch_flush: first token at once, later events coalesced per interval, in virtual time."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex import Observable, abc, typing
from reactivex.disposable import Disposable
from reactivex.notification import OnNext
from reactivex.subject import Subject
from reactivex.testing import TestScheduler
from reactivex.testing.marbles import marbles_testing
from reactivex.testing.recorded import Recorded

from operators.batch_flush import batch_flush
from pipeline.core.events import (
    Cancelled,
    ChoiceFinished,
    Event,
    Finished,
    ReasoningDelta,
    Started,
    StreamError,
    TextDelta,
    ToolCallStarted,
    UsageReport,
)
from tests.virtual_time import SpyScheduler, on_completed, on_error, on_next

_S = TypeVar("_S")
SID = "s1"


def started(seq: int = 0) -> Started:
    return Started(stream_id=SID, seq=seq)


def text(seq: int, value: str = "x") -> TextDelta:
    return TextDelta(stream_id=SID, seq=seq, text=value)


def finished(seq: int) -> Finished:
    return Finished(stream_id=SID, seq=seq, finish_reason="stop")


def run(
    *messages: Recorded[Any],
    interval: float = 0.05,
    max_batch: int = 64,
    disposed: float | None = None,
    scheduler: TestScheduler | None = None,
) -> list[Recorded[Any]]:
    """Run a hot source of ``messages`` (absolute ticks) through batch_flush."""
    scheduler = scheduler or TestScheduler()
    source: Observable[Event] = scheduler.create_hot_observable(*messages)
    observer = scheduler.start(
        lambda: source.pipe(batch_flush(interval, max_batch)), disposed=disposed
    )
    return observer.messages


def test_marble_diagram_from_the_docstring() -> None:
    lookup: dict[str | float, Any] = {
        "s": started(0),
        "a": text(1, "He"),
        "b": text(2, "ll"),
        "c": text(3, "o"),
        "d": text(4, "!"),
        "F": finished(5),
    }
    with marbles_testing(timespan=1.0) as (start, cold, _hot, exp):
        source = cold("-s-a-b-c-----d-F-|", lookup, None)
        expected = exp(
            "-s-a----x------y-|",
            {
                "s": [lookup["s"]],
                "a": [lookup["a"]],
                "x": [lookup["b"], lookup["c"]],
                "y": [lookup["d"], lookup["F"]],
            },
            None,
        )
        assert start(source.pipe(batch_flush(3.0))) == expected


def test_everything_up_to_the_first_token_goes_out_at_once() -> None:
    usage = UsageReport(stream_id=SID, seq=2, usage={})
    messages = run(
        on_next(201, started()),
        on_next(202, text(1, "")),  # empty: not a token
        on_next(203, usage),
        on_next(204, text(3, "Hi")),
        on_next(205, text(4)),
    )
    assert messages[:4] == [
        on_next(201, [started()]),
        on_next(202, [text(1, "")]),
        on_next(203, [usage]),
        on_next(204, [text(3, "Hi")]),
    ]
    assert messages[4] == on_next(205.05, [text(4)])


@pytest.mark.parametrize(
    "first",
    [
        ReasoningDelta(stream_id=SID, seq=1, text="hmm"),
        ToolCallStarted(stream_id=SID, seq=1, index=0, name="f"),
    ],
)
def test_reasoning_and_tool_calls_count_as_first_token(first: Event) -> None:
    messages = run(on_next(201, first), on_next(201, text(2)), on_next(201, text(3)))
    assert messages == [on_next(201, [first]), on_next(201.05, [text(2), text(3)])]


def test_coalescing_per_interval() -> None:
    scheduler = SpyScheduler()
    messages = run(
        on_next(200.001, text(0)),
        on_next(200.010, text(1)),
        on_next(200.020, text(2)),
        on_next(200.059, text(3)),
        on_next(200.061, text(4)),  # just after the first timer: starts a new buffer
        on_next(200.300, text(5)),
        scheduler=scheduler,
    )
    assert messages == [
        on_next(200.001, [text(0)]),
        on_next(200.060, [text(1), text(2), text(3)]),
        on_next(200.111, [text(4)]),
        on_next(200.350, [text(5)]),
    ]
    assert scheduler.scheduled == scheduler.fired == 3  # one timer per batch, none idle


def test_max_batch_splits_at_once() -> None:
    scheduler = SpyScheduler()
    burst = [on_next(201, text(i)) for i in range(1, 8)]
    messages = run(on_next(200.5, text(0)), *burst, max_batch=3, scheduler=scheduler)
    assert messages == [
        on_next(200.5, [text(0)]),
        on_next(201, [text(1), text(2), text(3)]),
        on_next(201, [text(4), text(5), text(6)]),
        on_next(201.05, [text(7)]),
    ]
    assert scheduler.fired == 1


@pytest.mark.parametrize(
    "terminal",
    [
        finished(3),
        StreamError(stream_id=SID, seq=3, kind="connection", message="lost"),
        Cancelled(stream_id=SID, seq=3, reason="client gone"),
    ],
)
def test_terminal_event_flushes_at_once(terminal: Event) -> None:
    scheduler = SpyScheduler()
    messages = run(
        on_next(201, text(0)),
        on_next(201.01, text(1)),
        on_next(201.02, text(2)),
        on_next(201.03, terminal),
        on_completed(201.04),
        scheduler=scheduler,
    )
    assert messages == [
        on_next(201, [text(0)]),
        on_next(201.03, [text(1), text(2), terminal]),
        on_completed(201.04),
    ]
    assert scheduler.fired == 0


def test_choice_finished_is_not_terminal() -> None:
    done = ChoiceFinished(stream_id=SID, seq=2, finish_reason="stop")
    messages = run(on_next(201, text(0)), on_next(201.01, text(1)), on_next(201.02, done))
    assert messages == [on_next(201, [text(0)]), on_next(201.06, [text(1), done])]


def test_error_flushes_the_buffer_then_propagates() -> None:
    error = RuntimeError("upstream broke")
    messages = run(
        on_next(201, text(0)), on_next(201.01, text(1)), on_next(201.02, text(2)),
        on_error(201.03, error),
    )  # fmt: skip
    assert messages == [
        on_next(201, [text(0)]),
        on_next(201.03, [text(1), text(2)]),
        on_error(201.03, error),
    ]


def test_completion_flushes_the_buffer() -> None:
    messages = run(on_next(201, text(0)), on_next(201.01, text(1)), on_completed(201.02))
    assert messages == [
        on_next(201, [text(0)]),
        on_next(201.02, [text(1)]),
        on_completed(201.02),
    ]


def test_empty_stream_emits_no_batch() -> None:
    assert run(on_completed(201)) == [on_completed(201)]


def test_disposal_cancels_the_pending_timer() -> None:
    scheduler = SpyScheduler()
    messages = run(
        on_next(201, text(0)),
        on_next(201.01, text(1)),
        disposed=201.03,
        scheduler=scheduler,
    )
    assert messages == [on_next(201, [text(0)])]
    assert (scheduler.scheduled, scheduler.fired) == (1, 0)


class UncancellableScheduler(TestScheduler):
    """Timers that cannot be cancelled: as when a timer thread has already started."""

    def schedule_relative(
        self,
        duetime: typing.RelativeTime,
        action: typing.ScheduledAction[_S],
        state: _S | None = None,
    ) -> abc.DisposableBase:
        super().schedule_relative(duetime, action, state)
        return Disposable()


def test_a_stale_timer_does_not_flush_a_newer_buffer() -> None:
    messages = run(
        on_next(201, text(0)),
        on_next(201.01, text(1)),  # timer A, due 201.06
        on_next(201.02, text(2)),  # max_batch: flush (A cannot be cancelled)
        on_next(201.04, text(3)),  # timer B, due 201.09
        max_batch=2,
        disposed=201.2,
        scheduler=UncancellableScheduler(),
    )
    assert messages == [
        on_next(201, [text(0)]),
        on_next(201.02, [text(1), text(2)]),
        on_next(201.09, [text(3)]),
    ]


def test_subscribe_time_scheduler_is_used() -> None:
    scheduler = TestScheduler()
    subject: Subject[Event] = Subject()
    batches: list[list[Event]] = []
    subject.pipe(batch_flush(0.05)).subscribe(batches.append, scheduler=scheduler)
    subject.on_next(text(0))
    subject.on_next(text(1))
    assert batches == [[text(0)]]
    scheduler.advance_by(0.05)
    assert batches == [[text(0)], [text(1)]]


async def test_default_scheduler_fires_on_the_running_loop() -> None:
    subject: Subject[Event] = Subject()
    threads: list[threading.Thread] = []
    flushed = asyncio.Event()

    def on_batch(batch: list[Event]) -> None:
        threads.append(threading.current_thread())
        if len(threads) == 2:
            flushed.set()

    subject.pipe(batch_flush(0.001)).subscribe(on_batch)
    subject.on_next(text(0))
    subject.on_next(text(1))
    await asyncio.wait_for(flushed.wait(), 5)
    assert threads == [threading.current_thread()] * 2


@pytest.mark.parametrize(("interval", "max_batch"), [(-0.1, 4), (0.05, 0)])
def test_invalid_arguments(interval: float, max_batch: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        batch_flush(interval, max_batch)


KINDS = st.sampled_from(["started", "text", "empty", "usage", "tool"])


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(0, 80), KINDS), max_size=40),
    terminal=st.sampled_from([None, "finished", "error", "complete"]),
    interval_ms=st.integers(1, 60),
    max_batch=st.integers(1, 6),
)
def test_nothing_is_dropped_or_reordered(
    steps: list[tuple[int, str]], terminal: str | None, interval_ms: int, max_batch: int
) -> None:
    interval = interval_ms / 1000
    events: list[Event] = []
    messages: list[Recorded[Any]] = []
    t = 200.001
    for i, (gap_ms, kind) in enumerate(steps):
        t = round(t + gap_ms / 1000, 3)
        event: Event
        if kind == "started":
            event = started(i)
        elif kind == "usage":
            event = UsageReport(stream_id=SID, seq=i, usage={})
        elif kind == "tool":
            event = ToolCallStarted(stream_id=SID, seq=i, index=0)
        else:
            event = text(i, "" if kind == "empty" else "x")
        events.append(event)
        messages.append(on_next(t, event))
    t = round(t + 0.001, 3)
    if terminal == "finished":
        events.append(finished(len(events)))
        messages.append(on_next(t, events[-1]))
    elif terminal == "error":
        messages.append(on_error(t, RuntimeError("x")))
    elif terminal == "complete":
        messages.append(on_completed(t))

    out = run(*messages, interval=interval, max_batch=max_batch)
    batches = [(m.time, m.value.value) for m in out if isinstance(m.value, OnNext)]
    assert [e for _, batch in batches for e in batch] == events
    arrival = {e.seq: m.time for e, m in zip(events, messages, strict=False)}
    for time, batch in batches:
        assert isinstance(batch, list) and 1 <= len(batch) <= max_batch
        # the oldest event of a batch never waits longer than the interval
        assert time <= arrival[batch[0].seq] + interval + 1e-6
    # up to and including the first token, each event is its own batch, sent on arrival
    first = next((i for i, (_, kind) in enumerate(steps) if kind in ("text", "tool")), None)
    immediate = events if first is None else events[: first + 1]
    assert [batch for _, batch in batches[: len(immediate)]] == [[e] for e in immediate]
    for (time, _), e in zip(batches, immediate, strict=False):
        assert time == pytest.approx(arrival[e.seq], abs=1e-6)
