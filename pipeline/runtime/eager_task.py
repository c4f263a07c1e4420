"""Tasks whose steps run now, in the caller's step, rather than a loop turn later.

``loop.create_task(coro)`` runs nothing of ``coro`` until the loop's next
turn, and a task waiting for a future wakes a turn after the future is
done. Under load a turn is every other stream's chunk that arrived
meanwhile. Two steps of a source's task are on the way of every first
token: the first, which writes the upstream request, and the one that
reads the upstream's answer. :func:`eager_task` runs the first at once, in
the step that makes the task; :func:`step_now` runs a waiting eager task's
next step at once, in the callback that completed what it waits for
(rxllm's network backend does it when data arrives for a read that
waits). See bench/README.md, "Results after the lean upstream send and the
eager source task". :func:`ready_task` makes a task whose first step runs
when its maker says, not at once: ``rxllm serve`` makes a request's ASGI
task when the request's head is parsed and steps it once the body in the
same read has been fed to it (:mod:`pipeline.apps.server.eager_requests`).

How: the task is given a stand-in for its coroutine (:class:`_Resumed`),
which can step the coroutine itself and hand the task, at the task's own
next step, what that step left: the future the coroutine now waits for,
its result or its exception. The step runs with the task as the current
task (what records its task, such as anyio's locks and cancel scopes under
httpcore2, sees the task its later steps run in) and in the task's own
context, as the task would run it. Cancelling the task throws into the
coroutine where it waits, as cancelling any waiting task does. Without the
``asyncio`` functions this needs (``_enter_task``, ``_leave_task``), a task
is an ordinary one and :func:`step_now` does nothing.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import weakref
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["eager_task", "ready_task", "step_now", "waiting_step"]

T = TypeVar("T")

_enter = getattr(asyncio.tasks, "_enter_task", None)
_leave = getattr(asyncio.tasks, "_leave_task", None)


def eager_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """A task of ``coro`` on ``loop`` whose first step has run when this returns."""
    if _enter is None or _leave is None:  # pragma: no cover - an asyncio without them
        return loop.create_task(coro)
    context = contextvars.copy_context()
    task, first_step = ready_task(loop, coro, context, loop.create_task)
    first_step()
    return task


def ready_task(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, T],
    context: contextvars.Context,
    make: Callable[..., asyncio.Task[Any]],
) -> tuple[asyncio.Task[T], Callable[[], bool]]:
    """A task of ``coro`` made by ``make(coro, context=context)``, and a call that runs its
    first step now.

    The call returns ``False`` and does nothing once the task has taken a step
    of its own (it is scheduled as any task is), or has ended. ``make`` is
    ``loop.create_task``, or a task factory's own maker.
    """
    resumed = _Resumed(coro, loop, context)
    task: asyncio.Task[T] = make(resumed, context=context)
    resumed.task = weakref.ref(task)  # not the task itself: no cycle with it (it holds us)
    return task, functools.partial(resumed.step, None)


def _nothing() -> None:
    return None


def waiting_step() -> Any:
    """What :func:`step_now` needs of the current task, or ``None`` if it is not eager."""
    task = asyncio.current_task()
    coro = task.get_coro() if task is not None else None
    return coro if type(coro) is _Resumed else None


class _Resumed(Coroutine[Any, Any, Any]):
    """A coroutine as its task sees it: stepped ahead of the task when it can be."""

    __slots__ = (
        "_context",
        "_coro",
        "_ended",
        "_held",
        "_loop",
        "_running",
        "_started",
        "_waits",
        "task",
    )

    def __init__(
        self,
        coro: Coroutine[Any, Any, Any],
        loop: asyncio.AbstractEventLoop,
        context: contextvars.Context,
    ) -> None:
        self._coro = coro
        self._loop = loop
        self._context = context
        self.task: Callable[[], asyncio.Task[Any] | None] = _nothing
        self._held = False  # stepped ahead: the task has not taken what the step left
        self._waits: Any = None  # what the coroutine waits for now (what it yielded last)
        self._ended: BaseException | None = None  # or how it ended (StopIteration: returned)
        self._running = False
        self._started = False  # a step has run, ahead or the task's own

    # -- steps taken ahead of the task ---------------------------------------------

    def step(self, future: asyncio.Future[Any] | None) -> bool:
        """Step the coroutine now if it waits for ``future``, done (``None``: its first step)."""
        loop, task = self._loop, self.task()
        if self._running or self._ended is not None or task is None or task.done():
            return False
        if future is None and self._started:
            return False
        if future is not None and (
            future is not self._waits
            or not future.done()
            or future.cancelled()
            or future.exception() is not None  # the task's wake-up would throw it in again
        ):
            return False
        caller = asyncio.current_task(loop)
        assert _enter is not None and _leave is not None
        if caller is not None:
            _leave(loop, caller)
        _enter(loop, task)
        self._running = True
        try:
            self._context.run(self._step)
        finally:
            self._running = False
            _leave(loop, task)
            if caller is not None:
                _enter(loop, caller)
        return True

    def _step(self) -> None:
        self._started = self._held = True
        try:
            self._waits = self._coro.send(None)
        except BaseException as exc:  # StopIteration too: handed to the task's next step
            self._waits = None
            self._ended = exc

    # -- the coroutine protocol, as the task drives it -----------------------------

    def send(self, value: Any) -> Any:
        if self._held:  # what the step taken ahead left, instead of a step now
            self._held = False
            ended, self._ended = self._ended, None
            if ended is not None:
                raise ended
            return self._waits
        self._started = True
        self._waits = None  # until it waits again: a coroutine that ended waits for nothing
        self._waits = waits = self._coro.send(value)
        return waits

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        exc = typ if val is None else val
        if self._held:
            self._held = False
            if self._ended is not None:  # it ended in that step: nothing to throw into
                self._ended = None
                raise exc
        self._started = True
        self._waits = None
        self._waits = waits = self._coro.throw(exc)
        return waits

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:  # pragma: no cover - tasks call send
        raise TypeError("an eager task's coroutine is driven by its task only")


def step_now(future: asyncio.Future[Any], waiting: Any) -> bool:
    """Run now the step of the task that waits for ``future`` (done); ``False`` if it cannot.

    ``waiting`` is what :func:`waiting_step` returned in that task before it
    waited. Call it from the callback that completed ``future``: what the task
    would do a loop turn later, when it wakes, it does here, and the task,
    when it wakes, takes what that step left.
    """
    return type(waiting) is _Resumed and waiting.step(future)
