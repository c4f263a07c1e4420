"""Failover before the first token, key pools and Retry-After.

Two parts: the policy in virtual time (fake sources on a ``TestScheduler``),
then every failure mode through the real ``openai`` SDK against the built-in
model's injected faults (two or three ``MockServer`` instances as upstreams).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, cast

import httpx2
import openai
import pytest
import reactivex
from openai import AsyncOpenAI
from reactivex import Observable
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.recorded import Recorded

from pipeline.apps.builtin_model import MockScript, MockServer
from pipeline.apps.server.config_file import GatewayConfig
from pipeline.core.error_info import classify
from pipeline.core.events import Event, EventBase, Failover, StreamError, dump_event, is_terminal
from pipeline.core.result import Accumulator
from pipeline.core.sse_decoder import SSEMessage
from pipeline.runtime.failover import failover
from pipeline.runtime.failover_options import FailoverOptions
from pipeline.runtime.key_pool import KeyPool, fingerprint
from pipeline.runtime.multicast import StreamRun
from pipeline.runtime.upstreams import Cooldown, Upstream, UpstreamConfig
from sinks.metrics import Metrics
from tests.virtual_time import on_next

SID = "stream-1"
MESSAGES = [{"role": "user", "content": "Say hello"}]
REQUEST = httpx2.Request("POST", "http://upstream.test/v1/chat/completions")


# -- helpers -------------------------------------------------------------------------


def note(message: Recorded[Any]) -> Any:
    """The recorded notification (reactivex types it as a union of predicates too)."""
    return message.value


def status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    response = httpx2.Response(status, request=REQUEST, headers=headers or {})
    return openai.APIStatusError(
        f"Error code: {status}", response=response, body={"message": f"status {status}"}
    )


def chunk(**delta: Any) -> SSEMessage:
    body = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }
    return SSEMessage(json.dumps(body))


def finish_chunk() -> SSEMessage:
    body = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    return SSEMessage(json.dumps(body))


def good(scheduler: TestScheduler, after: float = 0.1) -> Callable[[], Observable[Any]]:
    """A source answering "Hi there" ``after`` seconds after subscription."""

    def make() -> Observable[Any]:
        return scheduler.create_cold_observable(
            on_next(after, chunk(role="assistant")),
            on_next(after, chunk(content="Hi")),
            on_next(after + 0.1, chunk(content=" there")),
            on_next(after + 0.2, finish_chunk()),
            on_next(after + 0.2, SSEMessage("[DONE]")),
            ReactiveTest.on_completed(cast(int, after + 0.2)),
        )

    return make


def failing(exc: Exception) -> Callable[[], Observable[Any]]:
    return lambda: reactivex.throw(exc)


class Fake:
    """Fake clients and sources: ``plan[upstream]`` lists each attempt's source."""

    def __init__(
        self, scheduler: TestScheduler, plan: dict[str, list[Callable[[], Observable[Any]]]]
    ) -> None:
        self.scheduler = scheduler
        self.plan = plan
        self.calls: list[tuple[float, str, str | None, Any]] = []

    def client(self, upstream: Upstream, key: str | None) -> AsyncOpenAI:
        return cast(AsyncOpenAI, (upstream.name, key))

    def source(self, client: AsyncOpenAI, params: dict[str, Any]) -> Observable[Any]:
        name, key = cast(tuple[str, str | None], client)
        self.calls.append((self.scheduler.clock, name, key, params.get("model")))
        attempts = self.plan[name]
        return (attempts.pop(0) if len(attempts) > 1 else attempts[0])()


def run_virtual(
    scheduler: TestScheduler,
    fake: Fake,
    upstreams: list[Upstream],
    disposed: float = 10_000,
    **options: Any,
) -> list[tuple[float, Event]]:
    options.setdefault("random", lambda: 0.0)  # no jitter: exact delays
    results = scheduler.start(
        lambda: failover(
            upstreams,
            {"model": "gpt", "messages": MESSAGES},
            stream_id=SID,
            scheduler=scheduler,
            client_factory=fake.client,
            source_factory=fake.source,
            **options,
        ),
        disposed=disposed,
    )
    out: list[tuple[float, Event]] = []
    for message in results.messages:
        if note(message).kind == "N":
            out.append((message.time, note(message).value))
        else:
            assert note(message).kind == "C", note(message)
    return out


