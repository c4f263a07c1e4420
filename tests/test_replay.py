"""Replay of recorded events, the JSON Lines recorder, and store export/import."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from openai import AsyncOpenAI
from reactivex.testing import TestScheduler
from reactivex.testing.recorded import Recorded

from pipeline.apps.builtin_model import MockServer
from pipeline.core.events import (
    ChoiceFinished,
    Event,
    Finished,
    Started,
    TextDelta,
    dump_event,
    is_terminal,
)
from pipeline.core.result import Accumulator
from pipeline.runtime import sources
from pipeline.runtime.multicast import StreamRun
from pipeline.runtime.replay import (
    RecordingError,
    load_jsonl,
    replay,
    replay_sse,
    save_jsonl,
)
from pipeline.runtime.sources import sse_body
from pipeline.runtime.standard_chain import llm_stream
from sinks.jsonl_recorder import JsonlRecorder, record_to
from sinks.store import Store, StoreSettings
from sinks.store.recordings import export_transcript, import_recording
from tests.fixtures import TEXT_STREAM
from tests.virtual_time import SpyScheduler, on_completed, on_next

SID = "rec-1"
SUBSCRIBED = 200.0  # TestScheduler.start subscribes at this virtual time


def stream(*times: float, text: str = "tok") -> list[Event]:
    """A recording: started at 0, one text delta per time, finished at the last time."""
    events: list[Event] = [Started(stream_id=SID, seq=0, t=0.0, model="m")]
    for i, t in enumerate(times, start=1):
        events.append(TextDelta(stream_id=SID, seq=i, t=t, text=f"{text}{i} "))
    last = times[-1] if times else 0.0
    events.append(ChoiceFinished(stream_id=SID, seq=len(events), t=last, finish_reason="stop"))
    events.append(Finished(stream_id=SID, seq=len(events), t=last, finish_reason="stop"))
    return events


RECORDING = stream(0.05, 0.1, 0.1, 0.25)


def expected(events: list[Event], speed: float) -> list[Recorded[Any]]:
    messages = [on_next(SUBSCRIBED + e.t / speed, e) for e in events]
    return [*messages, on_completed(SUBSCRIBED + events[-1].t / speed)]


def values(messages: list[Recorded[Any]]) -> list[Any]:
    """The values of the on_next notifications."""
    return [cast(Any, m.value).value for m in messages if cast(Any, m.value).kind == "N"]


def assert_messages(got: list[Recorded[Any]], want: list[Recorded[Any]]) -> None:
    assert [m.value for m in got] == [m.value for m in want]
    for got_time, want_time in zip([m.time for m in got], [m.time for m in want], strict=True):
        assert want_time - 1e-9 <= got_time <= want_time + 1e-6  # never early, within 1 µs


# -- virtual time ------------------------------------------------------------------


def test_virtual_time_emits_each_event_at_its_recorded_offset() -> None:
    scheduler = TestScheduler()
    observer = scheduler.start(lambda: replay(RECORDING, scheduler=scheduler))
    assert_messages(observer.messages, expected(RECORDING, 1.0))


@pytest.mark.parametrize("speed", [2.0, 0.5, 10.0])
def test_speed_factor_divides_the_offsets(speed: float) -> None:
    scheduler = TestScheduler()
    observer = scheduler.start(lambda: replay(RECORDING, speed=speed, scheduler=scheduler))
    assert_messages(observer.messages, expected(RECORDING, speed))


def test_offsets_that_are_no_whole_microseconds_still_replay_in_virtual_time() -> None:
    """Regression: virtual time is kept in microseconds; a delay of 60.175037 ms once
    landed 37 ns short of its due time, and the replay rescheduled itself forever."""
    events = stream(*[0.3009 + i * 0.0500123457 for i in range(30)])
    scheduler = SpyScheduler()
    observer = scheduler.start(lambda: replay(events, speed=5.0, scheduler=scheduler))
    assert_messages(observer.messages, expected(events, 5.0))
    assert scheduler.fired <= len(events)


def test_the_subscribe_time_scheduler_is_used_when_none_is_given() -> None:
    scheduler = TestScheduler()
    observer = scheduler.start(lambda: replay(RECORDING))  # start() subscribes with it
    assert_messages(observer.messages, expected(RECORDING, 1.0))


@pytest.mark.parametrize("speed", [None, math.inf])
def test_as_fast_as_possible_emits_everything_during_subscribe(speed: float | None) -> None:
    got: list[Event] = []
    completed = []
    replay(RECORDING, speed=speed).subscribe(got.append, on_completed=lambda: completed.append(1))
    assert got == RECORDING
    assert completed == [1]
    scheduler = TestScheduler()
    observer = scheduler.start(lambda: replay(RECORDING, speed=speed, scheduler=scheduler))
    assert {m.time for m in observer.messages} == {SUBSCRIBED}


@pytest.mark.parametrize("speed", [0.0, -1.0, math.nan])
def test_a_speed_that_is_not_positive_is_refused(speed: float) -> None:
    with pytest.raises(ValueError, match="speed must be a positive number"):
        replay(RECORDING, speed=speed)


def test_order_is_kept_where_times_are_equal_or_go_back() -> None:
    events = stream(0.1, 0.1, 0.05, 0.2)  # the 0.05 comes after a 0.1: it waits for nobody
    scheduler = TestScheduler()
    observer = scheduler.start(lambda: replay(events, scheduler=scheduler))
    assert values(observer.messages) == events
    times = [m.time for m in observer.messages]
    assert times == sorted(times)
    assert times[3] == pytest.approx(SUBSCRIBED + 0.1)  # emitted at once after the 0.1s


def test_one_timer_is_pending_at_a_time() -> None:
    scheduler = SpyScheduler()
    events = stream(*[i * 0.01 for i in range(1, 50)])
    scheduler.start(lambda: replay(events, scheduler=scheduler))
    assert scheduler.max_pending == 1
    assert scheduler.pending == 0


def test_dispose_cancels_the_pending_emissions() -> None:
    scheduler = SpyScheduler()
    observer = scheduler.start(
        lambda: replay(RECORDING, scheduler=scheduler), disposed=SUBSCRIBED + 0.07
    )
    assert values(observer.messages) == RECORDING[:2]
    assert scheduler.pending == 1  # the disposed timer never fired


def test_an_observer_can_dispose_from_inside_on_next() -> None:
    scheduler = TestScheduler()
    got: list[Event] = []
    source = replay(RECORDING, scheduler=scheduler)

    def on_next_(event: Event) -> None:
        got.append(event)
        if len(got) == 2:
            subscription.dispose()

    subscription = source.subscribe(on_next_)
    scheduler.start()
    assert got == RECORDING[:2]


def test_an_empty_recording_completes() -> None:
    scheduler = TestScheduler()
    observer = scheduler.start(lambda: replay([], scheduler=scheduler))
    assert [m.time for m in observer.messages] == [SUBSCRIBED]
    assert cast(Any, observer.messages[0].value).kind == "C"


def test_stream_id_is_restamped_and_seq_and_t_are_kept() -> None:
    got: list[Event] = []
    replay(RECORDING, speed=None, stream_id="replayed").subscribe(got.append)
    assert {e.stream_id for e in got} == {"replayed"}
    assert [(e.seq, e.t) for e in got] == [(e.seq, e.t) for e in RECORDING]
    assert [e.model_copy(update={"stream_id": SID}) for e in got] == RECORDING


def test_replaying_twice_replays_twice() -> None:
    source = replay(RECORDING, speed=None)
    first: list[Event] = []
    second: list[Event] = []
    source.subscribe(first.append)
    source.subscribe(second.append)
    assert first == second == RECORDING


# -- real schedulers -----------------------------------------------------------------


async def test_default_scheduler_is_the_running_loop() -> None:
    threads: set[int] = set()
    got: list[Event] = []
    done = asyncio.Event()

    def on_next_(event: Event) -> None:
        threads.add(threading.get_ident())
        got.append(event)

    replay(stream(0.01, 0.02)).subscribe(on_next_, on_completed=done.set)
    await asyncio.wait_for(done.wait(), 5)
    assert threads == {threading.get_ident()}
    assert got == stream(0.01, 0.02)


def test_without_a_loop_the_timeout_scheduler_replays_in_order() -> None:
    events = stream(*[i * 0.005 for i in range(1, 20)])
    got: list[Event] = []
    done = threading.Event()
    replay(events).subscribe(got.append, on_completed=done.set)
    assert done.wait(5)
    assert got == events


async def test_dispose_on_the_loop_stops_the_replay() -> None:
    got: list[Event] = []
    first = asyncio.Event()

    def on_next_(event: Event) -> None:
        got.append(event)
        first.set()

    subscription = replay(stream(0.0, 0.05, 0.1)).subscribe(on_next_)
    await asyncio.wait_for(first.wait(), 5)
    subscription.dispose()
    await asyncio.sleep(0.15)
    assert len(got) <= 2 and got == stream(0.0, 0.05, 0.1)[: len(got)]


async def lateness_on_the_loop(events: list[Event], speed: float = 1.0) -> list[float]:
    """Replay ``events`` on the running loop: how late each came (s), by the loop's clock."""
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []
    done = asyncio.Event()
    start = loop.time()
    replay(events, speed=speed).subscribe(
        lambda _e: arrivals.append(loop.time()), on_completed=done.set
    )
    await asyncio.wait_for(done.wait(), 5)
    return [arrival - start - e.t / speed for arrival, e in zip(arrivals, events, strict=True)]


