"""Backpressure for a push pipeline: a slow reader holds its stream's source.

reactivex pushes; nothing in it slows a producer. A :class:`FlowGate` is the
one shared piece between a stream's readers and its source: a reader whose
buffer is over its bound :meth:`~FlowGate.hold`\\ s the gate, and
:meth:`~FlowGate.release`\\ s it once it has caught up; the source (the task
that reads the upstream HTTP body) awaits :meth:`~FlowGate.wait_open`
between two reads while the gate is held. It then reads nothing, the
kernel's receive buffer fills, and TCP flow control slows the upstream:
a slow reader slows its own upstream read, and nothing piles up in memory.

The gate reaches the source through :data:`CURRENT_FLOW`, a context
variable set while the stream's source is subscribed
(:meth:`pipeline.runtime.multicast.StreamRun.start`): a source reads it at
subscription. Sources that do not (a recording, Redis) are not held; their
readers' buffers coalesce instead (:class:`pipeline.runtime.async_bridges.BufferedObserver`).

The gate belongs to one event loop at a time (the waiting future is made
on the loop that waits); it costs nothing until somebody waits.

The other half of sharing the loop is :data:`TURN_MESSAGES`: a task that has
many items at hand (a fast upstream's socket read, a replay) hands on at most
that many before it lets the loop turn, so one busy stream cannot keep every
other one waiting for a whole burst.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar

__all__ = ["CURRENT_FLOW", "TURN_MESSAGES", "FlowGate"]

TURN_MESSAGES = 8
"""Items a task with many at hand hands on between two loop turns, at most.

Small enough that a loop turn stays short with dozens of flooding streams,
large enough that the turn (a task step) is a small part of the work.
"""


class FlowGate:
    """Open unless a reader holds it; a source waits for it to open. See the module docstring."""

    __slots__ = ("_held", "_waiter", "held")

    def __init__(self) -> None:
        self._held = 0
        self._waiter: asyncio.Future[None] | None = None
        # Whether a reader holds the gate (the source should wait). An attribute, not a
        # property: the source reads it for every chunk. Only hold and release set it.
        self.held = False

    def hold(self) -> None:
        """A reader is behind: the source should stop reading (call :meth:`release` once)."""
        self._held += 1
        self.held = True

    def release(self) -> None:
        """A reader caught up (or left); the last release opens the gate."""
        if self._held > 0:
            self._held -= 1
        self.held = self._held > 0
        if self._held == 0 and self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            if not waiter.done():
                waiter.set_result(None)

    async def wait_open(self) -> None:
        """Return once no reader holds the gate (at once if none does)."""
        while self._held > 0:
            if self._waiter is None or self._waiter.done():
                self._waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._waiter)


CURRENT_FLOW: ContextVar[FlowGate | None] = ContextVar("rxllm_flow", default=None)
"""The gate of the stream whose source is being subscribed (``None``: no flow control)."""
