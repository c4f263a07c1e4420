"""The per-chunk fast paths make exactly what the general paths make (issue 4).

Each fast path (event construction without validation, ``model_copy``
without its overhead, the SSE decoder's one-frame case, the type-keyed
``is_content``/``is_terminal``, the Accumulator's counters) is compared with
the general path it short-cuts, including the inputs that must fall back.
No timing here: speed is measured by ``python -m bench.run``.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from operators._stamp import Stamper, replace
from pipeline.core.events import (
    Cancelled,
    ChoiceFinished,
    Finished,
    ReasoningDelta,
    RefusalDelta,
    Started,
    StreamError,
    TextDelta,
    ToolCallDelta,
    ToolCallStarted,
    is_content,
    is_terminal,
)
from pipeline.core.result import Accumulator
from pipeline.core.sse_decoder import SSEDecoder, SSEMessage


def hashed(event: BaseModel) -> int | None:
    try:
        return hash(event)
    except TypeError:  # a dict or list value (``partial``, ``parsed``)
        return None


def state(event: BaseModel) -> tuple[Any, ...]:
    """Everything that makes a pydantic object what it is, in order."""
    return (
        type(event),
        list(event.__dict__.items()),
        event.model_fields_set,
        event.__pydantic_extra__,
        event.__pydantic_private__,
        repr(event),
        event.model_dump_json(),
        hashed(event),
    )


class Text(str):
    pass


@pytest.mark.parametrize("cls", [TextDelta, ReasoningDelta, RefusalDelta])
@pytest.mark.parametrize(
    ("choice", "t", "text"),
    [(0, 0.25, "hi"), (3, 1.5, ""), (True, 0.25, "hi"), (0, 1, "hi"), (0, 0.5, Text("sub"))],
)
def test_text_events_are_what_validation_makes(cls: Any, choice: Any, t: Any, text: Any) -> None:
    made = Stamper("s", 7).text(cls, choice, t, text)
    assert state(made) == state(cls(stream_id="s", seq=7, t=t, choice=choice, text=text))


@pytest.mark.parametrize(
    ("choice", "t", "index", "arguments"),
    [(0, 0.25, 0, '{"a": 1'), (2, 0.0, 5, ""), (0, 0, False, "x"), (0, 0.5, 1, Text("y"))],
)
def test_tool_deltas_are_what_validation_makes(
    choice: Any, t: Any, index: Any, arguments: Any
) -> None:
    made = Stamper("s", 2).tool_delta(choice, t, index, arguments)
    expected = ToolCallDelta(
        stream_id="s", seq=2, t=t, choice=choice, index=index, arguments=arguments
    )
    assert state(made) == state(expected)


def test_values_of_the_wrong_type_still_fail_validation() -> None:
    with pytest.raises(ValidationError):
        Stamper("s").text(TextDelta, "first", 0.0, "hi")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Stamper("s").tool_delta(0, 0.0, None, "x")  # type: ignore[arg-type]


def test_the_stamper_numbers_every_event() -> None:
    stamp = Stamper("s")
    events = [
        stamp.text(TextDelta, 0, 0.0, "a"),
        stamp(ChoiceFinished, 0, 0.0, finish_reason="stop"),
        stamp.tool_delta(0, 0.0, 0, "{}"),
    ]
    assert [e.seq for e in events] == [0, 1, 2]


def test_replace_is_model_copy() -> None:
    delta = ToolCallDelta(stream_id="s", seq=1, index=0, arguments='{"a"')
    update = {"partial": {"a": None}, "seq": 4}
    assert state(replace(delta, update)) == state(delta.model_copy(update=update))
    text = TextDelta(stream_id="s", seq=1, text="x")
    assert state(replace(text, {"seq": 9})) == state(text.model_copy(update={"seq": 9}))


def test_event_kinds_of_subclasses_fall_back_to_isinstance() -> None:
    class MyText(TextDelta):
        pass

    class MyFinished(Finished):
        pass

    assert is_content(MyText(stream_id="s", seq=1, text="x"))
    assert not is_content(MyText(stream_id="s", seq=1, text=""))
    assert is_terminal(MyFinished(stream_id="s", seq=1))
    assert not is_terminal(MyText(stream_id="s", seq=1, text="x"))
    assert is_content(ToolCallStarted(stream_id="s", seq=1, index=0))
    assert not is_content(Started(stream_id="s", seq=0))
    for terminal in (
        Finished(stream_id="s", seq=1),
        StreamError(stream_id="s", seq=1, kind="internal", message="x"),
        Cancelled(stream_id="s", seq=1),
    ):
        assert is_terminal(terminal)


def decode_all(chunks: list[bytes]) -> list[SSEMessage]:
    decoder = SSEDecoder()
    out = [m for chunk in chunks for m in decoder.decode(chunk, 0.5)]
    return out + decoder.flush(0.5)


def test_one_frame_fast_path_keeps_pending_fields() -> None:
    # An "event:" line or "id:" arriving in an earlier chunk applies to the next frame.
    got = decode_all([b"event: error\n", b'data: {"a": 1}\n\n', b"id: 7\n", b"data: x\n\n"])
    assert got == [
        SSEMessage('{"a": 1}', "error", None, 0.5),
        SSEMessage("x", None, "7", 0.5),
    ]
    assert all(type(m) is SSEMessage for m in got)


@pytest.mark.parametrize(
    "body",
    [
        b"data: one\n\ndata: two\n\n",
        b"data: a\ndata: b\n\n",
        b"data:  spaced\n\n",
        b"data:nospace\n\n",
        b": ping\n\ndata: x\n\n",
        b"data: \xc3\xa9t\xc3\xa9\n\n",
        b"data: bad \xff byte\n\n",
        b"data: \n\n",
        b"data: x\r\n\r\ndata: y\r\rdata: z\n\n",
    ],
)
def test_fast_and_general_paths_agree_at_every_split(body: bytes) -> None:
    whole = decode_all([body])
    for cut in range(1, len(body)):
        assert decode_all([body[:cut], body[cut:]]) == whole, cut
    assert decode_all([bytes([b]) for b in body]) == whole


def test_accumulator_result_is_unchanged_by_its_counters() -> None:
    acc = Accumulator()
    assert acc.result().model_fields_set == {"choices"}
    acc.add(Started(stream_id="s", seq=0))
    assert acc.result().events == 1
    assert "content_events" not in acc.result().model_fields_set
    acc.add(TextDelta(stream_id="s", seq=1, t=0.5, text=""))
    acc.add(TextDelta(stream_id="s", seq=2, t=0.75, text="hi"))
    acc.add(Finished(stream_id="s", seq=3, t=1.0))
    result = acc.result()
    assert (result.events, result.content_events, result.first_token_at) == (4, 1, 0.75)
    assert result.choices[0].content == "hi"
    assert {"events", "content_events", "first_token_at", "stream_id"} <= result.model_fields_set


def test_event_json_is_model_dump_json() -> None:
    from pipeline.core.events import (
        Cancelled,
        StreamError,
        ToolCallCompleted,
        dump_event,
        event_json,
    )
    from tests.fixtures import TEXT_STREAM, chunk, run_body, sse, tool

    tools = sse(
        chunk({"tool_calls": [tool(0, '{"a": [1, 2.5, null, "x\\u00e9"]}', id="c", name="f")]}),
        chunk({}, finish="tool_calls"),
    )
    events = [*run_body(TEXT_STREAM)[1], *run_body(tools)[1]]
    events += [
        Cancelled(stream_id="s", seq=9, t=0.125, reason="gone"),
        StreamError(stream_id="s", seq=9, kind="http", message="é\n", status=429, retry_after=2),
    ]
    assert any(isinstance(e, ToolCallCompleted) for e in events)
    for event in events:
        assert dump_event(event) == event.model_dump_json()
        assert event_json(event) == event.model_dump_json().encode()


def test_event_json_keeps_only_the_last_objects_json() -> None:
    # The sinks of one emit share one serialization (pipeline.core.events.event_json):
    # asked again for the same object, the same bytes; for any other object, its own.
    from pydantic_core import PydanticSerializationError

    from pipeline.core.events import event_json

    a = TextDelta(stream_id="s", seq=1, t=0.5, text="a")
    twin = TextDelta(stream_id="s", seq=1, t=0.5, text="a")  # equal, another object
    other = TextDelta(stream_id="s", seq=2, t=0.5, text="b")
    first = event_json(a)
    assert first == a.model_dump_json().encode()
    assert event_json(a) is first  # kept: not serialized again
    assert event_json(twin) == first and event_json(twin) is not first
    assert event_json(other) == other.model_dump_json().encode()
    assert event_json(a) == first  # after another event: made again, the same bytes
    bad = ToolCallDelta(stream_id="s", seq=3, index=0, arguments="", partial=object())
    with pytest.raises(PydanticSerializationError):
        event_json(bad)
    assert event_json(a) == first  # a failed serialization keeps nothing
    with pytest.raises(PydanticSerializationError):
        event_json(bad)  # and is not taken for the last good one


def test_metrics_text_fast_path_counts_what_the_general_path_counts() -> None:
    # StreamMeter.on_next counts a text delta after the first token itself; _add (with
    # _content) is the general path it short-cuts: every figure must agree.
    from sinks.metrics import Metrics, StreamMeter

    def figures(general: bool) -> tuple[Any, ...]:
        metrics = Metrics()
        meter = metrics.meter(model="m", upstream="u")
        feed = meter._add if general else meter.on_next
        feed(Started(stream_id="s", seq=0, model="x"))
        pieces = ["He", "", "llo", " wörld", "\u2603", "!"]
        running = []
        for i, piece in enumerate(pieces):
            feed(TextDelta(stream_id="s", seq=i + 1, t=0.25 * (i + 1), text=piece))
            running.append(meter.stats())
        feed(Finished(stream_id="s", seq=len(pieces) + 1, t=2.0))
        feed(TextDelta(stream_id="s", seq=9, t=3.0, text="late"))  # after the end: ignored
        lines = [
            line
            for line in metrics.exposition()[0].decode().splitlines()
            if "_created" not in line  # the time each series was made
        ]
        return running, meter.stats(), lines, metrics.snapshot()

    fast, general = figures(False), figures(True)
    assert fast == general
    assert fast[1].chunks == 5 and fast[1].bytes == len("Hello wörld\u2603!".encode())
    assert StreamMeter.on_next is not StreamMeter._add


def test_observing_a_streams_latencies_at_once_is_observing_each() -> None:
    # sinks.metrics._observe_each counts the bucket of each value and adds the sum in
    # order; Histogram.observe, one value at a time, is the general path.
    import math

    from sinks.metrics import ITL_BUCKETS, Metrics, _observe_each

    streams = [
        [0.05, 0.02, 0.001, 0.0, -0.5, 0.0010000001, 1.0, 1.5, 0.1, 0.1 + 1e-12],
        [math.inf, 0.3, 0.7, 0.049999999, 0.05, 0.25],
        [float("nan"), 0.01],  # NaN fits no bucket, and makes the sum NaN
        [i / 997 for i in range(400)],
    ]
    assert {0.001, 0.05, 0.1, 1.0} <= set(ITL_BUCKETS)

    def exposition(each: bool, values: list[list[float]]) -> list[str]:
        metrics = Metrics()
        for model, latencies in enumerate(values):
            child = metrics._itl.labels(f"m{model % 2}", "u")
            if each:
                for value in latencies:
                    child.observe(value)
            else:
                _observe_each(child, latencies)
        return [
            line
            for line in metrics.exposition()[0].decode().splitlines()
            if "_created" not in line and "inter_token" in line
        ]

    for values in (streams[:2], streams[3:], streams):
        assert exposition(False, values) == exposition(True, values)

    class Plain:  # a histogram without prometheus_client's fields: observed value by value
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, value: float) -> None:
            self.seen.append(value)

    plain = Plain()
    _observe_each(plain, [0.5, 0.25])  # type: ignore[arg-type]
    assert plain.seen == [0.5, 0.25]


def test_ends_stream_is_is_terminal_for_every_kind_and_subclass() -> None:
    # Operators and sinks read ``event.ends_stream`` on every event; is_terminal is the
    # general path (the type table, isinstance for a subclass).
    import typing

    from pipeline.core.events import Event as EventUnion
    from pipeline.core.events import EventBase

    kinds = typing.get_args(typing.get_args(EventUnion)[0])
    assert len(kinds) == 19
    for kind in kinds:

        class Sub(kind):  # type: ignore[valid-type,misc]
            pass

        for cls in (kind, Sub):
            event = cls.model_construct(stream_id="s", seq=0)
            assert event.ends_stream is is_terminal(event), cls
    assert EventBase.model_construct(stream_id="s", seq=0).ends_stream is False
    assert "ends_stream" not in Finished.model_fields
    assert "ends_stream" not in Finished(stream_id="s", seq=1).model_dump_json()


async def test_timeouts_read_reactivex_clock_directly_and_other_clocks_as_they_are() -> None:
    # The timeouts stage reads the time at every event; for reactivex's wall-clock
    # schedulers it calls what their ``now`` calls, for any other it asks ``now``.
    import asyncio
    from datetime import timedelta

    from reactivex.scheduler import TimeoutScheduler
    from reactivex.scheduler.eventloop import AsyncIOScheduler
    from reactivex.testing import TestScheduler

    from operators._fused import Link
    from operators.timeouts import _Timeouts

    def clock_of(scheduler: Any) -> Any:
        stage = _Timeouts([], Link(None), scheduler, None, 30.0, None)  # type: ignore[arg-type]
        return stage.clock

    for wall in (AsyncIOScheduler(asyncio.get_running_loop()), TimeoutScheduler.singleton()):
        clock = clock_of(wall)
        before, read, after = wall.now, clock(), wall.now
        assert before <= read <= after and read.tzinfo == before.tzinfo
    virtual = TestScheduler()
    clock = clock_of(virtual)
    start = virtual.now
    virtual.advance_by(1.25)
    assert clock() == virtual.now == start + timedelta(seconds=1.25)
