"""Failover before the first token: one stream, tried on several upstreams in order.

:func:`failover` makes each attempt with :func:`pipeline.runtime.standard_chain.llm_stream`
over :func:`pipeline.runtime.sources.chat_completions` on one :class:`Upstream`, and
holds the attempt's events back until its first content event (a non-empty
text, reasoning or refusal delta, a tool-call start or delta) or its terminal
event. An attempt that fails before that with a retryable error (connection
refused or lost, a timeout including the first-token timeout, 408, 409, 429,
5xx) is disposed, which cancels its request, and its held events are dropped;
then the same upstream is tried again after an exponential backoff with
jitter, at most ``retries`` times, and then the next upstream at once (after
a timeout, the next upstream at once: a stalled upstream is retried only when
it is the last one)::

    attempt 1 on A  -started-#503                (held back, dropped)
    failover        -failover(A->A, delay=0.25)
    attempt 2 on A  -started-#503
    failover        -failover(A->B, delay=0)
    attempt 3 on B  -started-"Hel"-"lo"-finished|

    downstream      -failover-failover-started-"Hel"-"lo"-finished|   seq 0..5

Rules:

* Every move is a ``failover`` event (:class:`pipeline.core.events.Failover`),
  sent at once, and is counted by ``metrics.inc_retry(upstream, kind)`` (same
  upstream) or ``metrics.inc_failover(from, to)`` (next upstream).
* A ``Retry-After`` (the error event's ``retry_after``) is honoured: the same
  upstream is never tried sooner, by this request or another (an upstream
  without a key pool remembers it in its :class:`~pipeline.runtime.upstreams.Cooldown`,
  a pool per key); when the wait would be longer than ``max_wait`` or end
  after the budget, the next upstream is tried instead, or, with none left,
  the stream ends at once with the 429, its ``retry_after`` saying when the
  first upstream or key is free again. No wait is longer than ``max_wait``,
  no attempt starts later than ``max_total`` seconds after subscription, and
  one upstream is asked at most ``1 + retries`` times (besides the retries
  with another key of a pool after a key was rejected with 401/403).
* With a :class:`pipeline.runtime.key_pool.KeyPool`, every attempt leases a key and
  releases it with the outcome: a 429 cools the key down (the next attempt
  takes another key at once if one is healthy), 401/403 remove it and the
  same upstream is tried again with another key. When no key is left the
  stream ends with the 401/403 error.
* A non-retryable error before the first token (400, 404, 422, 401/403
  without another key...) ends the stream with that error: another upstream
  would refuse the same request.
* After the first token nothing is taken back: the attempt's events flow
  through as they come and an error is the terminal ``error`` event, with
  everything sent before it kept.
* Downstream, ``seq`` is contiguous (held events of failed attempts are never
  sent) and ``t`` counts from the subscription, across attempts; every event
  carries the same stream id.

Example::

    upstreams = [
        Upstream("openai", api_key=KeyPool([key1, key2])),
        Upstream("backup", base_url="http://10.0.0.7:8000/v1", models={"*": "llama-3.1-70b"}),
    ]
    run = StreamRun(failover(upstreams, {"model": "gpt-4o-mini", "messages": messages},
                             first_token_timeout=10, metrics=metrics), errors_mapped=True)

Errors: none reach ``on_error``; every outcome ends with exactly one terminal
event. ``ValueError`` at creation for no upstreams or a bad policy value.
"""

from __future__ import annotations

import logging
import random as _random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Protocol

from openai import AsyncOpenAI
from reactivex import Observable, abc
from reactivex.disposable import (
    CompositeDisposable,
    Disposable,
    SerialDisposable,
    SingleAssignmentDisposable,
)

