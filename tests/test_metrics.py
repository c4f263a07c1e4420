"""Metrics sink: per-stream figures from event times, aggregates, exposition."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import reactivex
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from reactivex.subject import Subject
from starlette.applications import Starlette
from starlette.testclient import TestClient

import sinks.metrics as metrics_module
from operators.extract_deltas import extract_deltas
from pipeline.core.events import (
    Cancelled,
    ErrorKind,
    Event,
    Finished,
    ReasoningDelta,
    Started,
    StreamError,
    TextDelta,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallStarted,
    UsageReport,
)
from pipeline.core.sse_decoder import SSEMessage
from pipeline.runtime.multicast import StreamRun
from sinks.metrics import Metrics, StreamMeter, cancel_reason_class, metrics_endpoint

SID = "stream-id-must-not-leak"


class Events:
    """Builds one stream's events with consecutive ``seq`` numbers."""

    def __init__(self, stream_id: str = SID) -> None:
        self.stream_id = stream_id
        self.seq = 0

    def __call__(self, cls: type[Any], t: float, **fields: Any) -> Any:
        event = cls(stream_id=self.stream_id, seq=self.seq, t=t, **fields)
        self.seq += 1
        return event


def drive(metrics: Metrics, events: list[Event], **labels: Any) -> StreamMeter:
    """Run ``events`` through a StreamRun with a meter attached."""
    run = StreamRun(reactivex.from_iterable(events))
    meter = metrics.attach(run, **labels)
    run.start()
    return meter


