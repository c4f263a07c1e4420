"""map_errors: every exception becomes one terminal StreamError event, in virtual time."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import httpx2
import openai
import pytest
import reactivex
from reactivex import Observable
from reactivex.notification import OnNext
from reactivex.subject import Subject
from reactivex.testing import TestScheduler
from reactivex.testing.recorded import Recorded

from operators.map_errors import map_errors
from pipeline.core.error_info import classify, scrub
from pipeline.core.errors import (
    MalformedChunkError,
    StreamTimeoutError,
    UpstreamError,
    UpstreamStreamError,
)
from pipeline.core.events import (
    Event,
    Finished,
    ReasoningDelta,
    RefusalDelta,
    Started,
    StreamError,
    TextDelta,
    ToolCallDelta,
    ToolCallStarted,
    UsageReport,
)
from tests.virtual_time import on_completed, on_error, on_next

SID = "s1"
KEY = "sk-proj-AbCdEf0123456789xyz"
REQUEST = httpx2.Request("POST", "https://api.example.com/v1/chat/completions")


def status_error(status: int, body: object = None, message: str = "Error") -> openai.APIStatusError:
    return openai.APIStatusError(
        message, response=httpx2.Response(status, request=REQUEST), body=body
    )


def run(
    *messages: Recorded[Any], stream_id: str | None = None
) -> tuple[list[Recorded[Any]], list[Event]]:
    """Run a cold source of ``messages`` through map_errors; return messages and events."""
    scheduler = TestScheduler()
    source: Observable[Event] = scheduler.create_cold_observable(*messages)
    observer = scheduler.start(lambda: source.pipe(map_errors(stream_id)))
    events = [m.value.value for m in observer.messages if isinstance(m.value, OnNext)]
    return observer.messages, events


def error_of(exc: Exception, *before: Event) -> StreamError:
    """The single error event that ``exc`` becomes after ``before``."""
    msgs = [on_next(10 + i, e) for i, e in enumerate(before)]
    messages, events = run(*msgs, on_error(50, exc))
    assert messages[-1] == on_completed(250)
    assert events[: len(before)] == list(before)
    (error,) = events[len(before) :]
    assert isinstance(error, StreamError)
    return error


def started(seq: int = 0) -> Started:
    return Started(stream_id=SID, seq=seq, api="chat")


def text(seq: int, value: str = "hi") -> TextDelta:
    return TextDelta(stream_id=SID, seq=seq, text=value)


# -- classification ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (401, False), (404, False), (408, True), (409, True), (422, False),
     (429, True), (500, True), (503, True)],
)  # fmt: skip
def test_http_status_and_retryable(status: int, retryable: bool) -> None:
    error = error_of(status_error(status, {"error": {"message": "nope", "code": "c"}}))
    assert (error.kind, error.status, error.retryable) == ("http", status, retryable)


def test_http_error_message_and_code_come_from_the_body() -> None:
    exc = openai.RateLimitError(
        "Error code: 429 - {...}",
        response=httpx2.Response(429, request=REQUEST),
        body={"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}},
    )
    error = error_of(exc)
    assert error.kind == "http" and error.code == "rate_limit_exceeded"
    assert error.message == "HTTP 429 from the upstream: Rate limit reached"


def test_http_error_body_as_the_sdk_unwraps_it() -> None:
    # the SDK passes body["error"] as ``body``: {"message": ..., "code": ...}
    error = error_of(status_error(400, {"message": "bad model", "code": "model_not_found"}))
    assert error.code == "model_not_found" and error.message.endswith("bad model")


def test_http_error_without_body_keeps_the_sdk_message() -> None:
    error = error_of(status_error(502, None, "Bad gateway"))
    assert (error.code, error.message) == (None, "HTTP 502 from the upstream: Bad gateway")


@pytest.mark.parametrize(
    ("exc", "kind", "retryable", "says"),
    [
        (openai.APITimeoutError(request=REQUEST), "timeout", True, "timed out"),
        (openai.APIConnectionError(request=REQUEST), "connection", True, "Connection error"),
        (httpx2.ReadTimeout("read timed out"), "timeout", True, "ReadTimeout"),
        (httpx2.ConnectTimeout("connect timed out"), "timeout", True, "ConnectTimeout"),
        (httpx2.RemoteProtocolError("peer closed"), "connection", True, "RemoteProtocolError"),
        (httpx2.ReadError("reset"), "connection", True, "ReadError"),
        (httpx2.ConnectError("refused"), "connection", True, "ConnectError"),
        (httpx.ReadTimeout("read timed out"), "timeout", True, "ReadTimeout"),
        (httpx.RemoteProtocolError("peer closed"), "connection", True, "RemoteProtocolError"),
        (ConnectionResetError("reset by peer"), "connection", True, "ConnectionResetError"),
        (OSError("network unreachable"), "connection", True, "network unreachable"),
        (TimeoutError("too slow"), "timeout", True, "TimeoutError"),
        (UpstreamStreamError("overloaded", status=529, code="ov"), "upstream", True, "overloaded"),
        (UpstreamStreamError("slow down", status=429), "upstream", True, "slow down"),
        (UpstreamStreamError("bad request", status=400), "upstream", False, "bad request"),
        (UpstreamStreamError("no status"), "upstream", False, "no status"),
        (openai.APIError("server_error", REQUEST, body={"code": "x"}), "upstream", False, "server"),
        (MalformedChunkError("chunk is not JSON", "{oops"), "malformed", False, "{oops"),
        (StreamTimeoutError("idle", 30), "timeout", True, "idle timeout of 30s expired"),
        (UpstreamError("the stream ended early"), "connection", True, "ended early"),
        (ValueError("boom"), "internal", False, "ValueError: boom"),
        (KeyError("choices"), "internal", False, "KeyError"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None,
)
def test_classification(exc: Exception, kind: str, retryable: bool, says: str) -> None:
    error = error_of(exc)
    assert (error.kind, error.retryable) == (kind, retryable)
    assert says in error.message


def test_upstream_error_keeps_status_and_code() -> None:
    error = error_of(UpstreamStreamError("overloaded", status=503, code="server_overloaded"))
    assert (error.status, error.code) == (503, "server_overloaded")


def test_connection_error_says_its_cause() -> None:
    exc = openai.APIConnectionError(request=REQUEST)
    exc.__cause__ = httpx2.ConnectError("Name or service not known")
    assert "Name or service not known" in classify(exc).message


# -- secrets -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        f"Incorrect API key provided: {KEY}.",
        f"headers={{'Authorization': 'Bearer {KEY}'}}",
        "Authorization: Bearer eyJhbGciOi.opaque-token",
        "authorization=opaque-token-123",
        "{'api-key': 'azure0123456789'}",
        "GET https://x.example/v1/models?key=AIzaSyA0123456789&alt=sse",
    ],
)
def test_scrub_removes_secrets(message: str) -> None:
    scrubbed = scrub(message)
    for secret in (KEY, "AbCdEf", "eyJhbGciOi", "opaque-token", "azure0123", "AIzaSy"):
        assert secret not in scrubbed
    assert "***" in scrubbed


def test_no_key_in_any_error_message() -> None:
    body = {"error": {"message": f"Incorrect API key provided: {KEY}", "code": "invalid_api_key"}}
    assert KEY[5:] not in error_of(status_error(401, body)).message
    assert "secret-token" not in error_of(ValueError("Bearer secret-token rejected")).message


def test_long_messages_are_capped() -> None:
    assert len(error_of(ValueError("x" * 10_000)).message) < 1100


# -- after_first_token -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after_first_token"),
    [
        ([], False),
        ([started()], False),
        ([started(), text(1, "")], False),
        ([started(), UsageReport(stream_id=SID, seq=1, usage={})], False),
        ([started(), text(1)], True),
        ([started(), ReasoningDelta(stream_id=SID, seq=1, text="hmm")], True),
        ([started(), RefusalDelta(stream_id=SID, seq=1, text="no")], True),
        ([started(), ToolCallStarted(stream_id=SID, seq=1, index=0, name="f")], True),
        ([started(), ToolCallDelta(stream_id=SID, seq=1, index=0, arguments="")], True),
    ],
)
def test_after_first_token(before: list[Event], after_first_token: bool) -> None:
    assert error_of(ValueError("boom"), *before).after_first_token is after_first_token


# -- identity and timing -----------------------------------------------------------------


def test_error_event_continues_the_stream() -> None:
    messages, _ = run(on_next(0, started()), on_next(1, text(1)), on_error(1.5, ValueError("x")))
    assert messages == [
        on_next(200, started()),
        on_next(201, text(1)),
        on_next(201.5, StreamError(
            stream_id=SID, seq=2, t=1.5, kind="internal", message="ValueError: x",
            after_first_token=True,
        )),
        on_completed(201.5),
    ]  # fmt: skip


def test_error_before_any_event_uses_the_stream_id_argument() -> None:
    _, events = run(on_error(0.25, ValueError("x")), stream_id="given")
    (error,) = events
    assert (error.stream_id, error.seq, error.t, error.choice) == ("given", 0, 0.25, 0)


def test_error_before_any_event_without_stream_id_gets_a_uuid() -> None:
    _, events = run(on_error(1, ValueError("x")))
    assert len(events[0].stream_id) == 32 and int(events[0].stream_id, 16) >= 0


def test_scheduler_argument_wins() -> None:
    scheduler = TestScheduler()
    subject: Subject[Event] = Subject()
    events: list[Event] = []
    subject.pipe(map_errors(SID, scheduler=scheduler)).subscribe(events.append)
    scheduler.advance_to(2.5)
    subject.on_error(StreamTimeoutError("total", 2))
    assert events[0].t == 2.5


def test_default_scheduler_measures_wall_time() -> None:
    events: list[Event] = []
    reactivex.throw(ValueError("x")).pipe(map_errors(SID)).subscribe(events.append)
    assert 0 <= events[0].t < 1


# -- exactly one terminal ----------------------------------------------------------------


def test_normal_stream_passes_through_unchanged() -> None:
    finished = Finished(stream_id=SID, seq=2, finish_reason="stop")
    messages, _ = run(on_next(1, started()), on_next(2, text(1)), on_next(3, finished),
                      on_completed(4))  # fmt: skip
    assert messages == [
        on_next(201, started()),
        on_next(202, text(1)),
        on_next(203, finished),
        on_completed(204),
    ]


def test_error_after_terminal_does_not_emit_a_second_terminal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    finished = Finished(stream_id=SID, seq=1, finish_reason="stop")
    with caplog.at_level(logging.DEBUG, logger="operators.map_errors"):
        messages, _ = run(on_next(1, started()), on_next(2, finished), on_error(3, ValueError()))
    assert messages == [on_next(201, started()), on_next(202, finished), on_completed(203)]
    assert "after its terminal event" in caplog.text


def test_completion_without_terminal_is_a_connection_error() -> None:
    messages, _ = run(on_next(1, started()), on_next(2, text(1)), on_completed(4))
    assert messages == [
        on_next(201, started()),
        on_next(202, text(1)),
        on_next(204, StreamError(
            stream_id=SID, seq=2, t=4.0, kind="connection",
            message="stream ended without a terminal event", retryable=True,
            after_first_token=True,
        )),
        on_completed(204),
    ]  # fmt: skip


def test_events_after_terminal_are_dropped_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    finished = Finished(stream_id=SID, seq=1)
    with caplog.at_level(logging.WARNING, logger="operators.map_errors"):
        messages, _ = run(on_next(1, started()), on_next(2, finished), on_next(3, text(2)),
                          on_next(4, text(3)), on_completed(5))  # fmt: skip
    assert messages == [on_next(201, started()), on_next(202, finished), on_completed(205)]
    assert len([r for r in caplog.records if "dropping" in r.message]) == 1


def test_stream_run_skips_a_second_layer_only_when_told() -> None:
    from pipeline.runtime.multicast import StreamRun
    from pipeline.runtime.sources import sse_body
    from pipeline.runtime.standard_chain import llm_stream

    raw = sse_body(b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n')
    events = llm_stream(raw)
    assert StreamRun(events, errors_mapped=True)._source is events
    assert StreamRun(events)._source is not events
    failing: reactivex.Observable[Any] = reactivex.throw(RuntimeError("boom"))
    run = StreamRun(failing)  # not mapped: StreamRun maps its errors itself
    seen: list[Any] = []
    run.subscribe(seen.append)
    run.start()
    assert [e.type for e in seen] == ["error"]
