"""A request's handler started in the read that brought the request, not a loop turn later.

uvicorn makes a request's ASGI task (``RequestResponseCycle.run_asgi``) when
h11 has parsed the request's head, and the task's first step runs at the
loop's next turn. Under load a turn is every other stream's chunk that
arrived meanwhile, and the first step is where the handler reads the body,
builds the stream and sends the upstream request: every request's first
token waits for that turn (bench/README.md, "Real rate").

:class:`EagerRequests` is a task factory for the server's loop: a
``run_asgi`` coroutine becomes a task whose first step has not run yet
(:func:`pipeline.runtime.eager_task.ready_task`), and :meth:`EagerRequests.run`,
called by the connection's protocol once the bytes of the read are parsed
(the body that came with the head is in the request's buffer by then), runs
that step there. One request per loop turn: a handler's first step (the
body, its checks, the stream's pipeline, the upstream request) is a
millisecond or so of work that every callback after it in that turn (other
streams' chunks, a client's leaving, which cancels its upstream) waits for,
so in a burst of new requests the others start at their turn, as any task
does (bench/README.md has the abuse soak with and without this limit). So
does a task made outside a read (the next request of a
pipelined connection). Any other coroutine goes to the factory that was
there before, or becomes an ordinary task.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Coroutine
from types import CodeType
from typing import Any, cast

from uvicorn.protocols.http.h11_impl import RequestResponseCycle

from pipeline.runtime.eager_task import ready_task

__all__ = ["RUN_ASGI", "EagerRequests"]

RUN_ASGI: CodeType = RequestResponseCycle.run_asgi.__code__
"""The code of uvicorn's request task: the coroutines :class:`EagerRequests` holds back."""

TaskFactory = Callable[..., "asyncio.Task[Any]"]


class EagerRequests:
    """The loop's task factory for request tasks, and their first steps (see the module)."""

    def __init__(self, code: CodeType = RUN_ASGI) -> None:
        self._code = code
        self._previous: TaskFactory | None = None
        self._steps: list[Callable[[], bool]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._spent = False  # a request has been stepped in this loop turn

    @property
    def installed(self) -> bool:
        """Whether :meth:`install` has run."""
        return self._loop is not None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make this the task factory of ``loop``, over the one it had (if any)."""
        # typeshed's factory type takes no keywords: uvloop and asyncio pass context=...
        self._previous = cast("TaskFactory | None", loop.get_task_factory())
        loop.set_task_factory(cast(Any, self._factory))
        self._loop = loop

    def run(self) -> None:
        """Run the first step of a request task made since the last call, if none has run in
        this loop turn; the others start at their turn."""
        steps, self._steps = self._steps, []
        for step in steps:
            if self._spent or self._loop is None:
                return
            if step():
                self._spent = True
                self._loop.call_soon(self._refill)  # after this turn's reads

    def _refill(self) -> None:
        self._spent = False

    def _factory(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Task[Any]:
        if getattr(coro, "cr_code", None) is not self._code:
            return self._make(loop, coro, **kwargs)
        context = kwargs.pop("context", None)
        if context is None:  # not ``or``: an empty Context is falsy, and is what was asked for
            context = contextvars.copy_context()
        make = functools.partial(self._make, loop, **kwargs)
        task, first_step = ready_task(loop, coro, context, make)
        self._steps.append(first_step)
        return task

    def _make(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **options: Any
    ) -> asyncio.Task[Any]:
        """A task of ``coro``, as the factory that was there before would make it."""
        if self._previous is not None:
            return self._previous(loop, coro, **options)
        return asyncio.Task(coro, loop=loop, **options)