def check_stream(events: Sequence[EventBase], stream_id: str | None = None) -> None:
    """One stream: contiguous seq from 0, one id, time never going back, one terminal at the end."""
    assert [e.seq for e in events] == list(range(len(events)))
    assert len({e.stream_id for e in events}) == 1
    if stream_id is not None:
        assert events[0].stream_id == stream_id
    assert all(b.t >= a.t for a, b in itertools.pairwise(events))
    assert [is_terminal(e) for e in events] == [False] * (len(events) - 1) + [True]


def moves(events: Sequence[EventBase]) -> list[tuple[str, str, int, str | None]]:
    return [
        (e.from_upstream, e.to_upstream, e.attempt, e.kind)
        for e in events
        if isinstance(e, Failover)
    ]


# -- the policy, in virtual time ------------------------------------------------------------


def test_exponential_backoff_then_next_upstream_then_the_last_error() -> None:
    scheduler = TestScheduler()
    fake = Fake(scheduler, {"a": [failing(status_error(503))], "b": [failing(status_error(502))]})
    metrics = Metrics()
    out = run_virtual(
        scheduler, fake, [Upstream("a"), Upstream("b")], retries=2, backoff=0.25, metrics=metrics
    )
    events = [e for _, e in out]
    check_stream(events, SID)
    assert [(round(t - 200, 6), e.type) for t, e in out] == [
        (0.0, "failover"),  # a -> a in 0.25
        (0.25, "failover"),  # a -> a in 0.5
        (0.75, "failover"),  # a -> b at once
        (0.75, "failover"),  # b -> b in 0.25
        (1.0, "failover"),  # b -> b in 0.5
        (1.5, "error"),
    ]
    assert moves(events) == [
        ("a", "a", 2, "http"),
        ("a", "a", 3, "http"),
        ("a", "b", 4, "http"),
        ("b", "b", 5, "http"),
        ("b", "b", 6, "http"),
    ]
    assert [cast(Failover, e).delay for e in events[:-1]] == [0.25, 0.5, 0.0, 0.25, 0.5]
    error = events[-1]
    assert isinstance(error, StreamError) and error.status == 502 and not error.after_first_token
    assert [round(t - 200, 6) for t, *_ in fake.calls] == [0.0, 0.25, 0.75, 0.75, 1.0, 1.5]
    snapshot = metrics.snapshot()
    assert (snapshot.failovers, snapshot.retries) == (1, 4)


def test_success_after_retry_keeps_seq_contiguous_and_time_from_subscription() -> None:
    scheduler = TestScheduler()
    fake = Fake(scheduler, {"a": [failing(status_error(500)), good(scheduler)]})
    out = run_virtual(scheduler, fake, [Upstream("a")], backoff=1.0)
    events = [e for _, e in out]
    check_stream(events, SID)
    assert [e.type for e in events] == [
        "failover",
        "started",
        "text",
        "text",
        "choice.finished",
        "finished",
    ]
    # The second attempt started 1 s after subscription: its events' t count from there
    # (the fake chunks say they arrived at t = 0 of their attempt).
    assert [e.t for e in events[1:3]] == [1.0, 1.0]


def test_jitter_shortens_the_backoff_by_at_most_its_share() -> None:
    scheduler = TestScheduler()
    fake = Fake(scheduler, {"a": [failing(status_error(503)), good(scheduler)]})
    out = run_virtual(scheduler, fake, [Upstream("a")], backoff=1.0, jitter=0.5, random=lambda: 1)
    assert cast(Failover, out[0][1]).delay == 0.5
    assert round(fake.calls[1][0] - 200, 6) == 0.5


def test_retry_after_is_honoured_over_a_shorter_backoff() -> None:
    scheduler = TestScheduler()
    error = status_error(429, {"retry-after-ms": "700", "retry-after": "1"})
    fake = Fake(scheduler, {"a": [failing(error), good(scheduler)]})
    out = run_virtual(scheduler, fake, [Upstream("a")], backoff=0.1)
    failover_event = out[0][1]
    assert isinstance(failover_event, Failover)
    assert (failover_event.delay, failover_event.status) == (0.7, 429)
    assert round(fake.calls[1][0] - 200, 6) == 0.7
    assert out[-1][1].type == "finished"


def test_a_retry_after_longer_than_the_budget_skips_to_the_next_upstream() -> None:
    scheduler = TestScheduler()
    fake = Fake(
        scheduler,
        {"a": [failing(status_error(429, {"retry-after": "60"}))], "b": [good(scheduler)]},
    )
    out = run_virtual(scheduler, fake, [Upstream("a"), Upstream("b")], max_total=10)
    events = [e for _, e in out]
    assert moves(events) == [("a", "b", 2, "http")]
    assert cast(Failover, events[0]).delay == 0.0
    assert [name for _, name, *_ in fake.calls] == ["a", "b"]
    assert events[-1].type == "finished"


