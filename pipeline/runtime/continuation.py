"""Failover after the first token: a cut answer goes on, on a new attempt, as one stream.

Opt-in (``failover(..., continue_after_first_token=True)``; off by default).
:func:`pipeline.runtime.failover.failover` never takes back what it sent, so
an attempt that fails after its first token ends its run with an ``error``
event. :func:`continued` wraps those runs: on such an error, if the failure
is one a new attempt may not meet (the connection dropped, a timeout, an
HTTP 5xx/408/409/429, an error event of the server's own -- ``server_error``,
overloaded), it starts a new failover run whose request carries the answer
so far as the start of the assistant's turn, and joins its answer to what
was sent::

    run 1 on A    -started-"The quick"-" brown"-#connection
    run 2 on A    -started-"brown"-" fox"-finished|      (instruction; "brown" said again)

    downstream    -started-"The quick"-" brown"-failover(A->A, offset=15)-" fox"-finished|

How the answer so far is sent depends on the upstream (``Upstream.prefill``):

* ``"prefix"`` -- a trailing ``{"role": "assistant", "content": text,
  "prefix": true}`` (DeepSeek, Mistral; Anthropic-style servers take the
  trailing assistant message as a prefill). The new text is joined as it is.
* ``"instruction"`` (the default) -- ``{"role": "assistant", "content":
  text}`` then ``{"role": "user", "content": instruction}``
  (:data:`DEFAULT_INSTRUCTION`, replaceable; ``None``: no instruction). A
  model asked to continue often says the last words again: the overlap is
  trimmed (the seam rule below).
* ``"none"`` -- the request is sent again unchanged: the new answer must
  start with exactly what was sent, which is skipped; if it does not, the
  stream ends with the error (a join would be a guess).

The seam rule (``"instruction"``): the longest overlap of at most
``max_overlap`` characters between the end of the text sent and the start of
the new text is dropped from the new text, if it is whole words (it contains
a letter or digit, starts where a word starts in the text sent and ends where
a word ends in the new text). The new text is held until that is decided:
until it is no longer found within the last ``max_overlap`` characters sent.
A cut inside a word cannot be told from a whole word: its start may show twice.

Rules:

* The client sees one stream: the new run's ``started`` event is not sent;
  one ``failover`` event (``after_first_token=True``, ``offset`` = the
  number of characters of text sent, ``to_upstream`` = the upstream tried
  first) says where it joined; ``seq`` stays contiguous and ``t`` counts from
  the subscription.
* Nothing is sent twice: the text sent is the prefix; reasoning is not part
  of it and a new run's reasoning is not sent (the client has its own).
* Tool calls: while continuation is on, a tool call's events are held until
  its arguments are complete, then sent together, so a call cut in half was
  never shown; the new run streams it again whole. A new run's call with the
  same name and arguments as one already sent is not sent again; the others
  are numbered after the calls sent.
* The new attempt goes to the same upstream after a backoff (``backoff``'s
  first delay), or after a timeout to the next upstream at once; its own
  failover (retries, other upstreams) works as before its first token.
* Budget: at most ``max_continuations`` new runs; none once the total
  timeout has passed, and a new run gets what is left of it. A stream that
  keeps failing ends with the last ``error`` event, ``after_first_token``
  true, everything sent kept.
* Usage: a new run's ``usage`` event carries the sum of every run's usage and
  ``"rxllm": {"attempts": n, "reported": k}`` (a cut run rarely reported any).
* ``on_attempt(n, request)`` may return an observer that gets run ``n``'s own
  events (stream id ``<id>.<n>``), for the transcript store: called for
  every run once a stream is continued (the first run's events are kept
  until then).
* Only ``n`` = 1 requests are continued (several choices pass through).

Errors: none reach ``on_error``; every outcome ends with exactly one terminal event.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SerialDisposable

from pipeline.core.backoff import Backoff
from pipeline.core.events import (
    Cancelled,
    Event,
    Failover,
    ReasoningDelta,
    Started,
    StreamError,
    TextDelta,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallInvalid,
    ToolCallStarted,
    UsageReport,
    is_content,
    is_terminal,
)
from pipeline.core.scheduling import default_scheduler
from pipeline.runtime.upstreams import Upstream

__all__ = [
    "DEFAULT_INSTRUCTION",
    "AttemptFactory",
    "AttemptRecorder",
    "Continuation",
    "Prefill",
    "continuable",
    "continued",
    "join_overlap",
    "prefilled_request",
]

DEFAULT_INSTRUCTION = (
    "Your previous answer was cut off. Continue it exactly where it stopped, "
    "without repeating anything."
)
"""The continuation instruction sent to ``"instruction"`` upstreams unless replaced."""

Prefill = Literal["prefix", "instruction", "none"]

AttemptRecorder = Callable[[int, Mapping[str, Any]], abc.ObserverBase[Event] | None]
"""``(attempt number, request) -> observer or None``: where a run's own events go."""

