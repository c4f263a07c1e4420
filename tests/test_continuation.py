"""Continuation after the first token: failover runs joined across a cut, over real sockets.

The upstream is the built-in model: its first request is cut (``fail_first``),
the next one, prefilled with the answer so far, continues it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from reactivex import Observable
from reactivex.testing import TestScheduler

from pipeline.apps.builtin_model import MockScript, MockServer
from pipeline.core.backoff import Backoff
from pipeline.core.events import (
    Cancelled,
    ChoiceFinished,
    Event,
    Finished,
    Started,
    StreamError,
    TextDelta,
)
from pipeline.runtime.continuation import (
    Continuation,
    continuable,
    continued,
    join_overlap,
    prefilled_request,
)
from pipeline.runtime.failover import failover
from pipeline.runtime.failover_options import FailoverOptions
from pipeline.runtime.multicast import StreamRun
from pipeline.runtime.upstreams import Upstream
from tests.virtual_time import on_completed, on_next

ANSWER = "The quick brown fox jumps over the lazy dog, again and again until the end."
MESSAGES = [{"role": "user", "content": "Tell me a pangram"}]
CUTS: dict[str, dict[str, Any]] = {
    "drop": {"drop_after": 4},
    "error": {"error_after": 4},
    "stall": {"stall": 30, "stall_after": 4},
}
ARGS = json.dumps({"city": "Paris", "unit": "celsius", "days": 3})


@pytest.fixture(scope="module")
def model() -> Iterator[MockServer]:
    with MockServer() as server:
        yield server


async def collect(events: Any) -> list[Event]:
    run = StreamRun(events, errors_mapped=True)
    got: list[Event] = []
    run.subscribe(got.append)
    run.start()
    await run.wait()
    return got


def stream(
    upstreams: list[Upstream],
    mock: dict[str, Any],
    continuation: bool = True,
    **options: Any,
) -> Any:
    params = {
        "model": "m",
        "messages": MESSAGES,
        "mock": mock,
        "stream_options": {"include_usage": True},
    }
    return failover(
        upstreams,
        params,
        idle_timeout=0.5,
        backoff=0.01,
        continue_after_first_token=continuation,
        **options,
    )


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if e.type == "text")


@pytest.mark.parametrize("prefill", ["prefix", "instruction", "none"])
@pytest.mark.parametrize("cut", list(CUTS))
async def test_a_cut_answer_is_joined_whole_and_once(
    model: MockServer, cut: str, prefill: Any
) -> None:
    upstream = Upstream("a", model.base_url, "k", prefill=prefill)
    key = f"joined-{cut}-{prefill}"
    # The instruction way: the model says the last 3 words again; the seam drops them.
    mock = {"text": ANSWER, "fail_first": 1, "fault_key": key, "continue_overlap": 3, **CUTS[cut]}
    events = await collect(stream([upstream], mock))
    assert text_of(events) == ANSWER
    assert [e.seq for e in events] == list(range(len(events)))
    assert [e.type for e in events].count("started") == 1
    assert events[-1].type == "finished"
    (moved,) = [e for e in events if e.type == "failover"]
    assert moved.after_first_token and moved.offset == len("The quick brown fox")
    assert moved.kind == {"drop": "connection", "error": "upstream", "stall": "timeout"}[cut]
    (usage,) = [e for e in events if e.type == "usage"]
    assert usage.usage["rxllm"] == {"attempts": 2, "reported": 1}


async def test_a_stall_moves_to_the_next_upstream(model: MockServer) -> None:
    first = Upstream("first", model.base_url, "k", prefill="instruction")
    second = Upstream("second", model.base_url, "k", prefill="prefix")
    mock = {"text": ANSWER, "fail_first": 1, "fault_key": "stall-next", **CUTS["stall"]}
    events = await collect(stream([first, second], mock))
    (moved,) = [e for e in events if e.type == "failover"]
    assert (moved.from_upstream, moved.to_upstream, moved.delay) == ("first", "second", 0.0)
    assert text_of(events) == ANSWER
    sent = model.recorder.requests[-1].body
    assert sent is not None and sent["messages"][-1]["prefix"] is True  # second's way


@pytest.mark.parametrize("cut_at", [3, 6, 9])
async def test_a_tool_call_cut_mid_arguments_ends_as_one_call(
    model: MockServer, cut_at: int
) -> None:
    """Text is 2 tokens, the call's arguments are 8-character fragments: cut inside them."""
    mock = {
        "text": "Checking now.",
        "tool_calls": [{"name": "get_weather", "arguments": ARGS}],
        "fragment_size": 8,
        "drop_after": cut_at,
        "fail_first": 1,
        "fault_key": f"tool-{cut_at}",
    }
    upstream = Upstream("a", model.base_url, "k", prefill="prefix")
    events = await collect(stream([upstream], mock))
    assert text_of(events) == "Checking now."
    starts = [e for e in events if e.type == "tool_call.started"]
    completed = [e for e in events if e.type == "tool_call.completed"]
    deltas = "".join(e.arguments for e in events if e.type == "tool_call.delta")
    assert len(starts) == 1 and len(completed) == 1
    assert deltas == ARGS and completed[0].arguments == ARGS
    assert {getattr(e, "index", None) for e in events if e.type.startswith("tool_call")} == {0}
    assert events[-1].type == "finished"