def test_a_retry_after_longer_than_max_wait_ends_at_once_saying_when() -> None:
    scheduler = TestScheduler()
    fake = Fake(scheduler, {"a": [failing(status_error(429, {"retry-after": "7"}))]})
    cooldown = Cooldown(clock=lambda: scheduler.clock)
    out = run_virtual(scheduler, fake, [Upstream("a", cooldown=cooldown)])
    assert len(fake.calls) == 1  # not waited for, not asked again
    assert [type(e) for _, e in out] == [StreamError]
    time_, end = out[0]
    assert time_ == 200  # at once
    assert isinstance(end, StreamError) and (end.status, end.retry_after) == (429, 7.0)


def test_max_wait_bounds_every_wait() -> None:
    scheduler = TestScheduler()
    fake = Fake(
        scheduler,
        {"a": [failing(status_error(429, {"retry-after": "1.5"}))], "b": [good(scheduler)]},
    )
    out = run_virtual(scheduler, fake, [Upstream("a"), Upstream("b")], max_wait=1.0)
    assert moves([e for _, e in out]) == [("a", "b", 2, "http")]  # b at once, a not waited for
    scheduler = TestScheduler()
    fake = Fake(scheduler, {"a": [failing(status_error(503)), good(scheduler)]})
    out = run_virtual(scheduler, fake, [Upstream("a")], backoff=5.0, max_wait=1.0)
    assert cast(Failover, out[0][1]).delay == 1.0  # its own backoff is cut to max_wait


def test_an_upstream_is_not_asked_again_within_its_retry_after_by_any_request() -> None:
    now = [0.0]
    upstream = Upstream("a", cooldown=Cooldown(clock=lambda: now[0]))

    def run(plan: list[Callable[[], Observable[Any]]]) -> tuple[Fake, list[tuple[float, Event]]]:
        scheduler = TestScheduler()
        fake = Fake(scheduler, {"a": plan})
        return fake, run_virtual(scheduler, fake, [upstream])

    fake, out = run([failing(status_error(429, {"retry-after": "7"}))])
    assert len(fake.calls) == 1
    now[0] = 1.0  # the next request, 1 s later
    fake, out = run([lambda: reactivex.never()])
    assert fake.calls == []  # answered from memory: the upstream is not asked
    end = out[-1][1]
    assert isinstance(end, StreamError) and (end.status, end.retry_after) == (429, 6.0)
    assert "asked for no request in the next 6s" in end.message
    now[0] = 5.5  # 1.5 s left: within max_wait, so it waits, then asks
    scheduler = TestScheduler()
    fake = Fake(scheduler, {"a": [good(scheduler)]})
    out = run_virtual(scheduler, fake, [upstream])
    assert [round(t - 200, 6) for t, *_ in fake.calls] == [1.5]
    assert out[-1][1].type == "finished"


def test_no_attempt_starts_after_max_total() -> None:
    scheduler = TestScheduler()
    fake = Fake(scheduler, {"a": [failing(status_error(503))]})
    out = run_virtual(
        scheduler, fake, [Upstream("a")], retries=100, backoff=1.0, max_backoff=1.0, max_total=3.5
    )
    assert [round(t - 200, 6) for t, *_ in fake.calls] == [0.0, 1.0, 2.0, 3.0]
    assert out[-1][1].type == "error" and round(out[-1][0] - 200, 6) == 3.0


def test_a_first_token_timeout_moves_to_the_next_upstream_at_once() -> None:
    scheduler = TestScheduler()
    stalled = scheduler.create_cold_observable(on_next(0.1, chunk(role="assistant")))
    fake = Fake(scheduler, {"a": [lambda: stalled], "b": [good(scheduler)]})
    out = run_virtual(
        scheduler, fake, [Upstream("a"), Upstream("b")], first_token_timeout=2.0, retries=3
    )
    events = [e for _, e in out]
    check_stream(events, SID)
    assert moves(events) == [("a", "b", 2, "timeout")]
    assert cast(Failover, events[0]).reason == "first_token timeout of 2s expired"
    # The stalled attempt was disposed (its request cancelled) when the timeout fired.
    assert [(s.subscribe, s.unsubscribe) for s in stalled.subscriptions] == [(200, 202)]
    # Its held `started` event was dropped: only b's events follow the failover.
    assert [e.type for e in events] == [
        "failover",
        "started",
        "text",
        "text",
        "choice.finished",
        "finished",
    ]
    assert events[1].t == 2.0