AttemptFactory = Callable[
    [Sequence[Upstream], Callable[[Upstream, dict[str, Any]], dict[str, Any]], float | None],
    Observable[Event],
]
"""``(upstreams in order, request builder, total timeout) -> a failover run``."""

_TOOL_EVENTS = (ToolCallStarted, ToolCallDelta, ToolCallCompleted, ToolCallInvalid)

_SERVER_CODES = frozenset(
    {"server_error", "internal_error", "api_error", "overloaded", "overloaded_error"}
)


@dataclass(frozen=True)
class Continuation:
    """Options of continuation after the first token; see the module docstring.

    ``instruction`` is sent to ``"instruction"`` upstreams (``None``: none,
    the answer so far is still sent as an assistant message);
    ``max_overlap`` bounds the seam's overlap, in characters.
    """

    max_continuations: int = 1
    instruction: str | None = DEFAULT_INSTRUCTION
    max_overlap: int = 200
    on_attempt: AttemptRecorder | None = None

    def __post_init__(self) -> None:
        if self.max_continuations < 0 or self.max_overlap < 0:
            raise ValueError("max_continuations and max_overlap must be >= 0")


class _Metrics(Protocol):
    def inc_continuation(self, reason: str) -> None: ...


def continuable(error: StreamError) -> bool:
    """Whether a new attempt may not meet the failure ``error`` reports."""
    if error.kind in ("connection", "timeout"):
        return True
    status = error.status
    if status is not None:
        return status in (408, 409, 429) or status >= 500
    if error.kind == "upstream":
        code = (error.code or "").lower()
        return code in _SERVER_CODES or "overloaded" in error.message.lower()
    return error.retryable


def prefilled_request(
    params: Mapping[str, Any], text: str, prefill: Prefill, instruction: str | None
) -> dict[str, Any]:
    """``params`` with ``text`` as the start of the assistant's turn, the ``prefill`` way."""
    out = dict(params)
    if not text or prefill == "none":
        return out
    messages = list(out.get("messages") or [])
    if prefill == "prefix":
        messages.append({"role": "assistant", "content": text, "prefix": True})
    else:
        messages.append({"role": "assistant", "content": text})
        if instruction:
            messages.append({"role": "user", "content": instruction})
    out["messages"] = messages
    return out


def _inside_word(a: str, b: str) -> bool:
    return a.isalnum() and b.isalnum()


def join_overlap(sent: str, new: str, max_overlap: int, *, final: bool = True) -> int:
    """How many characters to drop from the start of ``new`` (the seam rule).

    The longest ``k`` <= ``max_overlap`` where ``sent`` ends with ``new[:k]``,
    ``new[:k]`` holds a letter or digit, starts at a word start in ``sent``
    and ends at a word end in ``new`` (``final``: ``new`` is all there is;
    otherwise an overlap must be followed by one more character).

        >>> join_overlap("the quick brown", "brown fox", 200)
        5
        >>> join_overlap("I saw a", "apple", 200)
        0
    """
    for k in range(min(len(new), len(sent), max_overlap), 0, -1):
        if k == len(new) and not final:
            continue
        piece = new[:k]
        if not sent.endswith(piece) or not any(ch.isalnum() for ch in piece):
            continue
        if k < len(sent) and _inside_word(sent[-k - 1], piece[0]):
            continue
        if k < len(new) and _inside_word(piece[-1], new[k]):
            continue
        return k
    return 0