async def test_the_budget_ends_a_stream_that_keeps_failing_keeping_the_partial(
    model: MockServer,
) -> None:
    mock = {"text": ANSWER, "fail_first": 9, "fault_key": "budget", "drop_after": 4}
    upstream = Upstream("a", model.base_url, "k", prefill="prefix")
    events = await collect(stream([upstream], mock, retries=0))
    last = events[-1]
    assert isinstance(last, StreamError) and last.after_first_token
    # the continuation said 4 more tokens before it was cut too: both kept, joined
    assert text_of(events) == "The quick brown fox jumps over the lazy"
    assert [e.type for e in events].count("failover") == 1
    assert [e.seq for e in events] == list(range(len(events)))


async def test_without_continuation_a_cut_ends_with_the_error(model: MockServer) -> None:
    mock = {"text": ANSWER, "fail_first": 1, "fault_key": "off", "drop_after": 4}
    upstream = Upstream("a", model.base_url, "k")
    events = await collect(stream([upstream], mock, continuation=False))
    assert isinstance(events[-1], StreamError) and events[-1].after_first_token
    assert text_of(events) == "The quick brown fox"
    assert not [e for e in events if e.type == "failover"]


async def test_each_run_is_recorded_beside_the_joined_stream(model: MockServer) -> None:
    runs: dict[int, list[Event]] = {}
    requests: dict[int, Any] = {}

    class Record:
        def __init__(self, n: int) -> None:
            self.n = n
            runs[n] = []

        def on_next(self, event: Event) -> None:
            runs[self.n].append(event)

        def on_error(self, error: Exception) -> None:
            raise AssertionError(error)

        def on_completed(self) -> None:
            pass

    def on_attempt(n: int, request: Any) -> Any:
        requests[n] = request
        return Record(n)

    mock = {"text": ANSWER, "fail_first": 1, "fault_key": "recorded", "drop_after": 4}
    upstream = Upstream("a", model.base_url, "k", prefill="prefix")
    events = await collect(stream([upstream], mock, on_attempt=on_attempt))
    assert sorted(runs) == [1, 2]
    sid = events[0].stream_id
    assert {e.stream_id for e in runs[1]} == {f"{sid}.1"}
    assert text_of(runs[1]) == "The quick brown fox" and runs[1][-1].type == "error"
    assert text_of(runs[2]) == ANSWER[len("The quick brown fox") :]
    assert runs[2][-1].type == "finished"
    assert requests[2]["messages"][-1] == {
        "role": "assistant",
        "content": "The quick brown fox",
        "prefix": True,
    }


async def test_a_none_upstream_that_answers_differently_is_not_joined() -> None:
    """A stalls after 4 tokens; B, asked again unchanged, says something else: no guess."""
    with (
        MockServer(MockScript(text=ANSWER)) as a,
        MockServer(MockScript(text="Something else entirely.")) as b,
    ):
        upstreams = [
            Upstream("a", a.base_url, "k", prefill="none"),
            Upstream("b", b.base_url, "k", prefill="none"),
        ]
        mock = {"fail_first": 1, "fault_key": "differs", **CUTS["stall"]}
        events = await collect(stream(upstreams, mock))
    last = events[-1]
    assert isinstance(last, StreamError) and last.after_first_token
    assert "cannot be joined" in last.message
    assert text_of(events) == "The quick brown fox"


