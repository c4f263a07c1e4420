"""Metrics sink: per-stream figures and Prometheus aggregates, measured from events.

One :class:`Metrics` per app (it owns a ``CollectorRegistry``, a new one by
default: no module-level state, so tests and several apps never collide).
:meth:`Metrics.attach` subscribes a :class:`StreamMeter` to a
:class:`pipeline.runtime.multicast.StreamRun` (before ``start()``); the meter measures
that one stream from the ``t`` of its events and records the aggregates at the
terminal event. ``meter.stats()`` gives the per-stream :class:`StreamStats`
(for the chat page, the CLI); ``metrics.snapshot()`` the aggregate counts;
``metrics.exposition()`` and :func:`metrics_endpoint` the Prometheus text.

Definitions:

* a *content event* is a non-empty text, reasoning or refusal delta, a
  ``tool_call.started`` or a ``tool_call.delta`` (the rule of
  ``Result.first_token_at`` and ``map_errors``);
* time to first token (TTFT) is the ``t`` of the first content event;
* inter-token latency (ITL) is the difference of ``t`` between consecutive
  content events (all choices together);
* tokens per second is the tokens after the first content event divided by
  the time from the first to the last content event. Tokens are the content
  events after the first, or, when a usage event reported
  ``completion_tokens``/``output_tokens``, that count scaled by
  ``(chunks - 1) / chunks`` (the share that arrived after the first chunk).
  A provider that counts hidden reasoning tokens there inflates the figure;
* bytes are UTF-8 bytes of text and tool-call arguments.

Cost: ``on_next`` does O(1) work and allocates nothing per event beyond one
float in an ``array('d')`` of ITLs. Counters and the ITL histogram are
recorded once, at the terminal event, rather than per event: the total work
is the same, but the hot path avoids the client's locks and label lookups,
and the ITL samples are needed anyway for the per-stream p50/p99. Only TTFT is
observed live, once per stream. The knowing difference: a long stream's
chunk, byte and ITL figures reach Prometheus when it ends, not while it runs.

Labels are low-cardinality: ``model`` (given to :meth:`Metrics.attach`, else
the one the ``started`` event names, else ``unknown``), ``upstream`` (a
configured name: never a URL with credentials, never an API key), ``status``,
``kind`` and a cancel reason *class*; never the stream id.

Metric names (prefix ``rxllm_`` by default)::

    rxllm_time_to_first_token_seconds      histogram  model, upstream
    rxllm_inter_token_latency_seconds      histogram  model, upstream
    rxllm_stream_duration_seconds          histogram  model, upstream, status
    rxllm_tokens_per_second                histogram  model, upstream
    rxllm_streams_total                    counter    model, upstream, status
    rxllm_stream_errors_total              counter    model, upstream, kind
    rxllm_stream_cancellations_total       counter    model, upstream, reason
    rxllm_active_streams                   gauge      upstream
    rxllm_content_chunks_total             counter    model, upstream, kind
    rxllm_content_bytes_total              counter    model, upstream, kind
    rxllm_tokens_total                     counter    model, upstream, type (input|output)
    rxllm_failovers_total                  counter    from_upstream, to_upstream
    rxllm_retries_total                    counter    upstream, kind
    rxllm_continuations_total              counter    reason (the cut's error kind)
    rxllm_store_buffer_dropped_total       counter    sink
    rxllm_store_unavailable                gauge
    rxllm_store_streams_held               gauge
    rxllm_store_holds_total                counter
    rxllm_connections_closed_total         counter    reason
    rxllm_gc_pause_seconds                 histogram  generation, trigger (paced|forced|backstop)
    rxllm_api_keys_removed_total           counter    upstream

Example::

    metrics = Metrics()
    meter = metrics.attach(run, model="gpt-4o-mini", upstream="openai")
    run.start()
    await run.wait()
    print(meter.stats().ttft, meter.stats().itl_p99)
    app = Starlette(routes=[metrics_endpoint(metrics)])

Errors: none of its own; a bug in the meter is raised to the runner, which
detaches the sink, and the active gauge is released first.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict
from reactivex import abc
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pipeline.core.events import (
    Cancelled,
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
from pipeline.runtime.multicast import StreamRun

__all__ = [
    "DURATION_BUCKETS",
    "GC_PAUSE_BUCKETS",
    "ITL_BUCKETS",
    "TPS_BUCKETS",
    "TTFT_BUCKETS",
    "Metrics",
    "MetricsSnapshot",
    "StreamMeter",
    "StreamStats",
    "cancel_reason_class",
    "metrics_endpoint",
]


Status = Literal["running", "finished", "error", "cancelled"]

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 30.0, 60.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)
DURATION_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
GC_PAUSE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
TPS_BUCKETS = (1.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0)

UNKNOWN = "unknown"

# Content event class -> the ``kind`` label of the chunk and byte counters.
_CONTENT_KIND: dict[type[Any], str] = {
    TextDelta: "text",
    ReasoningDelta: "reasoning",
    RefusalDelta: "refusal",
    ToolCallStarted: "tool_call",
    ToolCallDelta: "tool_call",
}


def cancel_reason_class(reason: str) -> str:
    """Map a free-form cancel reason to a low-cardinality label value.

    ``timeout``, ``client_gone``, ``interrupted``, ``cancelled`` (the
    default reason, or an empty one), else ``other``.
    """
    r = reason.lower()
    if "timeout" in r or "timed out" in r:
        return "timeout"
    if "client" in r or "disconnect" in r or "went away" in r or "gone" in r:
        return "client_gone"
    if "interrupt" in r:
        return "interrupted"
    if r in ("", "cancel", "cancelled", "canceled"):
        return "cancelled"
    return "other"


def _utf8_len(s: str) -> int:
    # isascii() is O(1) on CPython's compact strings: no encoding for ASCII text.
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


def _observe_each(histogram: Histogram, values: Sequence[float]) -> None:
    """``for value in values: histogram.observe(value)``, in one pass per stream.

    One ``observe`` costs about as much as the rest of a chunk's metrics (a
    lock per bucket and per sum, a Python loop over the bounds), and every
    content event of every stream has an inter-token latency: here each bucket
    is incremented once by its count and the sum gets the values added in
    the same order (the same float). A histogram child without the fields of
    the prometheus_client this was written for is observed value by value.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    last = len(bounds)
    running = total.get()
    for value in values:
        running += value
        at = bisect_left(bounds, value)  # the first bound >= value: observe()'s bucket
        if at < last and value == value:  # NaN fits no bucket in observe() either
            counts[at] += 1
    total.set(running)
    for at, count in enumerate(counts):
        if count:
            buckets[at].inc(count)


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of a non-empty sorted list."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _usage_tokens(usage: dict[str, Any] | None, *keys: str) -> int | None:
    """The first of ``keys`` that ``usage`` reports as a count (an integer, not negative).

    An upstream that reports a negative count is wrong, not the stream: the
    figure is left out (a counter cannot go down) and the stream is measured.
    """
    if usage is not None:
        for key in keys:
            value = usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
    return None


