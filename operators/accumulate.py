"""Accumulation of a stream into its final message, per choice.

    -started-"He"-"llo"-finished-|   becomes   ---------------Result("Hello")-|

Example::

    result = await events.pipe(accumulate())  # the one Result, at the terminal event

The :class:`pipeline.core.result.Accumulator` behind it is usable on its own.
"""

from __future__ import annotations

from collections.abc import Callable

from reactivex import Observable, abc

from pipeline.core.events import Cancelled, Event, Finished, StreamError
from pipeline.core.result import Accumulator, ChoiceResult, Result, ToolCallResult

__all__ = ["Accumulator", "ChoiceResult", "Result", "ToolCallResult", "accumulate"]


def accumulate() -> Callable[[Observable[Event]], Observable[Result]]:
    """Emit the stream's :class:`Result` once, when the terminal event arrives.

    Errors from upstream pass through (put :func:`operators.map_errors` before
    it to get an ``error`` result instead).
    """

    def _accumulate(source: Observable[Event]) -> Observable[Result]:
        def subscribe(
            observer: abc.ObserverBase[Result], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            acc = Accumulator()
            done = False

            def on_next(event: Event) -> None:
                nonlocal done
                if done:
                    return
                acc.add(event)
                if isinstance(event, Finished | StreamError | Cancelled):
                    done = True
                    observer.on_next(acc.result())
                    observer.on_completed()

            def on_completed() -> None:
                if not done:
                    observer.on_next(acc.result())
                    observer.on_completed()

            return source.subscribe(on_next, observer.on_error, on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return _accumulate