async def test_original_timing_on_the_asyncio_loop_within_10_ms() -> None:
    """At speed 1.0, each event arrives at its recorded offset, never early, at most 10 ms late.

    Measured with the loop's clock. A busy machine can delay one timer now and
    then (other processes, a timeslice of the OS scheduler: nothing the replay
    can help), so the lateness bound may take up to five tries; early emission
    is checked on every try.
    """
    times = [0.0, 0.0, *[round(0.02 * i, 3) for i in range(1, 16)]]  # a 0.3 s stream
    events = stream(*times)
    worst: list[float] = []
    for _ in range(5):
        lateness = await lateness_on_the_loop(events)
        assert min(lateness) >= 0.0, f"an event came {-min(lateness) * 1000:.3f} ms early"
        worst.append(max(lateness))
        if max(lateness) <= 0.010:
            break
    assert min(worst) <= 0.010, f"max lateness per try (s): {worst}"


async def test_speed_on_the_asyncio_loop_is_never_early() -> None:
    lateness = await lateness_on_the_loop(stream(0.05, 0.1, 0.15, 0.2), speed=2.0)
    assert min(lateness) >= 0.0
    assert max(lateness) < 0.05  # it did go twice as fast, give or take a busy machine


async def test_stream_run_over_a_replay_ends_with_its_terminal_event() -> None:
    run = StreamRun(replay(RECORDING, speed=5.0, stream_id="new"))
    acc = Accumulator()
    run.subscribe(acc.add)
    run.start()
    terminal = await asyncio.wait_for(run.wait(), 5)
    assert isinstance(terminal, Finished) and terminal.stream_id == "new"
    assert acc.result().choices[0].content == "tok1 tok2 tok3 tok4 "