from operators._fused import direct_on_next
from operators.extract_deltas import RawChunk
from pipeline.core.backoff import Backoff
from pipeline.core.error_info import classify
from pipeline.core.events import (
    Event,
    EventBase,
    Failover,
    StreamError,
    is_content,
    is_terminal,
)
from pipeline.core.flow_control import CURRENT_FLOW
from pipeline.core.ids import new_stream_id
from pipeline.core.scheduling import default_scheduler
from pipeline.runtime import sources
from pipeline.runtime.continuation import AttemptRecorder, Continuation, continued
from pipeline.runtime.failover_options import FailoverOptions
from pipeline.runtime.key_pool import Lease, NoKeyAvailable
from pipeline.runtime.standard_chain import llm_stream
from pipeline.runtime.upstreams import ClientFactory, Upstream

__all__ = ["AttemptSource", "FailoverMetrics", "RequestBuilder", "SourceFactory", "failover"]

log = logging.getLogger(__name__)

SourceFactory = Callable[[AsyncOpenAI, dict[str, Any]], Observable[RawChunk]]
"""Makes one attempt's raw source from a client and the request's parameters."""

AttemptSource = Callable[[Upstream, str | None], Observable[RawChunk]]
"""Makes one attempt's raw source on an upstream with a key, the request decided already
(its API and body per upstream: :mod:`pipeline.runtime.api_routing`)."""


class FailoverMetrics(Protocol):
    """What :func:`failover` counts (:class:`sinks.metrics.Metrics` has both)."""

    def inc_failover(self, from_upstream: str, to_upstream: str) -> None: ...

    def inc_retry(self, upstream: str, kind: str = ...) -> None: ...


def _chat(client: AsyncOpenAI, params: dict[str, Any]) -> Observable[RawChunk]:
    source: Observable[RawChunk] = sources.chat_completions(client, **params)
    return source


def _client(upstream: Upstream, api_key: str | None) -> AsyncOpenAI:
    return upstream.client(api_key)


RequestBuilder = Callable[[Upstream, dict[str, Any]], dict[str, Any]]
"""Makes the request sent to one upstream from the stream's parameters."""


@dataclass(frozen=True)
class _Policy:
    request_for: RequestBuilder | None
    upstreams: tuple[Upstream, ...]
    params: dict[str, Any]
    stream_id: str
    tools: Any
    conversation_id: str | None
    options: FailoverOptions
    backoff: Backoff
    metrics: FailoverMetrics | None
    scheduler: abc.SchedulerBase | None
    client_factory: ClientFactory
    source_factory: SourceFactory
    attempt_source: AttemptSource | None
    request_timeouts: Mapping[str, float]

    def limit(self, name: str, upstream: Upstream) -> float | None:
        """Timeout ``name`` of an attempt on ``upstream``: the request's, the upstream's, ours."""
        value = self.request_timeouts.get(name)
        if value is None:
            value = getattr(upstream, name)
        return value if value is not None else getattr(self.options, name)


_DEFAULTS = FailoverOptions()