def test_a_timeout_on_the_last_upstream_is_retried() -> None:
    scheduler = TestScheduler()
    fake = Fake(scheduler, {"a": [lambda: reactivex.never(), good(scheduler)]})
    out = run_virtual(scheduler, fake, [Upstream("a")], first_token_timeout=1.0, backoff=0.5)
    assert moves([e for _, e in out]) == [("a", "a", 2, "timeout")]
    assert out[-1][1].type == "finished"


def test_per_upstream_timeouts_and_model_names() -> None:
    scheduler = TestScheduler()
    fake = Fake(scheduler, {"a": [lambda: reactivex.never()], "b": [good(scheduler)]})
    upstreams = [
        Upstream("a", models={"gpt": "gpt-on-a"}, first_token_timeout=0.5),
        Upstream("b", models={"*": "llama"}),
    ]
    out = run_virtual(scheduler, fake, upstreams, first_token_timeout=5.0)
    assert round(out[0][0] - 200, 6) == 0.5
    assert [model for *_, model in fake.calls] == ["gpt-on-a", "llama"]


@pytest.mark.parametrize("status", [400, 404, 422])
def test_a_non_retryable_error_ends_the_stream_without_failover(status: int) -> None:
    scheduler = TestScheduler()
    fake = Fake(scheduler, {"a": [failing(status_error(status))], "b": [good(scheduler)]})
    out = run_virtual(scheduler, fake, [Upstream("a"), Upstream("b")])
    assert [e.type for _, e in out] == ["error"]
    error = out[0][1]
    assert isinstance(error, StreamError) and error.status == status and error.seq == 0
    assert [name for _, name, *_ in fake.calls] == ["a"]


def test_an_error_after_the_first_token_is_terminal() -> None:
    scheduler = TestScheduler()
    broken = scheduler.create_cold_observable(
        on_next(0.1, chunk(role="assistant")),
        on_next(0.2, chunk(content="Par")),
        ReactiveTest.on_error(cast(int, 0.3), status_error(503)),
    )
    fake = Fake(scheduler, {"a": [lambda: broken], "b": [good(scheduler)]})
    out = run_virtual(scheduler, fake, [Upstream("a"), Upstream("b")])
    events = [e for _, e in out]
    check_stream(events, SID)
    assert [e.type for e in events] == ["started", "text", "error"]
    error = events[-1]
    assert isinstance(error, StreamError) and error.after_first_token and error.retryable
    assert [name for _, name, *_ in fake.calls] == ["a"]


def test_a_stream_that_finishes_without_content_is_not_retried() -> None:
    scheduler = TestScheduler()
    empty = scheduler.create_cold_observable(
        on_next(0.1, chunk(role="assistant")),
        on_next(0.2, finish_chunk()),
        ReactiveTest.on_completed(cast(int, 0.3)),
    )
    fake = Fake(scheduler, {"a": [lambda: empty]})
    out = run_virtual(scheduler, fake, [Upstream("a")])
    assert [e.type for _, e in out] == ["started", "choice.finished", "finished"]


def test_stream_run_adds_no_second_error_mapping_over_a_failover() -> None:
    # failover ends with one terminal event and never errors (run_virtual checks it), so
    # StreamRun relays it as it is, without another map_errors layer per event.
    scheduler = TestScheduler()
    fake = Fake(scheduler, {"a": [failing(status_error(503))], "b": [good(scheduler)]})
    events = failover(
        [Upstream("a"), Upstream("b")],
        {"model": "gpt", "messages": MESSAGES},
        stream_id=SID,
        scheduler=scheduler,
        client_factory=fake.client,
        source_factory=fake.source,
        random=lambda: 0.0,
    )
    run = StreamRun(events, errors_mapped=True)
    assert run._source is events
    seen: list[Event] = []
    run.subscribe(seen.append)
    run.start()
    scheduler.start()
    check_stream(seen, SID)
    assert seen[0].type == "failover" and seen[-1].type == "finished"


def test_dispose_while_waiting_makes_no_more_attempts() -> None:
    scheduler = TestScheduler()
    pool = KeyPool(["k1"], clock=lambda: scheduler.clock)
    fake = Fake(scheduler, {"a": [failing(status_error(503))]})
    out = run_virtual(scheduler, fake, [Upstream("a", api_key=pool)], backoff=5.0, disposed=202)
    assert [e.type for _, e in out] == ["failover"]
    assert len(fake.calls) == 1
    assert pool.status()[0].active == 0  # every lease released