def text_stream(times: list[float], texts: list[str], end: float) -> list[Event]:
    e = Events()
    out: list[Event] = [e(Started, 0.0, model="model-a")]
    out += [e(TextDelta, t, text=s) for t, s in zip(times, texts, strict=True)]
    out.append(e(Finished, end, finish_reason="stop"))
    return out


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, _ = metrics.exposition()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float:
    """The one sample ``name`` whose labels include ``labels``."""
    found = [
        v for (n, ls), v in samples(metrics).items() if n == name and set(labels.items()) <= set(ls)
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


# -- per-stream figures --------------------------------------------------------


def test_ttft_itl_and_tokens_per_second_from_event_times() -> None:
    metrics = Metrics()
    events = text_stream([0.5, 0.6, 0.7, 1.0, 1.1], ["He", "", "llo", " wor", "ld"], end=1.25)
    meter = drive(metrics, events, upstream="primary")
    stats = meter.stats()
    assert stats.status == "finished"
    assert stats.ttft == pytest.approx(0.5)
    assert stats.chunks == 4, "an empty delta is not a content event"
    # ITLs: 0.7-0.5, 1.0-0.7, 1.1-1.0 = 0.2, 0.3, 0.1
    assert stats.itl_count == 3
    assert stats.itl_mean == pytest.approx(0.2)
    assert stats.itl_p50 == pytest.approx(0.2)
    assert stats.itl_p99 == pytest.approx(0.3)
    assert stats.itl_max == pytest.approx(0.3)
    # 3 content events after the first over 1.1 - 0.5 seconds
    assert stats.tokens_per_second == pytest.approx(3 / 0.6)
    assert stats.duration == pytest.approx(1.25)
    assert stats.bytes == len("Hello world")
    assert stats.model == "model-a", "taken from the started event"

    labels = {"model": "model-a", "upstream": "primary"}
    assert value(metrics, "rxllm_time_to_first_token_seconds_sum", **labels) == pytest.approx(0.5)
    assert value(metrics, "rxllm_inter_token_latency_seconds_count", **labels) == 3
    assert value(metrics, "rxllm_inter_token_latency_seconds_sum", **labels) == pytest.approx(0.6)
    assert value(
        metrics, "rxllm_inter_token_latency_seconds_bucket", le="0.25", **labels
    ) == pytest.approx(2)
    assert value(
        metrics, "rxllm_stream_duration_seconds_sum", status="finished", **labels
    ) == pytest.approx(1.25)
    assert value(metrics, "rxllm_tokens_per_second_sum", **labels) == pytest.approx(5.0)
    assert value(metrics, "rxllm_content_chunks_total", kind="text", **labels) == 4
    assert value(metrics, "rxllm_content_bytes_total", kind="text", **labels) == 11


def test_tokens_per_second_prefers_reported_usage() -> None:
    e = Events()
    events: list[Event] = [
        e(Started, 0.0),
        e(TextDelta, 0.2, text="a"),
        e(TextDelta, 0.4, text="b"),
        e(TextDelta, 0.6, text="c"),
        e(TextDelta, 0.8, text="d"),
        e(UsageReport, 0.9, usage={"prompt_tokens": 7, "completion_tokens": 8}),
        e(Finished, 0.9),
    ]
    metrics = Metrics()
    stats = drive(metrics, events, model="m").stats()
    # 8 tokens in 4 chunks: 6 of them after the first chunk, over 0.6 s
    assert stats.output_tokens == 8
    assert stats.tokens_per_second == pytest.approx(10.0)
    assert metrics.snapshot().tokens == {"input": 7, "output": 8}


def test_responses_style_output_tokens_are_read() -> None:
    e = Events()
    events: list[Event] = [
        e(Started, 0.0),
        e(TextDelta, 1.0, text="a"),
        e(TextDelta, 2.0, text="b"),
        e(UsageReport, 2.0, usage={"input_tokens": 3, "output_tokens": 4}),
        e(Finished, 2.0),
    ]
    metrics = Metrics()
    assert drive(metrics, events).stats().tokens_per_second == pytest.approx(2.0)
    assert metrics.snapshot().tokens == {"input": 3, "output": 4}


def test_negative_usage_from_an_upstream_leaves_the_figure_out_and_measures_the_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression: a negative count made the token counter raise for every such stream."""
    e = Events()
    events: list[Event] = [
        e(Started, 0.0),
        e(TextDelta, 1.0, text="a"),
        e(UsageReport, 1.0, usage={"prompt_tokens": -3, "completion_tokens": -1}),
        e(Finished, 1.0),
    ]
    metrics = Metrics()
    meter = drive(metrics, events, model="m")
    assert meter.stats().status == "finished"
    assert meter.stats().output_tokens is None
    assert metrics.snapshot().tokens == {}
    assert metrics.snapshot().streams.get("finished") == 1
    assert "failed" not in caplog.text


def test_single_chunk_has_no_rate_and_no_itl() -> None:
    stats = drive(Metrics(), text_stream([0.3], ["all at once"], end=0.4)).stats()
    assert stats.ttft == pytest.approx(0.3)
    assert stats.itl_count == 0
    assert stats.itl_p50 is None
    assert stats.tokens_per_second is None


def test_tool_call_is_a_first_token_and_utf8_bytes_are_counted() -> None:
    e = Events()
    events: list[Event] = [
        e(Started, 0.0),
        e(ToolCallStarted, 0.4, index=0, id="call_1", name="f"),
        e(ToolCallDelta, 0.5, index=0, arguments='{"q": "é'),  # é is 2 bytes
        e(ToolCallDelta, 0.6, index=0, arguments='😀"}'),  # the emoji is 4 bytes
        e(ToolCallCompleted, 0.6, index=0, arguments='{"q": "é😀"}', parsed={"q": "é😀"}),
        e(ReasoningDelta, 0.7, text="ok"),
        e(Finished, 0.7),
    ]
    metrics = Metrics()
    stats = drive(metrics, events, model="m").stats()
    assert stats.ttft == pytest.approx(0.4)
    assert stats.chunks == 4, "tool_call.completed repeats the deltas: not a content event"
    assert stats.bytes == len('{"q": "é😀"}'.encode()) + 2
    assert value(metrics, "rxllm_content_bytes_total", kind="tool_call") == 15  # 7 + 2 + 4 + 2
    assert value(metrics, "rxllm_content_chunks_total", kind="tool_call") == 3
    assert value(metrics, "rxllm_content_chunks_total", kind="reasoning") == 1


def test_stats_are_readable_while_running() -> None:
    metrics = Metrics()
    meter = metrics.meter(model="m")
    e = Events()
    meter.on_next(e(Started, 0.0))
    meter.on_next(e(TextDelta, 0.25, text="a"))
    stats = meter.stats()
    assert stats.status == "running"
    assert stats.ttft == pytest.approx(0.25)
    assert metrics.snapshot().active == 1
    assert metrics.snapshot().streams == {}, "nothing is counted before the end"


def test_end_to_end_from_timed_sse_messages() -> None:
    def message(t: float, delta: dict[str, Any] | None = None, **chunk: Any) -> SSEMessage:
        body: dict[str, Any] = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "model": "test-model",
            "choices": [] if delta is None else [{"index": 0, "delta": delta}],
            **chunk,
        }
        return SSEMessage(data=json.dumps(body), t=t)

    raw = [
        message(0.2, {"role": "assistant", "content": ""}),
        message(0.3, {"content": "Hello"}),
        message(0.5, {"content": ", world"}),
        message(0.6, usage={"prompt_tokens": 3, "completion_tokens": 2}),
        SSEMessage(data="[DONE]", t=0.7),
    ]
    metrics = Metrics()
    run = StreamRun(reactivex.from_iterable(raw).pipe(extract_deltas("s")))
    meter = metrics.attach(run, upstream="openai")
    run.start()
    stats = meter.stats()
    assert stats.status == "finished"
    assert stats.model == "test-model"
    assert stats.ttft == pytest.approx(0.3)
    assert stats.itl_p50 == pytest.approx(0.2)
    # 2 tokens in 2 chunks: 1 after the first, over 0.2 s
    assert stats.tokens_per_second == pytest.approx(5.0)
    assert metrics.snapshot().active == 0


# -- aggregates --------------------------------------------------------------


def terminal_stream(terminal: type[Any], **fields: Any) -> list[Event]:
    e = Events()
    return [e(Started, 0.0), e(TextDelta, 0.1, text="x"), e(terminal, 0.2, **fields)]


def error_stream(kind: ErrorKind) -> list[Event]:
    return terminal_stream(StreamError, kind=kind, message="boom")


def test_counts_by_status_and_error_kind() -> None:
    metrics = Metrics()
    drive(metrics, terminal_stream(Finished))
    drive(metrics, terminal_stream(Finished))
    drive(metrics, error_stream("timeout"))
    drive(metrics, error_stream("http"))
    drive(metrics, error_stream("http"))
    drive(metrics, terminal_stream(Cancelled, reason="timeout after 30 s"))
    snap = metrics.snapshot()
    assert snap.streams == {"finished": 2, "error": 3, "cancelled": 1}
    assert snap.errors == {"timeout": 1, "http": 2}
    assert snap.cancellations == {"timeout": 1}
    assert snap.chunks == 6
    assert snap.active == 0
    assert snap.ttft_mean == pytest.approx(0.1)


def test_run_cancel_counts_one_cancellation_and_releases_the_gauge() -> None:
    metrics = Metrics()
    source: Subject[Event] = Subject()
    run = StreamRun(source, stream_id="s")
    meter = metrics.attach(run, model="m", upstream="u")
    assert metrics.snapshot().active == 1, "active from attach"
    run.start()
    e = Events("s")
    source.on_next(e(Started, 0.0))
    source.on_next(e(TextDelta, 0.1, text="a"))
    run.cancel("client went away")
    run.cancel("again")
    snap = metrics.snapshot()
    assert snap.streams == {"cancelled": 1}
    assert snap.cancellations == {"client_gone": 1}
    assert snap.active == 0
    stats = meter.stats()
    assert stats.status == "cancelled"
    assert stats.cancel_reason == "client went away"


def test_active_gauge_goes_up_per_stream_and_down_exactly_once() -> None:
    metrics = Metrics()
    sources = [Subject[Event](), Subject[Event](), Subject[Event]()]
    runs = [StreamRun(s, stream_id=f"s{i}") for i, s in enumerate(sources)]
    meters = [metrics.attach(run, upstream="u") for run in runs]
    for run in runs:
        run.start()
    assert metrics.snapshot().active == 3
    for i, (source, end) in enumerate(
        zip(sources, [Finished, StreamError, Cancelled], strict=True)
    ):
        e = Events(f"s{i}")
        source.on_next(e(Started, 0.0))
        fields = {"kind": "upstream", "message": "m"} if end is StreamError else {}
        source.on_next(e(end, 0.5, **fields))
        source.on_next(e(Finished, 0.6))  # after the terminal: dropped
        source.on_completed()
        assert metrics.snapshot().active == 2 - i
    for meter in meters:  # more endings, straight to the meters: ignored
        meter.on_completed()
        meter.on_error(RuntimeError("late"))
        meter.detach()
    snap = metrics.snapshot()
    assert snap.active == 0
    assert snap.streams == {"finished": 1, "error": 1, "cancelled": 1}


def test_completion_without_terminal_counts_an_internal_error() -> None:
    metrics = Metrics()
    meter = metrics.meter()
    meter.on_next(Started(stream_id="s", seq=0))
    meter.on_next(TextDelta(stream_id="s", seq=1, t=0.3, text="a"))
    meter.on_completed()
    meter.on_completed()
    snap = metrics.snapshot()
    assert snap.errors == {"internal": 1}
    assert snap.active == 0
    assert meter.stats().duration == pytest.approx(0.3)


def test_detach_releases_the_gauge_without_counting_a_stream() -> None:
    metrics = Metrics()
    run = StreamRun(Subject[Event](), stream_id="s")
    meter = metrics.attach(run)
    meter.detach()
    meter.detach()
    run.start()
    run.cancel()
    snap = metrics.snapshot()
    assert snap.active == 0
    assert snap.streams == {}


def test_a_failing_meter_is_detached_and_still_releases_the_gauge(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(reason: str) -> str:
        raise ValueError(reason)

    metrics = Metrics(classify_cancel=broken)
    run = StreamRun(Subject[Event](), stream_id="s")
    metrics.attach(run)
    run.start()
    with caplog.at_level(logging.ERROR):
        run.cancel("boom")
    assert "failed" in caplog.text, "the runner logged the broken sink"
    assert metrics.snapshot().active == 0


class Broken:
    """Stands in for a prometheus metric whose every use raises."""

    def labels(self, *args: str) -> Any:
        raise RuntimeError("broken metric")


def test_a_meter_failing_mid_stream_releases_the_gauge(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = Metrics()
    monkeypatch.setattr(metrics, "_ttft", Broken())
    drive(metrics, terminal_stream(Finished))  # the runner logs and detaches the meter
    # snapshot() would read the broken stand-in; the registry has the real gauge
    assert value(metrics, "rxllm_active_streams") == 0


def test_a_meter_failing_at_completion_releases_the_gauge(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics = Metrics()
    meter = metrics.meter()
    monkeypatch.setattr(metrics, "_streams", Broken())
    with pytest.raises(RuntimeError, match="broken metric"):
        meter.on_completed()
    # snapshot() would read the broken stand-in; the registry has the real gauge
    assert value(metrics, "rxllm_active_streams") == 0


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("cancelled", "cancelled"),
        ("", "cancelled"),
        ("client went away", "client_gone"),
        ("client disconnected", "client_gone"),
        ("interrupted", "interrupted"),
        ("timeout", "timeout"),
        ("idle: timed out", "timeout"),
        ("user 1234 pressed stop", "other"),
    ],
)
def test_cancel_reasons_collapse_to_few_classes(reason: str, expected: str) -> None:
    assert cancel_reason_class(reason) == expected


def test_hooks_for_failover_retry_and_dropped_store_events() -> None:
    metrics = Metrics()
    metrics.inc_failover("primary", "fallback")
    metrics.inc_retry("primary", "connection")
    metrics.inc_retry("primary", "connection")
    metrics.inc_store_buffer_dropped(5)
    snap = metrics.snapshot()
    assert (snap.failovers, snap.retries, snap.store_buffer_dropped) == (1, 2, 5)
    assert value(metrics, "rxllm_failovers_total", from_upstream="primary") == 1
    assert value(metrics, "rxllm_retries_total", kind="connection") == 2
    assert value(metrics, "rxllm_store_buffer_dropped_total", sink="store") == 5


# -- exposition ----------------------------------------------------------------

FAMILIES = {
    "rxllm_time_to_first_token_seconds",
    "rxllm_inter_token_latency_seconds",
    "rxllm_stream_duration_seconds",
    "rxllm_tokens_per_second",
    "rxllm_streams",
    "rxllm_stream_errors",
    "rxllm_stream_cancellations",
    "rxllm_active_streams",
    "rxllm_content_chunks",
    "rxllm_content_bytes",
    "rxllm_tokens",
    "rxllm_failovers",
    "rxllm_retries",
    "rxllm_continuations",
    "rxllm_store_buffer_dropped",
    "rxllm_api_keys_removed",
    "rxllm_connections_closed",
    "rxllm_store_unavailable",
    "rxllm_store_streams_held",
    "rxllm_store_holds",
    "rxllm_gc_pause_seconds",
}


def test_exposition_parses_and_names_every_metric() -> None:
    metrics = Metrics()
    drive(metrics, text_stream([0.1, 0.2], ["a", "b"], end=0.3), model="m", upstream="u")
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    families = {
        f.name: f
        for f in text_string_to_metric_families(body.decode())
        if not f.name.endswith("_created")  # the client's creation-time series
    }
    assert set(families) == FAMILIES
    assert families["rxllm_time_to_first_token_seconds"].type == "histogram"
    assert families["rxllm_streams"].type == "counter"
    assert families["rxllm_active_streams"].type == "gauge"
    assert SID not in body.decode(), "the stream id is never a label"


def test_labels_stay_low_cardinality() -> None:
    metrics = Metrics()
    for i in range(20):
        e = Events(f"stream-{i}")
        drive(metrics, [e(Started, 0.0), e(TextDelta, 0.1, text="a"), e(Finished, 0.2)])
    label_names = {name for _, labels in samples(metrics) for name, _ in labels}
    assert label_names <= {"model", "upstream", "status", "kind", "le"}
    assert "stream-" not in metrics.exposition()[0].decode()


def test_two_metrics_have_separate_registries() -> None:
    a, b = Metrics(), Metrics()
    assert a.registry is not b.registry
    drive(a, terminal_stream(Finished))
    assert a.snapshot().streams == {"finished": 1}
    assert b.snapshot().streams == {}
    assert b"rxllm_streams_total{" not in b.exposition()[0]


def test_same_registry_needs_another_namespace() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    with pytest.raises(ValueError, match="Duplicated"):
        Metrics(registry)
    other = Metrics(registry, namespace="app2")
    drive(other, terminal_stream(Finished))
    assert other.snapshot().streams == {"finished": 1}


def test_metrics_endpoint_serves_the_exposition() -> None:
    metrics = Metrics()
    drive(metrics, terminal_stream(Finished))
    app = Starlette(routes=[metrics_endpoint(metrics)])
    with TestClient(app) as client:
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"] == metrics.exposition()[1]
        assert "rxllm_streams_total{" in response.text
        assert client.post("/metrics").status_code == 405


def test_all_is_complete() -> None:
    public = {
        name
        for name, obj in vars(metrics_module).items()
        if not name.startswith("_") and getattr(obj, "__module__", None) == metrics_module.__name__
    }
    assert public <= set(metrics_module.__all__)
    assert all(hasattr(metrics_module, name) for name in metrics_module.__all__)


def test_a_collector_pass_is_observed_by_generation_and_trigger() -> None:
    metrics = Metrics()
    metrics.observe_gc_pause(1, "paced", 0.004)
    labels = {"generation": "1", "trigger": "paced"}
    assert value(metrics, "rxllm_gc_pause_seconds_count", **labels) == 1
    assert value(metrics, "rxllm_gc_pause_seconds_sum", **labels) == 0.004
    assert value(metrics, "rxllm_gc_pause_seconds_bucket", le="0.005", **labels) == 1
    assert value(metrics, "rxllm_gc_pause_seconds_bucket", le="0.002", **labels) == 0
