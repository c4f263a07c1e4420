"""timeouts: first-token, idle and total limits, in virtual time."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from reactivex import Observable
from reactivex.testing import TestScheduler
from reactivex.testing.recorded import Recorded

from operators.map_errors import map_errors
from operators.timeouts import timeouts
from pipeline.core.errors import StreamTimeoutError
from pipeline.core.events import Event, Finished, Started, StreamError, TextDelta, UsageReport
from pipeline.core.sse_decoder import SSEMessage
from pipeline.runtime.standard_chain import llm_stream
from tests.virtual_time import SpyScheduler, on_completed, on_error, on_next

SID = "s1"


def note(message: Recorded[Any]) -> Any:
    """The recorded notification (reactivex types it as a union of predicates too)."""
    return message.value


def started(seq: int = 0) -> Started:
    return Started(stream_id=SID, seq=seq)


def text(seq: int, value: str = "x") -> TextDelta:
    return TextDelta(stream_id=SID, seq=seq, text=value)


def finished(seq: int) -> Finished:
    return Finished(stream_id=SID, seq=seq, finish_reason="stop")


def run(
    scheduler: TestScheduler,
    source: Observable[Event],
    first_token: float | None = None,
    idle: float | None = None,
    total: float | None = None,
) -> list[Recorded[Any]]:
    results = scheduler.start(lambda: source.pipe(timeouts(first_token, idle, total)))
    return list(results.messages)


def timeout_of(message: Recorded[Any]) -> tuple[float, str, float]:
    """(time, which, seconds) of a recorded on_error carrying a StreamTimeoutError."""
    error = note(message).exception
    assert isinstance(error, StreamTimeoutError)
    return message.time, error.which, error.seconds


# -- first token ---------------------------------------------------------------


def test_first_token_timeout_fires_and_disposes_upstream() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(on_next(0.1, started()))  # then silence
    messages = run(scheduler, xs, first_token=1.0)
    assert messages[0] == on_next(200.1, started())
    assert timeout_of(messages[1]) == (201.0, "first_token", 1.0)
    assert str(note(messages[1]).exception) == "first_token timeout of 1s expired"
    assert len(messages) == 2
    # The upstream subscription ended when the timeout fired: the request is cancelled.
    assert [(s.subscribe, s.unsubscribe) for s in xs.subscriptions] == [(200, 201.0)]


def test_first_token_in_time_cancels_the_timer() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(
        on_next(0.1, started()), on_next(0.9, text(1)), on_next(5.0, finished(2)), on_completed(5.0)
    )
    messages = run(scheduler, xs, first_token=1.0)
    assert messages == [
        on_next(200.1, started()),
        on_next(200.9, text(1)),
        on_next(205.0, finished(2)),
        on_completed(205.0),
    ]


def test_an_empty_text_delta_is_not_a_first_token() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(on_next(0.1, started()), on_next(0.5, text(1, "")))
    messages = run(scheduler, xs, first_token=1.0)
    assert timeout_of(messages[-1]) == (201.0, "first_token", 1.0)


def test_usage_is_not_a_first_token() -> None:
    scheduler = TestScheduler()
    usage = UsageReport(stream_id=SID, seq=1, usage={"prompt_tokens": 3})
    xs = scheduler.create_cold_observable(on_next(0.1, started()), on_next(0.5, usage))
    messages = run(scheduler, xs, first_token=1.0)
    assert timeout_of(messages[-1]) == (201.0, "first_token", 1.0)


# -- idle ------------------------------------------------------------------------


def test_idle_timeout_after_the_first_token() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(
        on_next(0.1, started()), on_next(0.5, text(1)), on_next(1.0, text(2))
    )
    messages = run(scheduler, xs, idle=2.0)
    assert messages[:3] == [
        on_next(200.1, started()),
        on_next(200.5, text(1)),
        on_next(201.0, text(2)),
    ]
    assert timeout_of(messages[3]) == (203.0, "idle", 2.0)
    assert [(s.subscribe, s.unsubscribe) for s in xs.subscriptions] == [(200, 203.0)]


def test_idle_is_reset_by_every_event() -> None:
    scheduler = TestScheduler()
    ticks = [0.5 + 1.5 * i for i in range(40)]  # every 1.5 s, under the 2 s limit
    xs = scheduler.create_cold_observable(
        *[on_next(t, text(i)) for i, t in enumerate(ticks)],
        on_next(ticks[-1] + 1.9, finished(40)),
        on_completed(ticks[-1] + 1.9),
    )
    messages = run(scheduler, xs, idle=2.0)
    assert [note(m).kind for m in messages] == ["N"] * 41 + ["C"]


def test_idle_uses_one_timer_per_interval_not_per_event() -> None:
    scheduler = SpyScheduler()
    xs = scheduler.create_cold_observable(
        *[on_next(0.5 + 0.01 * i, text(i)) for i in range(400)],  # 4 s of tokens
        on_next(4.6, finished(400)),
        on_completed(4.6),
    )
    messages = run(scheduler, xs, idle=1.0)
    assert len(messages) == 402 and messages[-1] == on_completed(204.6)
    timers = scheduler.scheduled - 402  # the cold observable schedules each message
    assert timers <= 6


def test_idle_does_not_apply_before_the_first_token() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(
        on_next(0.1, started()), on_next(5.0, text(1)), on_next(5.5, finished(2)), on_completed(6)
    )
    messages = run(scheduler, xs, idle=1.0)
    assert [note(m).kind for m in messages] == ["N", "N", "N", "C"]


def test_first_token_then_idle() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(on_next(0.1, started()), on_next(0.8, text(1)))
    messages = run(scheduler, xs, first_token=1.0, idle=3.0)
    assert timeout_of(messages[-1]) == (203.8, "idle", 3.0)


# -- total -----------------------------------------------------------------------


def test_total_timeout_while_tokens_flow() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(*[on_next(0.5 * i, text(i)) for i in range(1, 40)])
    messages = run(scheduler, xs, idle=1.0, total=3.0)
    assert timeout_of(messages[-1]) == (203.0, "total", 3.0)
    assert all(m.time <= 203.0 for m in messages)
    assert [(s.subscribe, s.unsubscribe) for s in xs.subscriptions] == [(200, 203.0)]


# -- ending ----------------------------------------------------------------------


def test_a_terminal_event_stops_every_timer() -> None:
    scheduler = SpyScheduler()
    xs = scheduler.create_cold_observable(on_next(0.1, started()), on_next(0.5, finished(1)))
    messages = run(scheduler, xs, first_token=1.0, total=2.0)
    assert messages == [on_next(200.1, started()), on_next(200.5, finished(1))]


def test_upstream_error_passes_through_once() -> None:
    scheduler = TestScheduler()
    boom = RuntimeError("boom")
    xs = scheduler.create_cold_observable(on_next(0.1, started()), on_error(0.5, boom))
    messages = run(scheduler, xs, first_token=1.0, total=2.0)
    assert messages == [on_next(200.1, started()), on_error(200.5, boom)]


def test_dispose_cancels_the_timers() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(on_next(0.1, started()))
    results = scheduler.start(lambda: xs.pipe(timeouts(first_token=1.0, total=2.0)), disposed=200.5)
    assert results.messages == [on_next(200.1, started())]


def test_no_limit_returns_the_source() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(on_next(0.1, started()))
    assert timeouts()(xs) is xs


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf])
def test_bad_limits_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="positive number"):
        timeouts(first_token=bad)
    with pytest.raises(ValueError, match="idle"):
        timeouts(idle=bad)
    with pytest.raises(ValueError, match="total"):
        timeouts(total=bad)


# -- as error events ---------------------------------------------------------------


def error_event(messages: list[Recorded[Any]]) -> StreamError:
    value = note(messages[-2]).value
    assert isinstance(value, StreamError)
    assert note(messages[-1]).kind == "C"
    return value


def test_before_map_errors_a_first_token_timeout_is_a_retryable_error_event() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(on_next(0.1, started()))
    results = scheduler.start(
        lambda: xs.pipe(timeouts(first_token=1.0), map_errors(SID, scheduler=scheduler))
    )
    error = error_event(list(results.messages))
    assert (error.kind, error.retryable, error.after_first_token) == ("timeout", True, False)
    assert (error.seq, error.t, error.stream_id) == (1, 1.0, SID)
    assert error.message == "first_token timeout of 1s expired"


def test_an_idle_timeout_after_content_says_after_first_token() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(on_next(0.1, started()), on_next(0.2, text(1)))
    results = scheduler.start(
        lambda: xs.pipe(timeouts(idle=1.0), map_errors(SID, scheduler=scheduler))
    )
    error = error_event(list(results.messages))
    assert (error.kind, error.retryable, error.after_first_token) == ("timeout", True, True)
    assert error.message == "idle timeout of 1s expired"


def chunk(**delta: Any) -> SSEMessage:
    body = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }
    return SSEMessage(json.dumps(body))


def test_llm_stream_timeouts() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(
        on_next(0.1, chunk(role="assistant")),
        on_next(0.5, chunk(content="Hel")),
        # then silence: the idle limit ends it
    )
    results = scheduler.start(
        lambda: llm_stream(
            xs, stream_id=SID, first_token_timeout=1.0, idle_timeout=2.0, scheduler=scheduler
        )
    )
    events = [note(m).value for m in results.messages if note(m).kind == "N"]
    assert [e.type for e in events] == ["started", "text", "error"]
    assert [e.seq for e in events] == [0, 1, 2]
    error = events[-1]
    assert isinstance(error, StreamError)
    assert (error.kind, error.retryable, error.after_first_token) == ("timeout", True, True)
    assert error.t == 2.5
    # Disposed when the idle timeout fired (the recorder truncates times to ints).
    assert [(s.subscribe, s.unsubscribe) for s in xs.subscriptions] == [(200, 202)]


def test_llm_stream_without_timeouts_is_unchanged() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_cold_observable(on_next(0.1, chunk(role="assistant")))
    results = scheduler.start(lambda: llm_stream(xs, stream_id=SID), disposed=10_000)
    assert [note(m).value.type for m in results.messages] == ["started"]