# -- JSON Lines ----------------------------------------------------------------------


def test_jsonl_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    assert save_jsonl(RECORDING, path) == len(RECORDING)
    assert load_jsonl(path) == RECORDING
    assert path.read_text().splitlines() == [dump_event(e) for e in RECORDING]


def test_replay_reads_a_recording_file(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    save_jsonl(RECORDING, path)
    got: list[Event] = []
    replay(path, speed=None).subscribe(got.append)
    assert got == RECORDING


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_text("\n" + dump_event(RECORDING[0]) + "\n\n  \n")
    assert load_jsonl(path) == RECORDING[:1]


@pytest.mark.parametrize(
    ("line", "detail"),
    [
        ('{"type": "nope", "stream_id": "s", "seq": 1}', "type"),
        ('{"type": "text", "stream_id": "s", "seq": 1', "Invalid JSON"),
        ('{"type": "text", "stream_id": "s", "seq": 1}', "text"),
        ("data: {}", "Invalid JSON"),
    ],
)
def test_a_bad_line_names_the_file_and_line(tmp_path: Path, line: str, detail: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(dump_event(RECORDING[0]) + "\n\n" + line + "\n")
    with pytest.raises(RecordingError) as info:
        load_jsonl(path)
    assert info.value.path == str(path)
    assert info.value.line == 3
    assert f"{path}:3: not an rxllm event" in str(info.value)
    assert detail in str(info.value)
    assert isinstance(info.value, ValueError)


def test_a_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_jsonl(tmp_path / "missing.jsonl")


def test_replay_sse_is_the_standard_chain_over_a_raw_body(tmp_path: Path) -> None:
    path = tmp_path / "raw.sse"
    path.write_bytes(TEXT_STREAM)
    got: list[Event] = []
    want: list[Event] = []
    replay_sse(path, stream_id="x").subscribe(got.append)
    llm_stream(sse_body(TEXT_STREAM), stream_id="x").subscribe(want.append)
    assert got == want
    assert "".join(e.text for e in got if isinstance(e, TextDelta)) == "Hello, world"


# -- the recorder --------------------------------------------------------------------


def test_recorder_writes_and_flushes_every_line_then_closes_at_the_terminal_event(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rec.jsonl"
    recorder = JsonlRecorder(path)
    assert not path.exists()  # opened at the first event
    for n, event in enumerate(RECORDING, start=1):
        recorder.on_next(event)
        assert len(path.read_text().splitlines()) == n  # flushed: readable at once
    assert recorder.closed and recorder.events_written == len(RECORDING)
    recorder.on_next(RECORDING[0])  # after the terminal event: ignored
    recorder.on_completed()
    assert load_jsonl(path) == RECORDING


def test_recorder_append(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    save_jsonl(RECORDING[:1], path)
    recorder = JsonlRecorder(path, append=True)
    for event in RECORDING:
        recorder.on_next(event)
    assert load_jsonl(path) == [RECORDING[0], *RECORDING]


def test_recorder_closes_on_completion_without_a_terminal_event(tmp_path: Path) -> None:
    recorder = JsonlRecorder(tmp_path / "rec.jsonl")
    recorder.on_next(RECORDING[0])
    recorder.on_error(RuntimeError("boom"))
    assert recorder.closed
    assert load_jsonl(tmp_path / "rec.jsonl") == RECORDING[:1]


def test_a_failing_recorder_logs_detaches_and_never_breaks_the_stream(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = StreamRun(replay(RECORDING, speed=None))
    recorder = record_to(run, tmp_path / "missing-dir" / "rec.jsonl")
    seen: list[Event] = []
    run.subscribe(seen.append)
    with caplog.at_level(logging.ERROR, logger="sinks.jsonl_recorder"):
        run.start()
    assert seen == RECORDING
    assert isinstance(recorder.error, FileNotFoundError)
    assert recorder.closed and recorder.events_written == 0
    assert [r.message for r in caplog.records if "recorder detaches" in r.message]
    assert len([r for r in caplog.records if r.name == "sinks.jsonl_recorder"]) == 1  # logged once


def test_a_disk_error_mid_stream_detaches_the_recorder(tmp_path: Path) -> None:
    class Full:
        def write(self, _: str) -> int:
            raise OSError(28, "No space left on device")

        def flush(self) -> None: ...

        def close(self) -> None: ...

    recorder = JsonlRecorder(tmp_path / "rec.jsonl")
    recorder._file = cast(Any, Full())
    recorder.on_next(RECORDING[0])
    assert recorder.error is not None and recorder.error.errno == 28
    assert recorder.closed


# -- live streams, the store -----------------------------------------------------------


MOCK = {
    "text": "Replays are streams too.",
    "interval": 0.003,
    "tool_calls": [
        {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
        {"name": "get_time", "arguments": json.dumps({"tz": "Europe/Paris"})},
    ],
    "fragment_size": 4,
}


@pytest.fixture
async def client() -> AsyncIterator[AsyncOpenAI]:
    async with (
        MockServer() as server,
        AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0) as c,
    ):
        yield c


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    settings = StoreSettings(flush_interval=0.02, owner="test-replay")
    async with Store(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}", settings=settings) as s:
        yield s


REQUEST = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}]}


async def live_stream(
    client: AsyncOpenAI, store: Store | None = None, path: Path | None = None
) -> tuple[StreamRun, list[Event], Accumulator]:
    source = sources.chat_completions(
        client, **REQUEST, stream_options={"include_usage": True}, extra_body={"mock": MOCK}
    )
    run = StreamRun(llm_stream(source))
    seen: list[Event] = []
    acc = Accumulator()
    run.subscribe(seen.append)
    run.subscribe(acc.add)
    if store is not None:
        store.attach(run, REQUEST)
    if path is not None:
        record_to(run, path)
    run.start()
    await asyncio.wait_for(run.wait(), 10)
    return run, seen, acc


async def test_a_live_stream_recorded_to_jsonl_loads_back_the_same(
    client: AsyncOpenAI, tmp_path: Path
) -> None:
    path = tmp_path / "live.jsonl"
    _, seen, _ = await live_stream(client, path=path)
    assert is_terminal(seen[-1])
    assert load_jsonl(path) == seen


async def test_a_stored_stream_replayed_as_fast_as_possible_matches_the_live_one(
    client: AsyncOpenAI, store: Store
) -> None:
    run, seen, live = await live_stream(client, store=store)
    assert run.stream_id is not None
    await store.flush()
    stored = await store.events(run.stream_id)
    assert stored == seen

    replayed: list[Event] = []
    acc = Accumulator()
    replay_run = StreamRun(replay(stored, speed=None))
    replay_run.subscribe(replayed.append)
    replay_run.subscribe(acc.add)
    replay_run.start()
    assert replayed == seen
    assert acc.result() == live.result()
    assert live.result().status == "finished"
    assert [tc.parsed for tc in acc.result().choices[0].tool_calls] == [
        {"city": "Paris"},
        {"tz": "Europe/Paris"},
    ]
    transcript = await store.get(run.stream_id)
    assert transcript is not None and transcript.message is not None
    assert transcript.message == acc.result().choices[0]


async def test_export_then_import_round_trip(
    client: AsyncOpenAI, store: Store, tmp_path: Path
) -> None:
    run, seen, _ = await live_stream(client, store=store)
    assert run.stream_id is not None
    await store.flush()
    path = tmp_path / "exported.jsonl"
    assert await export_transcript(store, run.stream_id, path) == len(seen)
    assert load_jsonl(path) == seen

    new_id = await import_recording(store, path, request=REQUEST)
    assert new_id != run.stream_id
    imported = await store.events(new_id)
    assert imported == [e.model_copy(update={"stream_id": new_id}) for e in seen]
    original, copy = await store.get(run.stream_id), await store.get(new_id)
    assert original is not None and copy is not None
    assert copy.status == original.status == "finished"
    assert copy.choices == original.choices
    assert copy.usage == original.usage
    assert copy.first_token_at == original.first_token_at
    assert copy.request == original.request
    assert new_id in {s.id for s in await store.list()}
    assert (await store.list(text="streams too"))[0].id in {new_id, run.stream_id}

    again = await import_recording(store, path, stream_id="chosen-id")
    assert again == "chosen-id" and (await store.get("chosen-id")) is not None


async def test_export_of_an_unknown_stream_is_a_lookup_error(store: Store, tmp_path: Path) -> None:
    with pytest.raises(LookupError, match="no stream 'nope'"):
        await export_transcript(store, "nope", tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


async def test_import_of_an_empty_recording_is_refused(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(RecordingError, match="empty"):
        await import_recording(store, path)
