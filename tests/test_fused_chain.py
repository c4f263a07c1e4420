"""The standard chain run as one observer makes what the operators piped one by one make.

``llm_stream`` links the stages of ``extract_deltas``, ``assemble_tool_calls``,
``timeouts`` and ``map_errors`` directly (``operators._fused``); the general
path is the same operators applied with ``.pipe()``, each behind reactivex's
``AutoDetachObserver``. Both must send the same events at the same (virtual)
times, end the same way and cancel their source at the same moment, whatever
happens: errors in the middle of a read, timeouts, a dispose from outside or
from inside an emission. No timing here: speed is measured in bench/.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from reactivex import Observable, Observer
from reactivex.disposable import Disposable
from reactivex.subject import Subject
from reactivex.testing import TestScheduler
from reactivex.testing.recorded import Recorded

from operators import assemble_tool_calls, extract_deltas, map_errors, timeouts
from operators._fused import direct_on_next, fused
from pipeline.core.events import Event, dump_event
from pipeline.core.sse_decoder import SSEMessage
from pipeline.runtime.sources import sse_body
from pipeline.runtime.standard_chain import llm_stream
from tests.fixtures import TEXT_STREAM, chunk, sse, tool
from tests.virtual_time import on_completed, on_error, on_next

SID = "s1"
STREAMS = Path(__file__).resolve().parent.parent.parent / "shared" / "streams"

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def piped(source: Observable[Any], scheduler: Any = None, **limits: float) -> Observable[Event]:
    """The general path: one operator at a time, an observer layer between each two."""
    steps: list[Any] = [extract_deltas(SID), assemble_tool_calls(TOOLS)]
    if limits:
        steps.append(
            timeouts(
                limits.get("first_token_timeout"),
                limits.get("idle_timeout"),
                limits.get("total_timeout"),
                scheduler=scheduler,
            )
        )
    steps.append(map_errors(SID, scheduler=scheduler))
    out: Observable[Event] = source.pipe(*steps)
    return out


def chained(source: Observable[Any], scheduler: Any = None, **limits: float) -> Observable[Event]:
    return llm_stream(
        source,
        stream_id=SID,
        tools=TOOLS,
        scheduler=scheduler,
        first_token_timeout=limits.get("first_token_timeout"),
        idle_timeout=limits.get("idle_timeout"),
        total_timeout=limits.get("total_timeout"),
    )


def outcome(make: Any, body: bytes) -> tuple[list[str], list[str]]:
    """The events (as JSON) and how the stream ended; an error's ``t`` in virtual time."""
    events = make(sse_body(body), TestScheduler())
    seen: list[str] = []
    ends: list[str] = []
    events.subscribe(
        lambda e: seen.append(dump_event(e)),
        lambda exc: ends.append(f"error {exc!r}"),
        lambda: ends.append("completed"),
    )
    return seen, ends


BODIES = {
    "text": TEXT_STREAM,
    "tools": sse(
        chunk({"tool_calls": [tool(0, '{"a": ', id="c1", name="f")]}),
        chunk({"tool_calls": [tool(0, "1}")]}),
        chunk({"tool_calls": [tool(1, "{", id="c2", name="g")]}),
        chunk({}, finish="tool_calls"),
    ),
    "malformed in the middle": sse(
        chunk({"content": "a"}),
        "data: {oops\n\n",
        chunk({"content": "b"}),
        chunk({}, finish="stop"),
    ),
    "an error payload, then more": sse(
        chunk({"content": "a"}),
        {"error": {"message": "overloaded", "type": "server_error"}},
        chunk({"content": "b"}),
    ),
    "an open tool call at an error": sse(
        chunk({"tool_calls": [tool(0, '{"a": 1', id="c1", name="f")]}), "data: [1]\n\n"
    ),
    "no [DONE]": sse(chunk({"content": "a"}), done=False),
    "nothing": b"",
}