def test_a_429_cools_one_pool_key_and_the_next_key_goes_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    scheduler = TestScheduler()
    pool = KeyPool(["key-one-secret", "key-two-secret"], clock=lambda: scheduler.clock)
    fake = Fake(
        scheduler, {"a": [failing(status_error(429, {"retry-after": "30"})), good(scheduler)]}
    )
    out = run_virtual(scheduler, fake, [Upstream("a", api_key=pool)])
    assert cast(Failover, out[0][1]).delay == 0.0
    assert [key for _, _, key, _ in fake.calls] == ["key-one-secret", "key-two-secret"]
    assert f"API key {fingerprint('key-one-secret')} of pool 'keys' cools down for 30s" in (
        caplog.text
    )
    assert [s.active for s in pool.status()] == [0, 0]


def test_a_single_key_in_cooldown_is_waited_for() -> None:
    scheduler = TestScheduler()
    pool = KeyPool(["only-key-secret"], clock=lambda: scheduler.clock)
    fake = Fake(
        scheduler, {"a": [failing(status_error(429, {"retry-after-ms": "500"})), good(scheduler)]}
    )
    out = run_virtual(scheduler, fake, [Upstream("a", api_key=pool)], backoff=0.01)
    assert cast(Failover, out[0][1]).delay == 0.5
    assert round(fake.calls[1][0] - 200, 6) == 0.5
    assert out[-1][1].type == "finished"


def test_a_429_without_retry_after_waits_for_the_pool_cooldown() -> None:
    scheduler = TestScheduler()
    pool = KeyPool(["only-key-secret"], cooldown=2.0, clock=lambda: scheduler.clock)
    fake = Fake(scheduler, {"a": [failing(status_error(429)), good(scheduler)]})
    out = run_virtual(scheduler, fake, [Upstream("a", api_key=pool)], backoff=0.1)
    assert cast(Failover, out[0][1]).delay == 2.0
    assert round(fake.calls[1][0] - 200, 6) == 2.0
    assert out[-1][1].type == "finished"


def test_401_removes_the_key_and_the_next_key_is_used() -> None:
    scheduler = TestScheduler()
    removed: list[str] = []
    pool = KeyPool(["bad-key-secret", "good-key-secret"], on_key_removed=removed.append)
    fake = Fake(scheduler, {"a": [failing(status_error(401)), good(scheduler)]})
    out = run_virtual(scheduler, fake, [Upstream("a", api_key=pool)], retries=0)
    assert moves([e for _, e in out]) == [("a", "a", 2, "http")]
    assert out[-1][1].type == "finished"
    assert removed == [fingerprint("bad-key-secret")] and len(pool) == 1


def test_401_on_the_last_key_ends_the_stream_and_later_streams_skip_the_upstream() -> None:
    scheduler = TestScheduler()
    pool = KeyPool(["bad-key-secret"])
    fake = Fake(scheduler, {"a": [failing(status_error(401))], "b": [good(scheduler)]})
    upstreams = [Upstream("a", api_key=pool), Upstream("b")]
    out = run_virtual(scheduler, fake, upstreams)
    assert [e.type for _, e in out] == ["error"]
    assert cast(StreamError, out[0][1]).status == 401
    # The pool is empty now: the next stream goes straight to b, and says so.
    scheduler2 = TestScheduler()
    fake2 = Fake(scheduler2, {"a": [failing(status_error(401))], "b": [good(scheduler2)]})
    out2 = run_virtual(scheduler2, fake2, upstreams)
    events = [e for _, e in out2]
    assert moves(events) == [("a", "b", 1, None)]
    assert "no API key is left" in cast(Failover, events[0]).reason
    assert events[-1].type == "finished"
    assert [name for _, name, *_ in fake2.calls] == ["b"]


def test_a_failing_client_factory_is_an_error_event() -> None:
    scheduler = TestScheduler()

    def broken(upstream: Upstream, key: str | None) -> AsyncOpenAI:
        raise RuntimeError("no client today")

    results = scheduler.start(
        lambda: failover(
            [Upstream("a")], {"model": "m"}, scheduler=scheduler, client_factory=broken
        )
    )
    events = [note(m).value for m in results.messages if note(m).kind == "N"]
    assert [e.type for e in events] == ["error"]
    assert cast(StreamError, events[0]).kind == "internal"


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one upstream"):
        failover([], {})
    with pytest.raises(ValueError, match="retries"):
        failover([Upstream("a")], {}, retries=-1)
    with pytest.raises(ValueError, match="jitter"):
        failover([Upstream("a")], {}, jitter=2)
    with pytest.raises(ValueError, match="retires"):  # a misspelt option is named, not ignored
        failover([Upstream("a")], {}, retires=1)


