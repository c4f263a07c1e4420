"""A task whose first step runs now, in the caller's step, rather than a loop turn later.

``loop.create_task(coro)`` runs nothing of ``coro`` until the loop's next
turn, and under load a turn is every other stream's chunk that arrived
meanwhile. A source's task is created when ``rxllm serve``'s handler
starts the stream, and its first step is what writes the upstream request:
started eagerly, the request goes out in the handler's step, and the time
to first token loses that turn whenever the model takes any time to answer
(bench/README.md, "Results after the lean upstream send and the eager
source task").

:func:`eager_task` is Python 3.12's ``Task(..., eager_start=True)``. On 3.11
it does the same by hand: the task is made, the coroutine's first step is
run now with the task as the current task (so that what records its task,
such as anyio's locks and cancel scopes under httpcore2, sees the task that
later steps run in) and in the task's own context, and the task is handed a
stand-in coroutine that gives it what that step left: the future it waits
for, its result, or its exception. The task's own first step, a turn later,
then only starts waiting for that future. Cancelling the task before then
throws into the coroutine where its first step stopped, as cancelling any
waiting task does. Called outside any task (a callback), it works the same.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["eager_task"]

T = TypeVar("T")


def eager_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """A task of ``coro`` on ``loop`` whose first step has run when this returns."""
    if sys.version_info >= (3, 12):
        return asyncio.Task(coro, loop=loop, eager_start=True)
    context = contextvars.copy_context()
    resumed = _Resumed(coro)
    task: asyncio.Task[T] = loop.create_task(resumed, context=context)
    caller = asyncio.tasks.current_task(loop)
    if caller is not None:
        asyncio.tasks._leave_task(loop, caller)
    asyncio.tasks._enter_task(loop, task)
    try:
        context.run(resumed.first_step)
    finally:
        asyncio.tasks._leave_task(loop, task)
        if caller is not None:
            asyncio.tasks._enter_task(loop, caller)
    return task


class _Resumed(Coroutine[Any, Any, Any]):
    """``coro`` as the task sees it: its first step run already (see the module)."""

    __slots__ = ("_coro", "_ended", "_held", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro
        self._held = False  # the first step ran, and the task has not taken what it left
        self._yielded: Any = None  # what the first step yielded (the future it waits for)
        self._ended: BaseException | None = None  # or how it ended (StopIteration: returned)

    def first_step(self) -> None:
        self._held = True
        try:
            self._yielded = self._coro.send(None)
        except BaseException as exc:  # StopIteration too: handed to the task's first step
            self._ended = exc

    def send(self, value: Any) -> Any:
        if not self._held:
            return self._coro.send(value)
        self._held = False
        ended, self._ended = self._ended, None
        if ended is not None:
            raise ended
        yielded, self._yielded = self._yielded, None
        return yielded  # the task now waits for what the first step waits for

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        exc = typ if val is None else val
        if self._held:
            self._held = False
            self._yielded = None
            if self._ended is not None:  # it ended in its first step: nothing to throw into
                self._ended = None
                raise exc
        return self._coro.throw(exc)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:  # pragma: no cover - tasks call send
        raise TypeError("an eager task's coroutine is driven by its task only")