def failover(
    upstreams: Sequence[Upstream],
    params: Mapping[str, Any],
    *,
    options: FailoverOptions | None = None,
    stream_id: str | None = None,
    tools: Any = None,
    conversation_id: str | None = None,
    metrics: FailoverMetrics | None = None,
    scheduler: abc.SchedulerBase | None = None,
    client_factory: ClientFactory | None = None,
    source_factory: SourceFactory | None = None,
    attempt_source: AttemptSource | None = None,
    random: Callable[[], float] = _random.random,
    request_for: RequestBuilder | None = None,
    on_attempt: AttemptRecorder | None = None,
    request_timeouts: Mapping[str, float] | None = None,
    **overrides: float | None,
) -> Observable[Event]:
    """Stream ``params`` from the first upstream that answers; see the module docstring.

    ``params`` are the request's (``model``, ``messages``... as for
    :func:`pipeline.runtime.sources.chat_completions`); ``model`` is mapped per
    upstream. ``options`` (:class:`~pipeline.runtime.failover_options.FailoverOptions`)
    say how to retry and when to give up, and keyword arguments named as its
    fields (``retries=1, first_token_timeout=10``...) replace some of them:
    ``retries`` is the number of retries per upstream after its first
    attempt; backoff ``n`` waits ``min(max_backoff, backoff * 2**(n-1))``
    seconds less up to ``jitter`` of it (at random, drawn from ``random``),
    and never less than the error's ``retry_after``. ``max_total`` (seconds
    from subscription) bounds when an attempt may start; ``max_wait`` bounds
    any one wait: a Retry-After (or key cooldown) longer than it is not
    waited for, the next upstream is tried or the stream ends at once with
    the 429, its ``retry_after`` saying when an upstream or key is next free. The timeouts are
    :func:`operators.timeouts`', applied to each attempt (an upstream's own
    win over these; ``request_timeouts``, this request's own by name, win
    over both). ``conversation_id`` keeps the conversation on one key of a sticky
    pool. ``scheduler`` runs the backoff and timeout timers (default: the
    subscribe-time scheduler, else the running loop's).
    ``client_factory(upstream, key)`` and ``source_factory(client, params)``
    replace how a client and an attempt's source are made (default: cached
    ``AsyncOpenAI`` clients with ``max_retries=0``, Chat Completions);
    ``request_for(upstream, params)`` the request sent to an upstream.
    With ``continue_after_first_token`` (an option), a cut after the first
    token is continued (:mod:`pipeline.runtime.continuation`);
    ``on_attempt`` then gets each run's own events.
    ``attempt_source(upstream, key)``, when given, makes each attempt's source
    instead (``params`` then only name the model for the logs): a request of
    another API, or whose upstreams speak different APIs, is sent to each in
    its own API (:func:`pipeline.runtime.api_routing.attempt_source`); it
    takes no continuation.
    """
    if not upstreams:
        raise ValueError("failover needs at least one upstream")
    options = (options or _DEFAULTS).replace(**overrides)
    policy = _Policy(
        request_for=request_for,
        upstreams=tuple(upstreams),
        params=dict(params),
        stream_id=stream_id or new_stream_id(),
        tools=tools,
        conversation_id=conversation_id,
        options=options,
        backoff=options.backoff_policy(random),
        metrics=metrics,
        scheduler=scheduler,
        client_factory=client_factory or _client,
        source_factory=source_factory or _chat,
        attempt_source=attempt_source,
        request_timeouts=dict(request_timeouts or {}),
    )
    if options.continue_after_first_token:  # after the first token too: an added layer
        continuation = Continuation(
            max_continuations=options.max_continuations,
            instruction=options.continuation_instruction or None,
            max_overlap=options.continuation_max_overlap,
            on_attempt=on_attempt,
        )

        def run(
            order: Sequence[Upstream], build: RequestBuilder, total: float | None
        ) -> Observable[Event]:
            runs_options = policy.options.replace(total_timeout=total)
            return _runs(
                replace(policy, upstreams=tuple(order), request_for=build, options=runs_options)
            )

        return continued(
            run,
            policy.upstreams,
            policy.params,
            continuation,
            stream_id=policy.stream_id,
            backoff=policy.backoff,
            total_timeout=options.total_timeout,
            metrics=metrics,
            scheduler=scheduler,
        )
    return _runs(policy)