def test_options_and_keyword_arguments_are_the_same_policy() -> None:
    """The keyword arguments build the FailoverOptions the config file's [failover] holds."""

    def run(**options: Any) -> list[tuple[float, str]]:
        scheduler = TestScheduler()
        fake = Fake(scheduler, {"a": [failing(status_error(503))]})
        return [(t, e.type) for t, e in run_virtual(scheduler, fake, [Upstream("a")], **options)]

    table = tomllib.loads("[failover]\nretries = 3\nbackoff = 0.5\n")
    options = GatewayConfig.model_validate({**table, "upstreams": [{"name": "a"}]}).failover
    assert isinstance(options, FailoverOptions)
    assert options == FailoverOptions(retries=3, backoff=0.5)
    by_options, by_keywords = run(options=options), run(retries=3, backoff=0.5)
    assert by_options == by_keywords and len(by_options) == 4  # three retries, then the error
    assert run(options=options, retries=0) == run(retries=0) == [(200.0, "error")]
    assert options.replace(retries=0) == FailoverOptions(retries=0, backoff=0.5)


# -- Retry-After and reprs -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "250", "retry-after": "1"}, 0.25),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-1"}, None),
        ({}, None),
    ],
)
def test_retry_after_comes_from_the_headers(headers: dict[str, str], expected: float) -> None:
    assert classify(status_error(429, headers)).retry_after == expected


def test_retry_after_as_an_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    value = classify(status_error(503, {"retry-after": when})).retry_after
    assert value is not None and 25 < value <= 30


def test_upstream_repr_shows_no_key_and_no_url_credentials() -> None:
    pool = KeyPool(["sk-secret-pool-key-1", "sk-secret-pool-key-2"])
    one = Upstream("a", "https://user:hunter2@example.test/v1", "sk-secret-single-key")
    many = Upstream("b", "https://example.test/v1", pool)
    text = repr(one) + repr(many) + str(one)
    for secret in ("sk-secret-pool-key-1", "sk-secret-pool-key-2", "sk-secret-single-key"):
        assert secret not in text
    assert "hunter2" not in text
    assert fingerprint("sk-secret-single-key") in text


def test_upstream_config_builds_pools_from_secrets_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_POOL_KEYS", "sk-env-one, sk-env-two")
    config = UpstreamConfig.model_validate(
        {
            "name": "openai",
            "base_url": "https://api.example.test/v1",
            "api_key": "sk-config-key",
            "api_key_env": "TEST_POOL_KEYS",
            "models": {"fast": "gpt-4o-mini"},
            "first_token_timeout": 10,
            "cooldown": 2,
        }
    )
    assert "sk-config-key" not in repr(config) + str(config)
    upstream = config.build()
    assert upstream.pool is not None and len(upstream.pool) == 3
    assert upstream.pool.cooldown == 2 and upstream.first_token_timeout == 10
    assert upstream.model_for("fast") == "gpt-4o-mini" and upstream.model_for("x") == "x"
    single = UpstreamConfig(name="local", base_url="http://127.0.0.1:1/v1").build()
    assert single.api_key is None and single.pool is None


# -- through the real SDK against the built-in model --------------------------------------------


@pytest.fixture
async def upstreams_to_close() -> AsyncIterator[list[Upstream]]:
    made: list[Upstream] = []
    yield made
    for upstream in made:
        await upstream.aclose()


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


async def stream(
    upstreams: list[Upstream],
    close: list[Upstream],
    mock: dict[str, Any] | None = None,
    **options: Any,
) -> list[Event]:
    close.extend(upstreams)
    params: dict[str, Any] = {"model": "mock-model", "messages": MESSAGES}
    if mock is not None:
        params["extra_body"] = {"mock": mock}
    options.setdefault("backoff", 0.01)
    run = StreamRun(failover(upstreams, params, **options))
    events: list[Event] = []
    run.subscribe(events.append)
    run.start()
    await asyncio.wait_for(run.wait(), 20)
    check_stream(events)
    return events


def text_of(events: Sequence[EventBase]) -> str:
    acc = Accumulator()
    for event in events:
        acc.add(event)
    return acc.result().choices[0].content or ""