class _Seam:
    """Decides what of a new run's first text is dropped; ``None`` from feed: no join."""

    def __init__(self, sent: str, prefill: Prefill, max_overlap: int) -> None:
        self.sent = sent
        self.prefill = prefill
        self.max_overlap = max_overlap
        self.tail = sent[-max_overlap:] if max_overlap else ""
        self.parts: list[str] = []
        self.open = bool(sent) and prefill != "prefix"
        self.trimmed = ""

    def feed(self, text: str) -> str | None:
        if not self.open:
            return text
        self.parts.append(text)
        held = "".join(self.parts)
        if self.prefill == "none":
            size = len(self.sent)
            if not (self.sent.startswith(held) or held.startswith(self.sent)):
                return None
            if len(held) < size:
                return ""
            self.open = False
            self.trimmed = self.sent
            return held[size:]
        if held in self.tail:
            return ""  # a longer overlap may still come
        return self._decide(held, final=False)

    def close(self) -> str | None:
        """The text held back, at the end of the new run's text."""
        if not self.open:
            return ""
        held = "".join(self.parts)
        if self.prefill == "none":
            return None if held != self.sent else ""
        return self._decide(held, final=True)

    def _decide(self, held: str, *, final: bool) -> str:
        self.open = False
        k = join_overlap(self.sent, held, self.max_overlap, final=final)
        self.trimmed = held[:k]
        return held[k:]


