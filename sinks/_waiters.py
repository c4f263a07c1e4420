"""Futures waiting for a counter to reach a target: the ``flush()`` of a background writer."""

from __future__ import annotations

import asyncio

__all__ = ["Waiters"]


class Waiters:
    """Coroutines waiting until a writer's done-counter reaches what they need.

    ``until(target)`` gives a future; the writer calls ``reached(done)`` as its
    counter advances and ``fail(error)`` if it stops for good.
    """

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []

    def until(self, target: int) -> asyncio.Future[None]:
        """A future that completes once ``reached`` is called with ``target`` or more."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((target, future))
        return future

    def reached(self, done: int) -> None:
        """The counter is at ``done``: complete every future waiting for no more."""
        if not self._waiting:
            return
        still: list[tuple[int, asyncio.Future[None]]] = []
        for target, future in self._waiting:
            if target <= done:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((target, future))
        self._waiting = still

    def fail(self, error: BaseException) -> None:
        """Fail every waiting future with ``error``."""
        waiting, self._waiting = self._waiting, []
        for _, future in waiting:
            if not future.done():
                future.set_exception(error)