def _output_tokens(usage: dict[str, Any] | None) -> int | None:
    return _usage_tokens(usage, "completion_tokens", "output_tokens")


class StreamStats(BaseModel):
    """The figures of one stream; times in seconds from the stream's start.

    A figure that cannot be measured (no content, a single chunk) is ``None``.
    ``chunks`` counts content events; ``itl_*`` summarize the inter-token
    latencies (p50/p99 by nearest rank).
    """

    model_config = ConfigDict(frozen=True)

    stream_id: str | None = None
    model: str | None = None
    upstream: str | None = None
    status: Status = "running"
    error_kind: str | None = None
    cancel_reason: str | None = None
    events: int = 0
    chunks: int = 0
    bytes: int = 0
    ttft: float | None = None
    duration: float | None = None
    itl_count: int = 0
    itl_mean: float | None = None
    itl_p50: float | None = None
    itl_p99: float | None = None
    itl_max: float | None = None
    output_tokens: int | None = None
    tokens_per_second: float | None = None


class MetricsSnapshot(BaseModel):
    """Aggregate counts of a :class:`Metrics`, summed over models and upstreams."""

    model_config = ConfigDict(frozen=True)

    active: int
    streams: dict[str, int]
    errors: dict[str, int]
    cancellations: dict[str, int]
    chunks: int
    bytes: int
    tokens: dict[str, int]
    failovers: int
    retries: int
    store_buffer_dropped: int
    ttft_mean: float | None
    itl_mean: float | None
    tokens_per_second_mean: float | None