async def test_503_fails_over_to_the_next_upstream(upstreams_to_close: list[Upstream]) -> None:
    metrics = Metrics()
    async with (
        MockServer(MockScript(status=503)) as a,
        MockServer(MockScript(text="Hello from b")) as b,
    ):
        events = await stream(
            [Upstream("a", a.base_url, "k"), Upstream("b", b.base_url, "k")],
            upstreams_to_close,
            retries=0,
            metrics=metrics,
            stream_id=SID,
        )
        assert events[0].stream_id == SID
        assert moves(events) == [("a", "b", 2, "http")]
        assert cast(Failover, events[0]).status == 503
        assert text_of(events) == "Hello from b" and events[-1].type == "finished"
        assert (len(a.recorder.requests), len(b.recorder.requests)) == (1, 1)
    snapshot = metrics.snapshot()
    assert (snapshot.failovers, snapshot.retries) == (1, 0)
    exposition = metrics.exposition()[0].decode()
    assert 'rxllm_failovers_total{from_upstream="a",to_upstream="b"} 1.0' in exposition


async def test_fail_first_is_retried_on_the_same_upstream(
    upstreams_to_close: list[Upstream],
) -> None:
    metrics = Metrics()
    async with MockServer() as a, MockServer() as b:
        mock = {"text": "Recovered", "fail_first": 1, "fault_key": "ff-1"}
        events = await stream(
            [Upstream("a", a.base_url, "k"), Upstream("b", b.base_url, "k")],
            upstreams_to_close,
            mock,
            retries=2,
            metrics=metrics,
        )
        assert moves(events) == [("a", "a", 2, "http")]
        assert text_of(events) == "Recovered"
        assert [r.status for r in a.recorder.requests] == [503, 200]
        assert b.recorder.requests == []
    assert metrics.snapshot().retries == 1


async def test_429_retry_after_is_honoured(upstreams_to_close: list[Upstream]) -> None:
    async with MockServer() as a:
        mock = {"text": "Later", "status": 429, "retry_after": 0.1, "fail_first": 1}
        mock["fault_key"] = "ra-1"
        events = await stream(
            [Upstream("a", a.base_url, "k")], upstreams_to_close, mock, backoff=0.001
        )
        move = events[0]
        assert isinstance(move, Failover) and move.status == 429 and move.delay >= 0.1
        first, second = a.recorder.requests
        # The second request left at least Retry-After after the first one's answer.
        assert second.arrived_at - first.arrived_at >= 0.1
        assert second.arrived_at - first.arrived_at < 5
        assert text_of(events) == "Later"


async def test_connection_refused_moves_on(upstreams_to_close: list[Upstream]) -> None:
    async with MockServer(MockScript(text="Up here")) as b:
        down = Upstream("down", f"http://127.0.0.1:{closed_port()}/v1", "k")
        events = await stream([down, Upstream("b", b.base_url, "k")], upstreams_to_close, retries=1)
        assert moves(events) == [
            ("down", "down", 2, "connection"),
            ("down", "b", 3, "connection"),
        ]
        assert text_of(events) == "Up here"


async def test_a_first_token_stall_times_out_and_moves_on(
    upstreams_to_close: list[Upstream],
) -> None:
    async with (
        MockServer(MockScript(text="never sent", stall=30)) as a,
        MockServer(MockScript(text="Quick answer")) as b,
    ):
        began = time.monotonic()
        events = await stream(
            [Upstream("a", a.base_url, "k"), Upstream("b", b.base_url, "k")],
            upstreams_to_close,
            first_token_timeout=0.3,
        )
        assert moves(events) == [("a", "b", 2, "timeout")]
        assert cast(Failover, events[0]).t >= 0.3
        assert text_of(events) == "Quick answer"
        assert time.monotonic() - began < 10
        # The stalled request was cancelled: the upstream saw its connection close.
        request = a.recorder.requests[0]
        assert request.connection is not None
        await request.connection.wait_closed_async(timeout=5)
        assert [e.type for e in events if e.type == "started"] == ["started"]


async def test_an_error_after_the_first_token_keeps_the_partial(
    upstreams_to_close: list[Upstream],
) -> None:
    async with (
        MockServer(MockScript(text="one two three four", error_after=2)) as a,
        MockServer() as b,
    ):
        events = await stream(
            [Upstream("a", a.base_url, "k"), Upstream("b", b.base_url, "k")], upstreams_to_close
        )
        assert moves(events) == []
        error = events[-1]
        assert isinstance(error, StreamError) and error.after_first_token
        assert text_of(events) == "one two"
        assert b.recorder.requests == []


async def test_a_400_ends_the_stream_without_failover(upstreams_to_close: list[Upstream]) -> None:
    async with MockServer(MockScript(status=400)) as a, MockServer() as b:
        events = await stream(
            [Upstream("a", a.base_url, "k"), Upstream("b", b.base_url, "k")], upstreams_to_close
        )
        assert [e.type for e in events] == ["error"]
        error = events[0]
        assert isinstance(error, StreamError)
        assert (error.status, error.retryable, error.after_first_token) == (400, False, False)
        assert b.recorder.requests == []


