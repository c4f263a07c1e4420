"""Helpers for tests in virtual time (``reactivex.testing.TestScheduler``)."""

from __future__ import annotations

from typing import Any, TypeVar, cast

from reactivex import abc, typing
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.recorded import Recorded

_S = TypeVar("_S")


# ReactiveTest types ticks as int, but TestScheduler's ticks are float seconds.
def on_next(ticks: float, value: Any) -> Recorded[Any]:
    return ReactiveTest.on_next(cast(int, ticks), value)


def on_error(ticks: float, error: Exception) -> Recorded[Any]:
    return ReactiveTest.on_error(cast(int, ticks), error)


def on_completed(ticks: float) -> Recorded[Any]:
    return ReactiveTest.on_completed(cast(int, ticks))


class SpyScheduler(TestScheduler):
    """Counts the timers scheduled, fired, and pending (at most at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.scheduled = 0
        self.fired = 0
        self.pending = 0
        self.max_pending = 0

    def schedule_relative(
        self,
        duetime: typing.RelativeTime,
        action: typing.ScheduledAction[_S],
        state: _S | None = None,
    ) -> abc.DisposableBase:
        self.scheduled += 1
        self.pending += 1
        self.max_pending = max(self.max_pending, self.pending)

        def spy(scheduler: abc.SchedulerBase, state: _S | None = None) -> Any:
            self.pending -= 1
            self.fired += 1
            return action(scheduler, state)

        return super().schedule_relative(duetime, spy, state)