class StreamMeter(abc.ObserverBase[Event]):
    """Observer measuring one stream; made by :meth:`Metrics.attach` or :meth:`Metrics.meter`.

    The active-streams gauge was raised when it was made; it is lowered
    exactly once: at the terminal event, at completion or error without one,
    or by :meth:`detach`.
    """

    __slots__ = (
        "_bytes",
        "_bytes_by_kind",
        "_cancel_reason",
        "_chunks",
        "_chunks_by_kind",
        "_error_kind",
        "_events",
        "_first",
        "_itls",
        "_last",
        "_metrics",
        "_model",
        "_released",
        "_status",
        "_stream_id",
        "_t",
        "_t_end",
        "_usage",
        "subscription",
        "upstream",
    )

    def __init__(
        self, metrics: Metrics, *, model: str | None = None, upstream: str | None = None
    ) -> None:
        self._metrics = metrics
        self._model = model
        self.upstream = upstream or UNKNOWN
        self._stream_id: str | None = None
        self._status: Status = "running"
        self._error_kind: str | None = None
        self._cancel_reason: str | None = None
        self._events = 0
        self._chunks = 0
        self._bytes = 0
        self._chunks_by_kind: dict[str, int] = {}
        self._bytes_by_kind: dict[str, int] = {}
        self._first: float | None = None
        self._last = 0.0
        self._itls: array[float] = array("d")
        self._t = 0.0
        self._t_end: float | None = None
        self._usage: dict[str, Any] | None = None
        self._released = False
        self.subscription: abc.DisposableBase | None = None
        metrics._active.labels(self.upstream).inc()

    @property
    def model(self) -> str:
        """The ``model`` label: the one given, else the stream's, else ``unknown``."""
        return self._model or UNKNOWN

    @property
    def done(self) -> bool:
        """Whether the stream has ended (its aggregates are recorded)."""
        return self._status != "running"

    def on_next(self, value: Event) -> None:
        """Take one event into account (O(1))."""
        # A text delta after the first token, the commonest event, is counted here:
        # what _add and _content do for it, without their two calls and type tests.
        if type(value) is TextDelta and self._first is not None and self._status == "running":
            self._events += 1
            t = self._t = value.t
            text = value.text
            if text:
                size = len(text) if text.isascii() else _utf8_len(text)
                self._chunks += 1
                self._bytes += size
                chunks = self._chunks_by_kind
                chunks["text"] = chunks.get("text", 0) + 1
                if size:
                    sizes = self._bytes_by_kind
                    sizes["text"] = sizes.get("text", 0) + size
                self._itls.append(t - self._last)
                self._last = t
            return
        try:
            self._add(value)
        except Exception:
            self._release()  # the runner detaches a sink that raises
            raise

    def on_error(self, error: Exception) -> None:
        """The stream failed without a terminal event: count an ``internal`` error."""
        self._end("error", self._t, error_kind="internal")

    def on_completed(self) -> None:
        """Completion; without a terminal event first, counts an ``internal`` error."""
        self._end("error", self._t, error_kind="internal")

    def detach(self) -> None:
        """Stop measuring (nothing is recorded for the stream) and lower the gauge."""
        if self.subscription is not None:
            self.subscription.dispose()
        self._release()

    def _add(self, event: Event) -> None:
        if self._status != "running":
            return
        self._events += 1
        self._t = event.t
        kind = _CONTENT_KIND.get(type(event))
        if kind is not None:
            if isinstance(event, TextDelta | ReasoningDelta | RefusalDelta):
                if event.text:
                    self._content(event.t, kind, _utf8_len(event.text))
            elif isinstance(event, ToolCallDelta):
                self._content(event.t, kind, _utf8_len(event.arguments))
            else:
                self._content(event.t, kind, 0)
        elif isinstance(event, UsageReport):
            self._usage = event.usage
        elif isinstance(event, Started):
            self._stream_id = event.stream_id
            if self._model is None and event.model:
                self._model = event.model
        elif isinstance(event, Finished):
            self._end("finished", event.t)
        elif isinstance(event, StreamError):
            self._end("error", event.t, error_kind=event.kind)
        elif isinstance(event, Cancelled):
            self._end("cancelled", event.t, cancel_reason=event.reason)
        if self._stream_id is None:
            self._stream_id = event.stream_id

    def _content(self, t: float, kind: str, size: int) -> None:
        self._chunks += 1
        self._bytes += size
        self._chunks_by_kind[kind] = self._chunks_by_kind.get(kind, 0) + 1
        if size:
            self._bytes_by_kind[kind] = self._bytes_by_kind.get(kind, 0) + size
        if self._first is None:
            self._first = t
            self._metrics._ttft.labels(self.model, self.upstream).observe(t)
        else:
            self._itls.append(t - self._last)
        self._last = t

    def _end(
        self,
        status: Status,
        t: float,
        *,
        error_kind: str | None = None,
        cancel_reason: str | None = None,
    ) -> None:
        if self._status != "running":
            return
        self._status = status
        self._t_end = t
        self._error_kind = error_kind
        self._cancel_reason = cancel_reason
        try:
            self._metrics._record(self)
        finally:
            self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._metrics._active.labels(self.upstream).dec()

    def stats(self) -> StreamStats:
        """The figures so far (computed on call: sorts the ITLs once)."""
        itls = sorted(self._itls)
        n = len(itls)
        output = _output_tokens(self._usage)
        return StreamStats(
            stream_id=self._stream_id,
            model=self._model,
            upstream=self.upstream,
            status=self._status,
            error_kind=self._error_kind,
            cancel_reason=self._cancel_reason,
            events=self._events,
            chunks=self._chunks,
            bytes=self._bytes,
            ttft=self._first,
            duration=self._t_end,
            itl_count=n,
            itl_mean=math.fsum(itls) / n if n else None,
            itl_p50=_percentile(itls, 0.50) if n else None,
            itl_p99=_percentile(itls, 0.99) if n else None,
            itl_max=itls[-1] if n else None,
            output_tokens=output,
            tokens_per_second=self._tokens_per_second(output),
        )

    def _tokens_per_second(self, output: int | None) -> float | None:
        if self._first is None or self._chunks < 2:
            return None
        window = self._last - self._first
        if window <= 0:
            return None
        after_first = float(self._chunks - 1)
        if output is not None:
            after_first = output * (self._chunks - 1) / self._chunks
        return after_first / window