async def test_model_names_are_mapped_per_upstream(upstreams_to_close: list[Upstream]) -> None:
    async with MockServer(models=("served-name",), strict_models=True) as a:
        mapped = Upstream("a", a.base_url, "k", models={"mock-model": "served-name"})
        events = await stream([mapped], upstreams_to_close)
        assert events[-1].type == "finished"
        assert a.recorder.last_request.body["model"] == "served-name"
        # Without the mapping the strict mock answers 404: not retried.
        events = await stream([Upstream("a", a.base_url, "k")], upstreams_to_close)
        error = events[-1]
        assert isinstance(error, StreamError) and error.status == 404 and len(events) == 1


async def test_a_rejected_pool_key_is_removed_and_the_next_key_used(
    upstreams_to_close: list[Upstream], caplog: pytest.LogCaptureFixture
) -> None:
    bad, good_key = "sk-rejected-key-0001", "sk-accepted-key-0002"
    removed: list[str] = []
    pool = KeyPool([bad, good_key], on_key_removed=removed.append, name="a")
    async with MockServer(MockScript(text="With the good key"), reject_keys={bad}) as a:
        events = await stream([Upstream("a", a.base_url, pool)], upstreams_to_close)
        assert moves(events) == [("a", "a", 2, "http")]
        assert cast(Failover, events[0]).status == 401
        assert text_of(events) == "With the good key"
        assert [r.status for r in a.recorder.requests] == [401, 200]
    assert removed == [fingerprint(bad)]
    assert pool.fingerprints == [fingerprint(good_key)]
    assert f"API key {fingerprint(bad)} removed from pool 'a'" in caplog.text


async def test_no_api_key_appears_in_any_output(
    upstreams_to_close: list[Upstream], caplog: pytest.LogCaptureFixture
) -> None:
    """Regression guard for issue 5: keys never in logs, events, errors, metrics or reprs."""
    caplog.set_level(logging.DEBUG)
    bad, good_key, single = "sk-leakcheck-bad-7f3a9c", "sk-leakcheck-good-1b2d4e", "zz-single-99x"
    keys = [bad, good_key, single]
    metrics = Metrics()
    removed: list[str] = []
    pool = KeyPool([bad, good_key], on_key_removed=removed.append, cooldown=0.05)
    gone = "sk-leakcheck-gone-5e6f7a"
    keys.append(gone)
    empty = KeyPool([gone], name="empty")
    empty.acquire().release(status=403)
    outputs: list[str] = []
    async with (
        MockServer(MockScript(text="pool answer"), reject_keys={bad}) as a,
        MockServer(MockScript(text="never"), reject_keys={single}) as c,
    ):
        upstream_a = Upstream("a", a.base_url, pool)
        upstream_c = Upstream("c", c.base_url, single)
        runs = [
            # the bad key is tried first, rejected and removed; the good one answers
            await stream([upstream_a], upstreams_to_close, metrics=metrics),
            # a 429 cools the only key left down; it is waited for and used again
            await stream(
                [upstream_a],
                upstreams_to_close,
                {"status": 429, "retry_after": 0.05, "fail_first": 1, "fault_key": "leak"},
                metrics=metrics,
            ),
            # a single key rejected: the error ends the stream
            await stream([upstream_c], upstreams_to_close, metrics=metrics),
            # a pool without keys: skipped, with a failover event
            await stream([Upstream("empty", a.base_url, empty), upstream_c], []),
        ]
        for events in runs:
            run_error = events[-1]
            if isinstance(run_error, StreamError):
                outputs.append(run_error.message)
            outputs += [dump_event(e) for e in events]
        outputs += [repr(r.headers) + repr(r.body) for s in (a, c) for r in s.recorder.requests]
    assert runs[0][-1].type == runs[1][-1].type == "finished"
    assert cast(StreamError, runs[2][-1]).status == 401
    assert removed == [fingerprint(bad)]
    assert moves(runs[3])[0][:2] == ("empty", "c") and runs[3][-1].type == "error"
    outputs += [
        caplog.text,
        metrics.exposition()[0].decode(),
        repr(metrics.snapshot()),
        repr(pool),
        repr(empty),
        repr(upstream_a),
        repr(upstream_c),
        repr(pool.status()),
    ]
    everything = "\n".join(outputs)
    assert "removed from pool" in everything and fingerprint(bad) in everything
    for key in keys:
        assert key not in everything
        assert key[3:] not in everything  # nor with its prefix scrubbed off
