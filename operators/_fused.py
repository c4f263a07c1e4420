"""Operators whose work per subscription is one plain observer, and chains of them.

A reactivex operator subscribes to its source with callbacks that
``Observable.subscribe`` wraps in an ``AutoDetachObserver``: one more call
per event and per operator, and a subscription (with its trampoline) per
operator per stream. Where several operators always run together (the
standard chain: :func:`pipeline.runtime.standard_chain.llm_stream`), that
machinery adds nothing but cost. A :class:`Fusable` operator makes a
:class:`Stage` (an object with ``on_next``/``on_error``/``on_completed``)
per subscription; :func:`fused` links the stages of several operators
directly, each calling the next one's methods, under a single subscription
to the source. Each one stays an ordinary operator for ``.pipe()``
(``op(source)`` is ``fused(source, op)``).

What the ``AutoDetachObserver`` between two operators did, the chain does:
a stage that has received a terminal notification (``on_error``,
``on_completed``) ignores what comes after it, and so does every stage once
the chain is disposed; the chain's consumer, which ``Observable.subscribe``
does wrap, disposes the chain (the source's subscription with it) when it
gets its own terminal notification.

Example::

    events = fused(source, extract_deltas(sid), assemble_tool_calls(tools), map_errors(sid))
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SingleAssignmentDisposable
from reactivex.observer.autodetachobserver import AutoDetachObserver

__all__ = ["Fusable", "Link", "Stage", "StageBase", "complete_after", "direct_on_next", "fused"]

T_in = TypeVar("T_in", contravariant=True)
T = TypeVar("T")
R = TypeVar("R")


class Stage(Protocol[T_in]):
    """What a stage's upstream calls: an observer's three methods."""

    def on_next(self, value: T_in, /) -> None: ...

    def on_error(self, error: Exception, /) -> None: ...

    def on_completed(self) -> None: ...


class StageBase:
    """A stage's ``stopped`` flag: set by its first terminal notification or the chain's dispose.

    Subclasses check it first in ``on_next``, ``on_error`` and
    ``on_completed`` (what the ``AutoDetachObserver`` in front of an
    operator checks), and set it when a terminal notification arrives.
    """

    __slots__ = ("stopped",)

    def __init__(self) -> None:
        self.stopped = False


def complete_after(downstream: Stage[R], close: Callable[[], Iterable[R]]) -> None:
    """A stage's completion: what ``close`` makes (its last events), then ``on_completed``.

    An exception from ``close`` goes to ``downstream.on_error`` instead.
    """
    try:
        events = close()
    except Exception as exc:
        downstream.on_error(exc)
        return
    for event in events:
        downstream.on_next(event)
    downstream.on_completed()


def direct_on_next(observer: abc.ObserverBase[T]) -> Callable[[T], None]:
    """``observer.on_next``, without the ``AutoDetachObserver`` that ``Observable.subscribe`` adds.

    ``Observable.subscribe`` wraps a subscriber's callbacks in an
    ``AutoDetachObserver``, whose ``on_next`` checks that it has not stopped
    and calls the callback: one more Python call per event at each
    subscription a stream's events cross. A producer may call the callback
    itself when what that check would drop cannot happen: it sends nothing
    after its own terminal notification, and once the subscription is
    disposed either it sends nothing more or its consumer drops what comes
    (a fused chain's stages are stopped with the chain; failover's run and
    :class:`pipeline.runtime.multicast.StreamRun` check that they are done).
    ``on_error`` and ``on_completed`` still go through the wrapper, which
    disposes the subscription after them. Any other observer: its ``on_next``.
    """
    if type(observer) is AutoDetachObserver:
        on_next: Callable[[T], None] | None = getattr(observer, "_on_next", None)
        if on_next is not None:
            return on_next
    return observer.on_next


class _Consumer:
    """The chain's consumer as its last stage's downstream, its ``on_next`` direct."""

    __slots__ = ("on_completed", "on_error", "on_next")

    def __init__(self, observer: abc.ObserverBase[Any]) -> None:
        self.on_next = direct_on_next(observer)
        self.on_error = observer.on_error
        self.on_completed = observer.on_completed


class Link:
    """What a chain gives each stage besides its downstream.

    ``upstream`` is the subscription to the chain's source (disposing it
    cancels the source: a timeout does that before it reports);
    ``scheduler`` the scheduler given at subscription; :meth:`on_dispose`
    adds what disposing the chain must also dispose (a stage's timers).
    """

    __slots__ = ("_disposables", "_stages", "scheduler", "upstream")

    def __init__(self, scheduler: abc.SchedulerBase | None) -> None:
        self.upstream = SingleAssignmentDisposable()
        self.scheduler = scheduler
        self._disposables: list[abc.DisposableBase] = []
        self._stages: list[StageBase] = []

    def on_dispose(self, disposable: abc.DisposableBase) -> None:
        """Dispose ``disposable`` with the chain."""
        self._disposables.append(disposable)

    def _stop(self) -> None:
        for stage in self._stages:
            stage.stopped = True


class Fusable(ABC, Generic[T, R]):
    """An operator (``Observable[T]`` to ``Observable[R]``) made of one :class:`Stage`.

    Its checks of its parameters run when it is created; :meth:`stage`
    makes the state of one subscription; :attr:`name` is the name of the
    function that makes it (a marble diagram's lane).
    """

    name: ClassVar[str] = "operator"

    @abstractmethod
    def stage(self, downstream: Stage[R], link: Link) -> Stage[T]:
        """The stage of one subscription, sending what it makes to ``downstream``."""

    def __call__(self, source: Observable[T]) -> Observable[R]:
        return fused(source, self)


def fused(source: Observable[Any], *operators: Fusable[Any, Any]) -> Observable[Any]:
    """``source.pipe(*operators)``, run as one observer of ``source``; see the module."""

    def subscribe(
        observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        link = Link(scheduler)
        # The stages stop with the chain, and the last one sends nothing after its own
        # terminal notification: its events may skip the consumer's AutoDetachObserver.
        stage: Stage[Any] = _Consumer(observer)
        # The last operator's stage first: each one's subscription-time work (a start
        # time, timers) happens in the order the operators' own subscriptions made it.
        for operator in reversed(operators):
            stage = operator.stage(stage, link)
            if isinstance(stage, StageBase):
                link._stages.append(stage)
        link.upstream.disposable = source.subscribe(
            stage.on_next, stage.on_error, stage.on_completed, scheduler=scheduler
        )
        return CompositeDisposable(link.upstream, Disposable(link._stop), *link._disposables)

    return Observable(subscribe)