@pytest.mark.parametrize("name", list(BODIES))
def test_same_events_and_end_as_the_piped_operators(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    body = BODIES[name]
    with caplog.at_level(logging.DEBUG):
        expected = outcome(piped, body)
        general_log = [(r.levelno, r.getMessage()) for r in caplog.records]
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        got = outcome(chained, body)
        fused_log = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert got == expected
    assert got[1] == ["completed"]  # errors become the terminal event
    assert fused_log == general_log  # nothing dropped with a warning on one path only


def rude(body: bytes) -> Observable[SSEMessage]:
    """A source that sends every message during subscribe and never looks at its disposal."""
    from pipeline.core.sse_decoder import SSEDecoder

    def subscribe(observer: Any, scheduler: Any = None) -> Any:
        decoder = SSEDecoder()
        for item in [*decoder.decode(body), *decoder.flush()]:
            observer.on_next(item)
        observer.on_completed()
        return Disposable()

    return Observable(subscribe)


@pytest.mark.parametrize("name", list(BODIES))
def test_what_a_rude_source_sends_after_the_end_is_dropped_alike(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Each stage drops what reaches it after its terminal notification, as the
    # AutoDetachObserver in front of a piped operator does.
    def run(make: Any) -> tuple[Any, list[Any]]:
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            seen: list[str] = []
            ends: list[str] = []
            make(rude(BODIES[name]), TestScheduler()).subscribe(
                lambda e: seen.append(dump_event(e)),
                lambda exc: ends.append(repr(exc)),
                lambda: ends.append("completed"),
            )
            return (seen, ends), [(r.levelno, r.getMessage()) for r in caplog.records]

    expected, general_log = run(piped)
    got, fused_log = run(chained)
    assert got == expected and fused_log == general_log
    assert got[1] == ["completed"]


def test_recorded_streams_make_the_same_events() -> None:
    bodies = sorted(STREAMS.glob("*.sse"))[:40] if STREAMS.is_dir() else []
    if not bodies:
        pytest.skip("../shared/streams is absent")
    for path in bodies:
        body = path.read_bytes()
        assert outcome(chained, body) == outcome(piped, body), path.name


def message(at: float, data: str) -> Recorded[Any]:
    return on_next(at, SSEMessage(data, t=at))


def text_chunk(text: str) -> str:
    return sse(chunk({"content": text}), done=False).decode()[len("data: ") : -2]


def timed(scheduler: TestScheduler, make: Any, *notes: Recorded[Any], **run: Any) -> Any:
    xs = scheduler.create_cold_observable(*notes)
    results = scheduler.start(lambda: make(xs, scheduler), **run)
    notes_seen: list[Any] = [(m.time, m.value) for m in results.messages]
    shown = [
        (at, note.kind, dump_event(note.value) if note.kind == "N" else None)
        for at, note in notes_seen
    ]
    return shown, [(s.subscribe, s.unsubscribe) for s in xs.subscriptions]


SCRIPTS: dict[str, tuple[tuple[Recorded[Any], ...], dict[str, float], dict[str, Any]]] = {
    "first token late": ((message(0.5, text_chunk("")),), {"first_token_timeout": 1.0}, {}),
    "idle after the first token": (
        (message(0.5, text_chunk("a")), message(1.0, text_chunk("b"))),
        {"idle_timeout": 2.0},
        {},
    ),
    "total": (
        tuple(message(0.5 * i, text_chunk(str(i))) for i in range(1, 9)),
        {"total_timeout": 3.0},
        {},
    ),
    "in time": (
        (
            message(0.5, text_chunk("a")),
            message(0.7, text_chunk("b")),
            message(0.9, "[DONE]"),
            on_completed(0.9),
        ),
        {"first_token_timeout": 1.0, "idle_timeout": 1.0, "total_timeout": 5.0},
        {},
    ),
    "disposed mid-stream": (
        tuple(message(0.25 * i, text_chunk(str(i))) for i in range(1, 20)),
        {"idle_timeout": 2.0},
        {"disposed": 202},
    ),
    "an error from the source": (
        (message(0.5, text_chunk("a")), on_error(0.8, ConnectionError("reset"))),
        {"idle_timeout": 2.0},
        {},
    ),
    "malformed mid-stream": (
        (message(0.5, text_chunk("a")), message(0.6, "{oops"), message(0.7, text_chunk("b"))),
        {"idle_timeout": 2.0},
        {},
    ),
}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_same_messages_times_and_cancellation_in_virtual_time(name: str) -> None:
    notes, limits, run = SCRIPTS[name]
    expected = timed(TestScheduler(), lambda xs, s: piped(xs, s, **limits), *notes, **run)
    got = timed(TestScheduler(), lambda xs, s: chained(xs, s, **limits), *notes, **run)
    assert got == expected
    assert got[0], "something was sent"


def test_a_consumer_that_disposes_mid_emission_gets_nothing_more() -> None:
    # The first read holds the role chunk and text: several events from one item. The
    # consumer disposes its subscription at the first one; the rest is never sent,
    # on either path, and the source is unsubscribed.
    def run(make: Any) -> tuple[list[str], bool]:
        subject: Subject[SSEMessage] = Subject()
        seen: list[str] = []
        holder: list[Any] = []

        def on_event(event: Event) -> None:
            seen.append(event.type)
            holder[0].dispose()

        holder.append(make(subject).subscribe(on_event))
        subject.on_next(SSEMessage(text_chunk("hi"), t=0.1))
        subject.on_next(SSEMessage(text_chunk("more"), t=0.2))
        return seen, bool(subject.observers)

    assert run(lambda s: fused(s, extract_deltas(SID), map_errors(SID))) == (["started"], False)
    assert run(chained) == run(piped) == (["started"], False)


def test_direct_on_next_is_the_subscribers_own_callback() -> None:
    got: list[Any] = []

    def on_next(value: int) -> None:
        got.append(value)

    def subscribe(observer: Any, scheduler: Any = None) -> Disposable:
        got.append(direct_on_next(observer))
        return Disposable()

    Observable(subscribe).subscribe(on_next)
    assert got == [on_next]  # past reactivex's AutoDetachObserver
    plain = Observer(on_next)
    assert direct_on_next(plain) == plain.on_next  # any other observer: its own on_next
