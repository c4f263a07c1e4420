"""The default scheduler of rxllm's time-based operators and sources."""

from __future__ import annotations

import asyncio

from reactivex import abc
from reactivex.scheduler import TimeoutScheduler
from reactivex.scheduler.eventloop import AsyncIOScheduler

__all__ = ["default_scheduler"]


def default_scheduler() -> abc.SchedulerBase:
    """The running asyncio loop's scheduler (timers on the loop's thread), else threads.

    reactivex's own time operators go straight to ``TimeoutScheduler``; a sink
    living on an event loop must not be called from a timer thread, so rxllm
    prefers the running loop. Order everywhere: the ``scheduler=`` argument,
    then the scheduler given at subscribe time, then this.
    """
    try:
        return AsyncIOScheduler(asyncio.get_running_loop())
    except RuntimeError:
        return TimeoutScheduler.singleton()