class Metrics:
    """Prometheus metrics of every stream of one app; see the module docstring.

    ``registry`` defaults to a new ``CollectorRegistry`` (pass
    ``prometheus_client.REGISTRY`` to join the process-wide one);
    ``classify_cancel`` maps a cancel reason to its label value.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "rxllm",
        classify_cancel: Callable[[str], str] = cancel_reason_class,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.classify_cancel = classify_cancel
        ns, reg = namespace, self.registry
        mu = ["model", "upstream"]
        self._ttft = Histogram(
            "time_to_first_token_seconds",
            "Time from the start of a stream to its first content event.",
            mu,
            namespace=ns,
            registry=reg,
            buckets=TTFT_BUCKETS,
        )
        self._itl = Histogram(
            "inter_token_latency_seconds",
            "Time between consecutive content events of a stream.",
            mu,
            namespace=ns,
            registry=reg,
            buckets=ITL_BUCKETS,
        )
        self._duration = Histogram(
            "stream_duration_seconds",
            "Time from the start of a stream to its terminal event.",
            [*mu, "status"],
            namespace=ns,
            registry=reg,
            buckets=DURATION_BUCKETS,
        )
        self._tps = Histogram(
            "tokens_per_second",
            "Generation speed of a stream after its first token.",
            mu,
            namespace=ns,
            registry=reg,
            buckets=TPS_BUCKETS,
        )
        self._streams = Counter(
            "streams_total",
            "Streams ended, by status (finished, error, cancelled).",
            [*mu, "status"],
            namespace=ns,
            registry=reg,
        )
        self._errors = Counter(
            "stream_errors_total",
            "Streams ended by an error, by error kind.",
            [*mu, "kind"],
            namespace=ns,
            registry=reg,
        )
        self._cancellations = Counter(
            "stream_cancellations_total",
            "Streams cancelled, by reason class.",
            [*mu, "reason"],
            namespace=ns,
            registry=reg,
        )
        self._active = Gauge(
            "active_streams",
            "Streams attached and not yet ended.",
            ["upstream"],
            namespace=ns,
            registry=reg,
        )
        self._chunks = Counter(
            "content_chunks_total",
            "Content events (text, reasoning, refusal, tool_call), counted at stream end.",
            [*mu, "kind"],
            namespace=ns,
            registry=reg,
        )
        self._bytes = Counter(
            "content_bytes_total",
            "UTF-8 bytes of text and tool-call arguments, counted at stream end.",
            [*mu, "kind"],
            namespace=ns,
            registry=reg,
        )
        self._tokens = Counter(
            "tokens_total",
            "Tokens as the provider's usage reported them (type: input, output).",
            [*mu, "type"],
            namespace=ns,
            registry=reg,
        )
        self._failovers = Counter(
            "failovers_total",
            "Requests moved from one upstream to another.",
            ["from_upstream", "to_upstream"],
            namespace=ns,
            registry=reg,
        )
        self._retries = Counter(
            "retries_total",
            "Requests retried on the same upstream, by error kind.",
            ["upstream", "kind"],
            namespace=ns,
            registry=reg,
        )
        self._continuations = Counter(
            "continuations_total",
            "Answers cut after the first token and continued on a new attempt, by the "
            "cut's error kind (connection, timeout, upstream, http).",
            ["reason"],
            namespace=ns,
            registry=reg,
        )
        self._store_dropped = Counter(
            "store_buffer_dropped_total",
            "Events a sink's full write buffer could not keep.",
            ["sink"],
            namespace=ns,
            registry=reg,
        )
        self._keys_removed = Counter(
            "api_keys_removed_total",
            "API keys taken out of a pool after a 401/403 (never the key itself).",
            ["upstream"],
            namespace=ns,
            registry=reg,
        )
        self._connections_closed = Counter(
            "connections_closed_total",
            "Client connections the server closed to protect itself, by reason "
            "(header_timeout, body_timeout, connection_limit).",
            ["reason"],
            namespace=ns,
            registry=reg,
        )
        self._gc_pause = Histogram(
            "gc_pause_seconds",
            "Passes of the cyclic garbage collector, by generation and by what started them: "
            "rxllm serve's pacer between requests (paced), the pacer without a gap (forced), "
            "CPython's own trigger (backstop).",
            ["generation", "trigger"],
            buckets=GC_PAUSE_BUCKETS,
            namespace=ns,
            registry=reg,
        )
        self._store_unavailable = Gauge(
            "store_unavailable",
            "1 while the transcript store cannot write (events wait in its bounded buffer).",
            namespace=ns,
            registry=reg,
        )

        self._store_held = Gauge(
            "store_streams_held",
            "Streams whose upstream read waits because the transcript store is behind.",
            namespace=ns,
            registry=reg,
        )
        self._store_holds = Counter(
            "store_holds",
            "Times the transcript store, behind, held a stream's upstream read.",
            namespace=ns,
            registry=reg,
        )
        self._held_now = 0

    # -- streams -------------------------------------------------------------

    def meter(self, *, model: str | None = None, upstream: str | None = None) -> StreamMeter:
        """A new observer for one stream (raises the active gauge now); subscribe it yourself."""
        return StreamMeter(self, model=model, upstream=upstream)

    def attach(
        self, run: StreamRun, *, model: str | None = None, upstream: str | None = None
    ) -> StreamMeter:
        """Measure ``run``: subscribe a new :class:`StreamMeter` (before ``run.start()``)."""
        meter = self.meter(model=model, upstream=upstream)
        meter.subscription = run.subscribe(meter)
        return meter

    def _record(self, meter: StreamMeter) -> None:
        """Record a finished stream's aggregates (once per stream, from the meter)."""
        model, upstream = meter.model, meter.upstream
        status = meter._status
        if meter._t_end is not None:
            self._duration.labels(model, upstream, status).observe(meter._t_end)
        self._streams.labels(model, upstream, status).inc()
        if meter._error_kind is not None:
            self._errors.labels(model, upstream, meter._error_kind).inc()
        if meter._cancel_reason is not None:
            reason = self.classify_cancel(meter._cancel_reason)
            self._cancellations.labels(model, upstream, reason).inc()
        for kind, n in meter._chunks_by_kind.items():
            self._chunks.labels(model, upstream, kind).inc(n)
        for kind, n in meter._bytes_by_kind.items():
            self._bytes.labels(model, upstream, kind).inc(n)
        if meter._itls:
            _observe_each(self._itl.labels(model, upstream), meter._itls)
        output = _output_tokens(meter._usage)
        tps = meter._tokens_per_second(output)
        if tps is not None:
            self._tps.labels(model, upstream).observe(tps)
        if output is not None:
            self._tokens.labels(model, upstream, "output").inc(output)
        prompt = _usage_tokens(meter._usage, "prompt_tokens", "input_tokens")
        if prompt is not None:
            self._tokens.labels(model, upstream, "input").inc(prompt)

    # -- hooks for other components -----------------------------------------

    def inc_failover(self, from_upstream: str, to_upstream: str) -> None:
        """Count a request moved from ``from_upstream`` to ``to_upstream``."""
        self._failovers.labels(from_upstream, to_upstream).inc()

    def inc_retry(self, upstream: str, kind: str = UNKNOWN) -> None:
        """Count a retry on ``upstream`` after an error of ``kind`` (an ``ErrorKind``)."""
        self._retries.labels(upstream, kind).inc()

    def inc_continuation(self, reason: str) -> None:
        """Count an answer continued after the first token, by the cut's ``reason`` (error kind)."""
        self._continuations.labels(reason).inc()

    def inc_store_buffer_dropped(self, n: int = 1, *, sink: str = "store") -> None:
        """Count ``n`` events a sink's full write buffer could not keep."""
        self._store_dropped.labels(sink).inc(n)

    def inc_connection_closed(self, reason: str) -> None:
        """Count a client connection closed by the server's own limits (``reason``)."""
        self._connections_closed.labels(reason).inc()

    def observe_gc_pause(self, generation: int, trigger: str, seconds: float) -> None:
        """Record a pass of the cyclic collector (see ``pipeline.apps.server.collector_pacer``)."""
        self._gc_pause.labels(str(generation), trigger).observe(seconds)

    def set_store_unavailable(self, unavailable: bool) -> None:
        """Say whether the transcript store is failing to write now."""
        self._store_unavailable.set(1 if unavailable else 0)

    def set_store_streams_held(self, held: int) -> None:
        """Say how many streams the transcript store holds now; a rise counts as holds."""
        if held > self._held_now:
            self._store_holds.inc(held - self._held_now)
        self._held_now = held
        self._store_held.set(held)

    def inc_key_removed(self, upstream: str) -> None:
        """Count an API key taken out of ``upstream``'s pool."""
        self._keys_removed.labels(upstream).inc()

    # -- reading ------------------------------------------------------------

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of the registry, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def snapshot(self) -> MetricsSnapshot:
        """Aggregate counts, summed over models and upstreams (for tests and JSON)."""
        ttft_n, ttft_sum = _histogram(self._ttft)
        itl_n, itl_sum = _histogram(self._itl)
        tps_n, tps_sum = _histogram(self._tps)
        return MetricsSnapshot(
            active=int(_total(self._active, "")),
            streams=_by(self._streams, "status"),
            errors=_by(self._errors, "kind"),
            cancellations=_by(self._cancellations, "reason"),
            chunks=int(_total(self._chunks)),
            bytes=int(_total(self._bytes)),
            tokens=_by(self._tokens, "type"),
            failovers=int(_total(self._failovers)),
            retries=int(_total(self._retries)),
            store_buffer_dropped=int(_total(self._store_dropped)),
            ttft_mean=ttft_sum / ttft_n if ttft_n else None,
            itl_mean=itl_sum / itl_n if itl_n else None,
            tokens_per_second_mean=tps_sum / tps_n if tps_n else None,
        )


def _samples(
    metric: Counter | Gauge | Histogram, suffix: str
) -> list[tuple[dict[str, str], float]]:
    out: list[tuple[dict[str, str], float]] = []
    for family in metric.collect():
        name = family.name + suffix
        out.extend((s.labels, s.value) for s in family.samples if s.name == name)
    return out


def _total(metric: Counter | Gauge, suffix: str = "_total") -> float:
    return sum(value for _, value in _samples(metric, suffix))


def _by(metric: Counter, label: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for labels, value in _samples(metric, "_total"):
        key = labels[label]
        out[key] = out.get(key, 0) + int(value)
    return out


def _histogram(metric: Histogram) -> tuple[int, float]:
    count = sum(value for _, value in _samples(metric, "_count"))
    return int(count), sum(value for _, value in _samples(metric, "_sum"))


def metrics_endpoint(metrics: Metrics, path: str = "/metrics") -> Route:
    """A Starlette ``GET`` route serving the Prometheus exposition of ``metrics``."""

    async def handler(request: Request) -> Response:
        body, content_type = metrics.exposition()
        return Response(body, headers={"Content-Type": content_type})

    return Route(path, handler, methods=["GET"], name="metrics")