def _runs(policy: _Policy) -> Observable[Event]:
    """The attempts of ``policy``'s stream, as one observable."""

    def subscribe(
        observer: abc.ObserverBase[Event], scheduler_: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        run = _Run(policy, observer, scheduler_)
        run.attempt()
        return Disposable(run.dispose)

    # Each attempt is llm_stream's output (one terminal event, errors as events), and
    # _Run ends with exactly one terminal event, then on_completed, never on_error:
    # StreamRun(events, errors_mapped=True) needs no second map_errors layer over it.
    return Observable(subscribe)


class _Run:
    """One subscription of :func:`failover`: the attempts of one stream."""

    def __init__(
        self,
        policy: _Policy,
        observer: abc.ObserverBase[Event],
        subscribe_scheduler: abc.SchedulerBase | None,
    ) -> None:
        self.policy = policy
        self.observer = observer
        # What send() calls per event: nothing is sent once the run is done, which
        # dispose() makes it, so the subscriber's AutoDetachObserver would add a call only.
        self.on_next = direct_on_next(observer)
        self.subscribe_scheduler = subscribe_scheduler
        self.scheduler = policy.scheduler or subscribe_scheduler or default_scheduler()
        self.lock = threading.RLock()
        self.started = self.scheduler.now
        self.current = SerialDisposable()  # the attempt's subscription
        self.timer = SerialDisposable()  # the wait before the next attempt
        self.done = False
        self.seq = 0  # the next sequence number sent downstream
        self.index = 0  # the upstream being tried
        self.tries = 0  # attempts made on it
        self.attempts = 0  # attempts made in all
        self.generation = 0  # which attempt's events are listened to
        self.lease: Lease | None = None
        self.held: list[Event] = []
        self.committed = False  # the first token went out: no more failover
        self.offset = 0.0  # the current attempt's start, seconds from subscription
        self.waited = False  # whether anything was waited for before an attempt
        self.last_t = 0.0  # the ``t`` of the last event sent
        self.last_error: StreamError | None = None
        self.cooled_down = False  # the next attempt follows a wait for its upstream's cooldown
        self.flow = CURRENT_FLOW.get()  # the stream's flow gate, for every attempt's source

    # -- time ----------------------------------------------------------------

    def elapsed(self) -> float:
        return (self.scheduler.now - self.started).total_seconds()

    # -- attempts --------------------------------------------------------------

    def attempt(self) -> None:
        """Start an attempt on the current upstream."""
        with self.lock:
            if self.done:
                return
            policy = self.policy
            upstream = policy.upstreams[self.index]
            pool = upstream.pool
            key = upstream.key
            lease = None
            cooling = upstream.cooldown.wait_time() if pool is None else 0.0
            if cooling > 0 and not self.cooled_down:
                # Its last Retry-After (this request's or another's) has not run out.
                message = (
                    f"upstream {upstream.name!r} asked for no request in the next {cooling:.3g}s"
                )
                self.no_key(upstream, NoKeyAvailable(message, retry_after=cooling))
                return
            self.cooled_down = False
            if pool is not None:
                try:
                    lease = pool.acquire(policy.conversation_id)
                except NoKeyAvailable as exc:
                    self.no_key(upstream, exc)
                    return
                key = lease.key
            self.lease = lease
            self.attempts += 1
            self.tries += 1
            self.generation += 1
            generation = self.generation
            self.held = []
            # The first attempt starts at the subscription: its events go out unchanged.
            self.offset = self.elapsed() if self.attempts > 1 or self.waited else 0.0
            subscription = SingleAssignmentDisposable()
            self.current.disposable = subscription
            try:
                if policy.attempt_source is not None:
                    source = policy.attempt_source(upstream, key)
                else:
                    client = policy.client_factory(upstream, key)
                    params = {**policy.params}
                    if policy.request_for is not None:
                        params = policy.request_for(upstream, params)
                    if "model" in params:
                        params["model"] = upstream.model_for(params["model"])
                    source = policy.source_factory(client, params)
                events = llm_stream(
                    source,
                    stream_id=policy.stream_id,
                    tools=policy.tools,
                    first_token_timeout=policy.limit("first_token_timeout", upstream),
                    idle_timeout=policy.limit("idle_timeout", upstream),
                    total_timeout=policy.limit("total_timeout", upstream),
                    scheduler=self.scheduler,
                )
            except Exception as exc:
                self.on_event(generation, self.error_from(exc))
                return

            # A partial, not a closure: no Python frame of its own for every event.
            on_next = partial(self.on_event, generation)

            def on_error(exc: Exception) -> None:  # map_errors sends none: a bug
                self.on_event(generation, self.error_from(exc))

            token = CURRENT_FLOW.set(self.flow)  # a retry starts from a timer: not in our context
            try:
                subscription.disposable = events.subscribe(
                    on_next, on_error, scheduler=self.subscribe_scheduler
                )
            finally:
                CURRENT_FLOW.reset(token)

    def error_from(self, exc: BaseException) -> StreamError:
        info = classify(exc)
        if info.kind == "internal":
            log.warning("stream %s: an attempt failed: %s", self.policy.stream_id, info.message)
        return StreamError(
            stream_id=self.policy.stream_id,
            seq=0,
            kind=info.kind,
            message=info.message,
            status=info.status,
            code=info.code,
            retryable=info.retryable,
            retry_after=info.retry_after,
        )

    def on_event(self, generation: int, event: Event) -> None:
        """An event of the attempt numbered ``generation``."""
        with self.lock:
            if self.done or generation != self.generation:
                return
            if self.committed:
                self.send(event)
                if event.ends_stream:
                    self.end(event)
            elif is_content(event):
                self.committed = True
                held, self.held = self.held, []
                for item in held:
                    self.send(item)
                self.send(event)
            elif isinstance(event, StreamError):
                self.failed(event)
            elif is_terminal(event):  # finished (or cancelled) without content
                self.give_up(event)
            else:
                self.held.append(event)

    def failed(self, error: StreamError) -> None:
        """The attempt failed before its first token: retry, fail over, or give up."""
        policy = self.policy
        upstream = policy.upstreams[self.index]
        self.last_error = error
        self.generation += 1  # nothing more from this attempt
        self.current.disposable = Disposable()  # cancels its request
        if self.lease is not None:
            http = error.kind in ("http", "upstream")
            self.lease.release(error.status if http else None, error.retry_after)
            self.lease = None
        remaining = policy.options.max_total - self.elapsed()
        pool = upstream.pool
        if error.status == 429 and pool is None and error.retry_after is not None:
            upstream.cooldown.cool(error.retry_after)
        if error.status in (401, 403) and pool is not None and len(pool) > 0:
            self.tries -= 1  # the key was at fault, not the upstream
            self.move(self.index, error.message, error, 0.0)
            return
        if not error.retryable or remaining <= 0:
            self.give_up(error)
            return
        # A timed-out upstream is not waited for twice while another one is left.
        stalled = error.kind == "timeout" and self.index + 1 < len(policy.upstreams)
        if not stalled and self.tries <= policy.options.retries:
            delay = min(policy.backoff.delay(self.tries), policy.options.max_wait)
            if error.retry_after is not None:
                delay = max(delay, error.retry_after)
            if error.status == 429 and pool is not None:
                wait = pool.wait_time()
                if pool.healthy() > 0:
                    delay = 0.0  # Retry-After was the key's: another key can go now
                elif wait is not None:
                    delay = max(delay, wait)  # the pool's own cooldown, without Retry-After
            if delay <= min(remaining, policy.options.max_wait):
                self.cooled_down = True
                self.move(self.index, error.message, error, delay)
                return
        self.next_upstream(error.message, error)

    def no_key(self, upstream: Upstream, exc: NoKeyAvailable) -> None:
        """No key of the upstream's pool can be used now: wait for one, or move on."""
        options = self.policy.options
        remaining = min(options.max_total - self.elapsed(), options.max_wait)
        if exc.retry_after is not None and exc.retry_after <= remaining:
            # A wait for a key's cooldown to end (already announced by the failover
            # event that asked for it, or the pool's own state): no event, no retry.
            wait = max(exc.retry_after, 0.001)
            self.waited = True
            self.cooled_down = True
            self.timer.disposable = self.scheduler.schedule_relative(wait, self.on_timer)
            return
        reason = str(exc)
        if self.last_error is None:
            self.last_error = StreamError(
                stream_id=self.policy.stream_id,
                seq=0,
                kind="http" if exc.retry_after is not None else "internal",
                message=reason,
                status=429 if exc.retry_after is not None else None,
                retryable=exc.retry_after is not None,
                retry_after=exc.retry_after,
            )
        log.warning("stream %s: upstream %s: %s", self.policy.stream_id, upstream.name, reason)
        self.next_upstream(reason, None)

    def next_upstream(self, reason: str, error: StreamError | None) -> None:
        policy = self.policy
        if self.index + 1 < len(policy.upstreams) and self.elapsed() < policy.options.max_total:
            self.move(self.index + 1, reason, error, 0.0)
        else:
            assert self.last_error is not None
            self.give_up(self.last_error)

    def move(self, index: int, reason: str, error: StreamError | None, delay: float) -> None:
        """Announce and schedule the next attempt, on upstream ``index``, in ``delay`` s."""
        policy = self.policy
        source, target = policy.upstreams[self.index].name, policy.upstreams[index].name
        kind = error.kind if error is not None else None
        self.held = []  # a failed attempt's events are never sent
        if index != self.index:
            self.index = index
            self.tries = 0
            if policy.metrics is not None:
                policy.metrics.inc_failover(source, target)
        elif policy.metrics is not None:
            policy.metrics.inc_retry(source, kind or "unknown")
        log.info(
            "stream %s: attempt %d on %s failed before the first token (%s); "
            "attempt %d on %s in %.3gs",
            policy.stream_id,
            self.attempts,
            source,
            reason,
            self.attempts + 1,
            target,
            delay,
        )
        self.send_new(
            Failover(
                stream_id=policy.stream_id,
                seq=self.seq,
                t=self.elapsed(),
                from_upstream=source,
                to_upstream=target,
                attempt=self.attempts + 1,
                reason=reason,
                kind=kind,
                status=error.status if error is not None else None,
                delay=delay,
            )
        )
        self.timer.disposable = self.scheduler.schedule_relative(delay, self.on_timer)

    def on_timer(self, _: abc.SchedulerBase, state: Any = None) -> None:
        self.attempt()

    # -- sending -----------------------------------------------------------------

    def send_new(self, event: Event) -> None:
        self.seq += 1
        self.last_t = event.t
        self.on_next(event)

    def send(self, event: Event) -> None:
        """Send an attempt's event, renumbered and timed from the subscription."""
        seq, offset = self.seq, self.offset
        self.seq = seq + 1
        t = event.t + offset
        if t < self.last_t:  # an attempt's clock vs the scheduler's: never back in time
            t = self.last_t
        self.last_t = t
        if event.seq != seq or t != event.t:
            event = event.model_copy(update={"seq": seq, "t": t})
        self.on_next(event)

    def give_up(self, terminal: Event) -> None:
        """End with the last attempt's held events and ``terminal``.

        A 429 says in ``retry_after`` when the first upstream or key is free
        again (as its Retry-After or cooldown says), so a client waits that long.
        """
        if isinstance(terminal, StreamError) and terminal.status == 429:
            waits = [self.free_in(u) for u in self.policy.upstreams]
            known = [w for w in waits if w is not None]
            if known:
                terminal = terminal.model_copy(update={"retry_after": min(known)})
        held, self.held = self.held, []
        for item in held:
            self.send(item)
        self.send(terminal)
        self.end(terminal)

    @staticmethod
    def free_in(upstream: Upstream) -> float | None:
        """Seconds until ``upstream`` (a key of its pool) may be asked again; ``None``: unknown."""
        pool = upstream.pool
        wait = pool.wait_time() if pool is not None else upstream.cooldown.wait_time()
        return wait if wait is not None and wait > 0 else None

    def end(self, terminal: EventBase) -> None:
        self.done = True
        if self.lease is not None:
            if isinstance(terminal, StreamError) and terminal.kind in ("http", "upstream"):
                self.lease.release(terminal.status, terminal.retry_after)
            else:
                self.lease.release()
            self.lease = None
        self.timer.dispose()
        self.observer.on_completed()

    def dispose(self) -> None:
        with self.lock:
            self.done = True
            if self.lease is not None:
                self.lease.release()
                self.lease = None
        CompositeDisposable(self.timer, self.current).dispose()