def test_the_seam_rule() -> None:
    assert join_overlap("the quick brown", "brown fox", 200) == 5
    assert join_overlap("the quick brown", " brown fox", 200) == 6
    assert join_overlap("the quick brown", "quick brown fox", 200) == 11
    assert join_overlap("the quick brown ", "brown fox", 200) == 6
    assert join_overlap("I saw a", "apple", 200) == 0  # not a whole word
    assert join_overlap("the quick bro", "brown fox", 200) == 0  # a cut inside a word
    assert join_overlap("Hello, ", " world", 200) == 0  # whitespace alone is not trimmed
    assert join_overlap("the quick brown", "quick brown fox", 8) == 0  # bounded
    assert join_overlap("ab cd", "cd", 200, final=False) == 0  # "cd" may go on: "cde"
    assert join_overlap("ab cd", "cd", 200) == 2


def test_what_is_continuable() -> None:
    def error(**fields: Any) -> StreamError:
        return StreamError(stream_id="s", seq=0, **{"message": "x", **fields})

    assert continuable(error(kind="connection"))
    assert continuable(error(kind="timeout"))
    assert continuable(error(kind="upstream", code="server_error"))
    assert continuable(error(kind="upstream", message="Overloaded"))
    assert continuable(error(kind="upstream", status=503))
    assert not continuable(error(kind="upstream", code="content_filter"))
    assert not continuable(error(kind="http", status=400))
    assert not continuable(error(kind="malformed"))


def test_prefilled_requests() -> None:
    params = {"model": "m", "messages": MESSAGES}
    assert prefilled_request(params, "", "prefix", "go on") == params
    assert prefilled_request(params, "Hi", "none", "go on") == params
    assert prefilled_request(params, "Hi", "instruction", None)["messages"][1:] == [
        {"role": "assistant", "content": "Hi"}
    ]
    assert prefilled_request(params, "Hi", "instruction", "go on")["messages"][-1] == {
        "role": "user",
        "content": "go on",
    }


class _Runs:
    """A fake failover run per call, in virtual time: "a b" then a cut (or a timeout)."""

    def __init__(self, scheduler: TestScheduler, run_time: float = 4.0) -> None:
        self.scheduler = scheduler
        self.run_time = run_time
        self.calls: list[tuple[float, str, float | None, dict[str, Any]]] = []

    def __call__(
        self, order: Sequence[Upstream], request_for: Any, total: float | None
    ) -> Observable[Event]:
        now = self.scheduler.clock
        request = request_for(order[0], {"model": "m", "messages": MESSAGES})
        self.calls.append((now, order[0].name, total, request))
        ends = self.run_time if total is None else min(self.run_time, total)
        kind: Any = "timeout" if ends < self.run_time else "connection"
        sid = "s"

        def items() -> list[Any]:
            return [
                on_next(0.0, Started(stream_id=sid, seq=0)),
                on_next(1.0, TextDelta(stream_id=sid, seq=1, t=1.0, text="a")),
                on_next(2.0, TextDelta(stream_id=sid, seq=2, t=2.0, text=" b")),
                on_next(
                    ends,
                    StreamError(
                        stream_id=sid,
                        seq=3,
                        t=ends,
                        kind=kind,
                        message=kind,
                        retryable=True,
                        after_first_token=True,
                    ),
                ),
                on_completed(ends),
            ]

        # Relative to the subscription: a cold observable made when the run starts.
        return self.scheduler.create_cold_observable(*items())


def test_the_total_timeout_bounds_every_continuation_in_virtual_time() -> None:
    """Each run says "a b" and is cut 4 s in; the total of 10 s stops the third run."""
    scheduler = TestScheduler()
    runs = _Runs(scheduler)
    upstreams = [Upstream("a", prefill="prefix")]
    events = continued(
        runs,
        upstreams,
        {"model": "m", "messages": MESSAGES},
        Continuation(max_continuations=9),
        stream_id="s",
        backoff=Backoff(0.25, 4.0, jitter=0.0),
        total_timeout=10.0,
        scheduler=scheduler,
    )
    observer = scheduler.start(lambda: events, created=1, subscribed=2, disposed=100)
    notes: list[Any] = [m.value for m in observer.messages]
    got = [n.value for n in notes if n.kind == "N"]
    assert [(at - 2, total) for at, _, total, _ in runs.calls] == [
        (0.0, None),
        (4.25, 5.75),  # after the backoff, with what is left of the total
        (8.5, 1.5),
    ]
    assert [e.type for e in got].count("failover") == 2
    last = got[-1]
    assert isinstance(last, StreamError) and last.kind == "timeout" and last.after_first_token
    assert last.t == 10.0
    # a prefix run's text is joined as it is; the third was cut after "a" by the total
    assert text_of(got) == "a ba ba"
    assert runs.calls[2][3]["messages"][-1] == {
        "role": "assistant",
        "content": "a ba b",
        "prefix": True,
    }
    assert [e.seq for e in got] == list(range(len(got)))