def _sum_usage(usages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for usage in usages:
        for key, value in usage.items():
            if isinstance(value, bool):
                out.setdefault(key, value)
            elif isinstance(value, int | float):
                out[key] = out.get(key, 0) + value
            elif isinstance(value, Mapping):
                previous = out.get(key)
                nested = [previous] if isinstance(previous, Mapping) else []
                out[key] = _sum_usage([*nested, value])
            else:
                out.setdefault(key, value)
    return out


def continued(
    attempt: AttemptFactory,
    upstreams: Sequence[Upstream],
    params: Mapping[str, Any],
    options: Continuation,
    *,
    stream_id: str,
    backoff: Backoff,
    total_timeout: float | None = None,
    metrics: Any = None,
    scheduler: abc.SchedulerBase | None = None,
) -> Observable[Event]:
    """Failover runs joined into one stream across cuts after the first token.

    ``attempt(order, request_for, total_timeout)`` makes one failover run
    over ``order`` whose request to each upstream is ``request_for(upstream,
    params)``; see the module docstring for the rest.
    """
    if not upstreams:
        raise ValueError("continuation needs at least one upstream")
    choices = params.get("n")
    if isinstance(choices, int) and choices > 1:
        return attempt(upstreams, _unchanged, total_timeout)

    def subscribe(
        observer: abc.ObserverBase[Event], scheduler_: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        run = _Joined(
            attempt,
            tuple(upstreams),
            dict(params),
            options,
            observer,
            stream_id=stream_id,
            backoff=backoff,
            total_timeout=total_timeout,
            metrics=metrics,
            scheduler=scheduler or scheduler_ or default_scheduler(),
            subscribe_scheduler=scheduler_,
        )
        run.start(upstreams, _unchanged)
        return Disposable(run.dispose)

    return Observable(subscribe)


def _unchanged(upstream: Upstream, params: dict[str, Any]) -> dict[str, Any]:
    return params


_Key = tuple[str | None, str]  # a tool call's name and arguments


class _Joined:
    """One subscription of :func:`continued`: the runs of one stream, joined."""

    def __init__(
        self,
        attempt: AttemptFactory,
        upstreams: tuple[Upstream, ...],
        params: dict[str, Any],
        options: Continuation,
        observer: abc.ObserverBase[Event],
        *,
        stream_id: str,
        backoff: Backoff,
        total_timeout: float | None,
        metrics: Any,
        scheduler: abc.SchedulerBase,
        subscribe_scheduler: abc.SchedulerBase | None,
    ) -> None:
        self.attempt = attempt
        self.upstreams = upstreams
        self.params = params
        self.options = options
        self.observer = observer
        self.stream_id = stream_id
        self.backoff = backoff
        self.total_timeout = total_timeout
        self.metrics = metrics
        self.scheduler = scheduler
        self.subscribe_scheduler = subscribe_scheduler
        self.lock = threading.RLock()
        self.started = scheduler.now
        self.current = SerialDisposable()
        self.timer = SerialDisposable()
        self.done = False
        self.seq = 0
        self.last_t = 0.0
        self.offset = 0.0  # the current run's start, seconds from subscription
        self.run = 0  # runs made: 1 is the first
        self.generation = 0
        self.attempts = 1  # attempts made in all runs (failover events count them)
        self.upstream = upstreams[0].name  # the upstream the current run is on
        self.order: tuple[Upstream, ...] = upstreams
        self.text: list[str] = []  # choice 0's text sent
        self.sent_any = False
        self.sent = ""  # the text sent when the current run began
        self.overlap = options.max_overlap
        self.calls: list[_Key] = []  # tool calls sent, in order
        self.held: list[Event] = []  # events from an open tool call's start on
        self.complete = False  # the calls held are complete: sent with the next event
        self.open_calls: set[int] = set()  # this run's calls whose arguments are not complete
        self.skip: set[int] = set()  # this run's calls already sent by an earlier run
        self.index_map: dict[int, int] = {}  # this run's call index -> the stream's
        self.calls_before = 0  # calls sent before this run
        self.seam: _Seam | None = None
        self.usages: list[dict[str, Any]] = []
        self.joined = False  # the current continuation has sent content
        self.recorder: abc.ObserverBase[Event] | None = None
        self.recorded = 0  # the next seq of the current run's record
        self.kept: list[Event] | None = [] if options.on_attempt is not None else None
        self.request: dict[str, Any] = params

    # -- time ----------------------------------------------------------------

    def elapsed(self) -> float:
        return (self.scheduler.now - self.started).total_seconds()

    # -- runs ----------------------------------------------------------------

    def start(
        self,
        order: Sequence[Upstream],
        request_for: Callable[[Upstream, dict[str, Any]], dict[str, Any]],
        total: float | None = None,
    ) -> None:
        with self.lock:
            if self.done:
                return
            self.run += 1
            self.generation += 1
            generation = self.generation
            self.order = tuple(order)
            self.upstream = self.order[0].name
            self.offset = self.elapsed() if self.run > 1 else 0.0
            try:
                events = self.attempt(order, request_for, total)
            except Exception as exc:  # a bug in building the run: end with it
                self.end_with_error(f"{type(exc).__name__}: {exc}")
                return

            def on_next(event: Event) -> None:
                self.on_event(event, generation)

            def on_error(exc: Exception) -> None:  # failover sends none: a bug
                with self.lock:
                    if generation == self.generation:
                        self.end_with_error(f"{type(exc).__name__}: {exc}")

            self.current.disposable = events.subscribe(
                on_next, on_error, scheduler=self.subscribe_scheduler
            )

    def on_event(self, event: Event, generation: int) -> None:
        with self.lock:
            if self.done or generation != self.generation:
                return
            self.record(event)
            if self.complete and not isinstance(
                event, StreamError | ToolCallCompleted | ToolCallInvalid
            ):
                self.release_held()  # the calls held were complete: the stream went on
            if isinstance(event, Failover):
                self.attempts += 1
                self.upstream = event.to_upstream
                if self.run > 1:
                    event = event.model_copy(
                        update={
                            "attempt": self.attempts,
                            "after_first_token": True,
                            "offset": len(self.sent),
                        }
                    )
                    # The new run moved before its first token: join its new upstream's way.
                    self.seam = _Seam(self.sent, self.prefill_of(event.to_upstream), self.overlap)
                self.send(event)
            elif isinstance(event, StreamError):
                self.failed(event)
            elif is_terminal(event):
                self.flush_seam()
                self.release_held()
                self.send(event)
                self.end()
            elif isinstance(event, Started):
                if self.run == 1:
                    self.send(event)
            elif isinstance(event, UsageReport):
                self.flush_seam()
                self.usages.append(dict(event.usage))
                if self.run > 1:
                    usage = _sum_usage(self.usages)
                    usage["rxllm"] = {"attempts": self.run, "reported": len(self.usages)}
                    event = event.model_copy(update={"usage": usage})
                self.queue(event)
            elif isinstance(event, ReasoningDelta):
                if self.run == 1:
                    self.queue(event)
            elif isinstance(event, TextDelta) and event.choice == 0 and self.seam is not None:
                text = self.seam.feed(event.text)
                if text is None:
                    self.cannot_join()
                elif text:
                    self.queue(event.model_copy(update={"text": text}))
            elif isinstance(event, _TOOL_EVENTS):
                self.flush_seam()
                self.tool_event(event)
            else:  # the text held at the seam goes first: it came first
                self.flush_seam()
                self.queue(event)

    def prefill_of(self, name: str) -> Prefill:
        for upstream in self.upstreams:
            if upstream.name == name:
                return upstream.prefill
        return "instruction"

    # -- what is sent ----------------------------------------------------------

    def queue(self, event: Event) -> None:
        """Send ``event``, or hold it behind an open tool call."""
        if self.held:
            self.held.append(event)
        else:
            self.send(event)

    def tool_event(
        self, event: ToolCallStarted | ToolCallDelta | ToolCallCompleted | ToolCallInvalid
    ) -> None:
        """Hold a tool call's events until it is complete (then all that is held goes)."""
        index = event.index
        self.sent_any = True  # the run is past its first token, even if nothing went out
        self.held.append(event)
        if isinstance(event, ToolCallCompleted | ToolCallInvalid):
            self.open_calls.discard(index)
            if self.run > 1 and (event.name, event.arguments) in self.calls[: self.calls_before]:
                self.skip.add(index)  # the new run said again a call already sent
            # Sent with the next event: a cut closes the open calls just before its error.
            self.complete = not self.open_calls
        else:
            self.open_calls.add(index)
            self.complete = False

    def release_held(self) -> None:
        self.complete = False
        held, self.held = self.held, []
        skip, self.skip = self.skip, set()
        for event in held:
            if isinstance(event, _TOOL_EVENTS):
                index = event.index
                if index in skip:
                    continue
                if isinstance(event, ToolCallCompleted | ToolCallInvalid):
                    self.calls.append((event.name, event.arguments))
                if self.run > 1:
                    target = self.index_map.get(index)
                    if target is None:
                        target = self.index_map[index] = self.calls_before + len(self.index_map)
                    if target != index:
                        event = event.model_copy(update={"index": target})
            self.send(event)

    def flush_seam(self) -> None:
        seam = self.seam
        if seam is None or not seam.open:
            return
        text = seam.close()
        if text is None:
            self.cannot_join()
        elif text:
            self.queue(
                TextDelta(stream_id=self.stream_id, seq=0, t=self.last_t - self.offset, text=text)
            )

    def send(self, event: Event) -> None:
        """Send an event renumbered and timed from the subscription."""
        if self.done:
            return
        if is_content(event):
            self.sent_any = True
            if isinstance(event, TextDelta) and event.choice == 0:
                self.text.append(event.text)
        seq = self.seq
        self.seq = seq + 1
        t = event.t + self.offset
        if t < self.last_t:
            t = self.last_t
        self.last_t = t
        if event.seq != seq or t != event.t or event.stream_id != self.stream_id:
            event = event.model_copy(update={"seq": seq, "t": t, "stream_id": self.stream_id})
        self.observer.on_next(event)

    # -- failures -------------------------------------------------------------

    def failed(self, error: StreamError) -> None:
        """The run ended with ``error``: continue on a new run, or end with it."""
        seam = self.seam
        if seam is not None and seam.open:  # what the seam held is new text: it is kept
            text = seam.close()
            if text:
                self.queue(
                    TextDelta(
                        stream_id=self.stream_id, seq=0, t=self.last_t - self.offset, text=text
                    )
                )
        if not self.sent_any and self.run == 1:
            self.release_held()
            self.send(error)
            self.end()
            return
        error = error.model_copy(update={"after_first_token": True})
        remaining = None if self.total_timeout is None else self.total_timeout - self.elapsed()
        if (
            self.run > self.options.max_continuations
            or not continuable(error)
            or (remaining is not None and remaining <= 0)
        ):
            self.release_held()  # no new run: what arrived is kept, as without continuation
            self.open_calls = set()
            self.send(error)
            self.end()
            return
        self.continue_after(error, remaining)

    def continue_after(self, error: StreamError, remaining: float | None) -> None:
        """Start run ``self.run + 1`` with the answer so far as its prefill."""
        self.generation += 1  # nothing more from the failed run
        self.current.disposable = Disposable()
        self.finish_recording(error)
        self.held = []  # a tool call cut in half (and what came after it) is never sent
        self.complete = False
        self.open_calls = set()
        self.skip = set()
        sent = self.sent = "".join(self.text)
        index = next((i for i, u in enumerate(self.upstreams) if u.name == self.upstream), 0)
        delay = self.backoff.delay(1)
        if error.kind == "timeout" and len(self.upstreams) > 1:
            index = (index + 1) % len(self.upstreams)  # a stalled upstream is not waited for
            delay = 0.0
        if remaining is not None:
            delay = min(delay, max(0.0, remaining))
        order = self.upstreams[index:] + self.upstreams[:index]
        options, params = self.options, self.params

        def request_for(upstream: Upstream, base: dict[str, Any]) -> dict[str, Any]:
            return prefilled_request(base, sent, upstream.prefill, options.instruction)

        if self.metrics is not None and hasattr(self.metrics, "inc_continuation"):
            self.metrics.inc_continuation(error.kind)
        self.send(
            Failover(
                stream_id=self.stream_id,
                seq=0,
                t=self.elapsed() - self.offset,
                from_upstream=self.upstream,
                to_upstream=order[0].name,
                attempt=self.attempts + 1,
                reason=error.message,
                kind=error.kind,
                status=error.status,
                delay=delay,
                after_first_token=True,
                offset=len(sent),
            )
        )
        self.attempts += 1
        self.calls_before = len(self.calls)
        self.index_map = {}
        self.seam = _Seam(sent, order[0].prefill, self.overlap)
        self.request = prefilled_request(params, sent, order[0].prefill, options.instruction)
        total = None if remaining is None else max(remaining - delay, 1e-3)

        def go(_: abc.SchedulerBase, __: Any = None) -> None:
            self.start(order, request_for, total)

        self.timer.disposable = self.scheduler.schedule_relative(delay, go)

    def cannot_join(self) -> None:
        """A ``"none"`` upstream's new answer does not repeat what was sent."""
        self.generation += 1
        self.current.disposable = Disposable()
        message = (
            "the new attempt's answer does not start with the text already sent, "
            "so it cannot be joined"
        )
        self.held = []
        self.open_calls = set()
        self.send(
            StreamError(
                stream_id=self.stream_id,
                seq=0,
                t=self.last_t - self.offset,
                kind="upstream",
                message=message,
                after_first_token=True,
            )
        )
        self.end()

    def end_with_error(self, message: str) -> None:
        self.send(
            StreamError(
                stream_id=self.stream_id,
                seq=0,
                t=self.last_t - self.offset,
                kind="internal",
                message=message,
                after_first_token=self.sent_any,
            )
        )
        self.end()

    # -- the runs' own records --------------------------------------------------

    def record(self, event: Event) -> None:
        """Keep (run 1, until a cut) or pass on (later runs) a run's own event."""
        if self.options.on_attempt is None:
            return
        if self.run == 1 and self.kept is not None:
            self.kept.append(event)
            return
        if self.recorder is None and self.run > 1:
            self.recorder = self.options.on_attempt(self.run, self.request)
        if self.recorder is not None:
            self.recorded = event.seq + 1
            self.recorder.on_next(event.model_copy(update={"stream_id": self.run_id()}))
            if is_terminal(event):
                self.recorder.on_completed()
                self.recorder = None

    def run_id(self) -> str:
        return f"{self.stream_id}.{self.run}"

    def finish_recording(self, error: StreamError) -> None:
        """The run was cut: its record ends (run 1's is written now)."""
        hook = self.options.on_attempt
        if hook is None:
            return
        if self.run == 1 and self.kept is not None:
            kept, self.kept = self.kept, None
            recorder = hook(1, self.params)
            if recorder is not None:
                run_id = self.run_id()
                for event in kept:
                    recorder.on_next(event.model_copy(update={"stream_id": run_id}))
                recorder.on_completed()
        elif self.recorder is not None:
            self.recorder.on_completed()
            self.recorder = None

    # -- the end ------------------------------------------------------------------

    def end(self) -> None:
        self.done = True
        self.kept = None
        self.timer.dispose()
        self.observer.on_completed()

    def dispose(self) -> None:
        with self.lock:
            recorder, self.recorder = self.recorder, None
            self.done = True
            self.kept = None
        CompositeDisposable(self.timer, self.current).dispose()
        if recorder is not None:
            recorder.on_next(
                Cancelled(stream_id=self.run_id(), seq=self.recorded, reason="disposed")
            )
            recorder.on_completed()
