"""An operator drawn as marble lanes: a recording in, each operator's output below it.

Replays the events in virtual time (a ``TestScheduler``: no waiting) and
records when every stage emitted what, so the picture shows what an operator
does to the timing, not only to the values: ``batch_flush`` coalescing text
into boxes, ``assemble_tool_calls`` inserting ``completed``, a redaction
holding text back::

    operator_marbles(recording, batch_flush(0.05))   # shows itself in Jupyter

A stage's marbles are at the (virtual) time it emitted them; ``|`` is where it
completed, ``X`` where it failed.

Errors: whatever the operators raise when they are applied; an error they
send is drawn (``X``), not raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.scheduler import VirtualTimeScheduler
from reactivex.testing import TestScheduler

from operators._fused import Fusable
from pipeline.core.events import Event, is_content
from pipeline.core.marbles import Lane, LaneEnd, MarbleDiagram, marble_for
from pipeline.runtime.replay import replay

__all__ = ["operator_marbles"]

Operator = Callable[[Observable[Any]], Observable[Any]]


def _name(operator: Operator) -> str:
    """The name of the function that made ``operator`` (``batch_flush`` for its closure)."""
    if isinstance(operator, Fusable):
        return operator.name
    qualname = str(getattr(operator, "__qualname__", "") or type(operator).__name__)
    return qualname.split(".<locals>")[0].split(".")[-1].strip("_") or "operator"


def operator_marbles(
    events: Iterable[Event],
    *operators: Operator,
    names: Sequence[str] | None = None,
    title: str | None = None,
    width: int = 760,
) -> MarbleDiagram:
    """Replay ``events`` in virtual time through ``operators``; one lane per stage.

    The first lane is the input (each event at its ``t``); each operator's lane
    shows what it emitted and when. ``names`` labels the lanes (default:
    ``input`` and the operators' function names).

    Example::

        operator_marbles(recording, batch_flush(0.05), names=["events", "batches"])
    """
    scheduler = TestScheduler()
    stages = len(operators) + 1
    emitted: list[list[tuple[float, Any]]] = [[] for _ in range(stages)]
    ends: list[tuple[float, LaneEnd] | None] = [None] * stages

    def tap(stage: int) -> Operator:
        def on_next(item: Any) -> None:
            emitted[stage].append((_seconds(scheduler), item))

        def on_error(_: Exception) -> None:
            ends[stage] = (_seconds(scheduler), "error")

        def on_completed() -> None:
            ends[stage] = (_seconds(scheduler), "completed")

        return ops.do_action(on_next, on_error, on_completed)

    pipeline: list[Operator] = [tap(0)]
    for i, operator in enumerate(operators, start=1):
        pipeline += [operator, tap(i)]
    items = list(events)
    source: Observable[Any] = replay(items, scheduler=scheduler)
    subscription: abc.DisposableBase = source.pipe(*pipeline).subscribe(
        on_error=lambda _: None, scheduler=scheduler
    )
    VirtualTimeScheduler.start(scheduler)  # to the last timer, however far
    subscription.dispose()
    labels = list(names) if names is not None else ["input", *map(_name, operators)]
    if len(labels) != stages:
        raise ValueError(f"names needs {stages} labels (the input and each operator)")
    lanes = []
    for label, items_, end in zip(labels, emitted, ends, strict=True):
        marbles = tuple(marble_for(item, at) for at, item in items_)
        lanes.append(Lane(label, marbles, end[0] if end else None, end[1] if end else "completed"))
    ttft = next((e.t for e in items if is_content(e)), None)
    return MarbleDiagram(lanes, title=title, ttft=ttft, width=width)


def _seconds(scheduler: TestScheduler) -> float:
    clock = scheduler.clock
    return float(clock) if isinstance(clock, int | float) else scheduler.to_seconds(clock)