async def test_a_client_that_leaves_during_a_continuation_cancels_its_request(
    model: MockServer,
) -> None:
    mock = {
        "text": ANSWER,
        "interval": 0.05,
        "fail_first": 1,
        "fault_key": "leaves",
        "drop_after": 4,
    }
    upstream = Upstream("a", model.base_url, "k", prefill="prefix")
    run = StreamRun(stream([upstream], mock), errors_mapped=True)
    got: list[Event] = []
    continued_text = asyncio.Event()

    def on_event(event: Event) -> None:
        got.append(event)
        if event.type == "text" and any(e.type == "failover" for e in got):
            continued_text.set()

    run.subscribe(on_event)
    run.start()
    await asyncio.wait_for(continued_text.wait(), 10)
    request = model.recorder.last_request
    assert request is not None and request.connection is not None
    run.cancel("client left")
    assert isinstance(await run.wait(), Cancelled)
    await request.connection.wait_closed_async(timeout=5)  # the continuation was cancelled
    assert got[-1].type == "cancelled"
    assert ANSWER.startswith(text_of(got))


def test_text_held_at_the_seam_goes_before_the_finish() -> None:
    """Run 2 (instruction) says " a", which is found in what was sent, so it is held; then it
    finishes: " a" (no overlap with the end) goes out before the finish, not after it."""
    scheduler = TestScheduler()
    sid = "s"
    first = [
        on_next(0.0, Started(stream_id=sid, seq=0)),
        on_next(1.0, TextDelta(stream_id=sid, seq=1, t=1.0, text="x a b")),
        on_next(2.0, StreamError(stream_id=sid, seq=2, t=2.0, kind="connection", message="x")),
        on_completed(2.0),
    ]
    second = [
        on_next(0.0, Started(stream_id=sid, seq=0)),
        on_next(1.0, TextDelta(stream_id=sid, seq=1, t=1.0, text=" a")),
        on_next(2.0, ChoiceFinished(stream_id=sid, seq=3, t=2.0, finish_reason="stop")),
        on_next(2.0, Finished(stream_id=sid, seq=4, t=2.0, finish_reason="stop")),
        on_completed(2.0),
    ]
    runs = iter([first, second])

    def attempt(order: Any, request_for: Any, total: Any) -> Observable[Event]:
        return scheduler.create_cold_observable(*next(runs))

    events = continued(
        attempt,
        [Upstream("a")],
        {"model": "m", "messages": MESSAGES},
        Continuation(),
        stream_id=sid,
        backoff=Backoff(0.25, 4.0, jitter=0.0),
        scheduler=scheduler,
    )
    observer = scheduler.start(lambda: events, created=1, subscribed=2, disposed=100)
    notes: list[Any] = [m.value for m in observer.messages]
    got = [n.value for n in notes if n.kind == "N"]
    assert [e.type for e in got] == [
        "started",
        "text",
        "failover",
        "text",
        "choice.finished",
        "finished",
    ]
    assert text_of(got) == "x a b a"


@pytest.mark.parametrize("instruction", ["Weiter, ohne Wiederholung.", ""])
async def test_the_instruction_is_replaced_or_left_out(model: MockServer, instruction: str) -> None:
    key = f"instruction-{instruction!r}"
    mock = {"text": ANSWER, "fail_first": 1, "fault_key": key, "drop_after": 4}
    options = FailoverOptions(
        backoff=0.01, continue_after_first_token=True, continuation_instruction=instruction
    )
    upstream = Upstream("a", model.base_url, "k", prefill="instruction")
    params = {"model": "m", "messages": MESSAGES, "mock": mock}
    events = await collect(failover([upstream], params, options=options))
    assert text_of(events) == ANSWER
    sent = model.recorder.last_request
    assert sent is not None and isinstance(sent.body, dict)
    expected = [{"role": "assistant", "content": "The quick brown fox"}]
    if instruction:
        expected.append({"role": "user", "content": instruction})
    assert sent.body["messages"][len(MESSAGES) :] == expected
