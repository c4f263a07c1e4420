"""Exponential backoff with jitter: the one policy every retry loop of rxllm uses.

:class:`Backoff` says how long to wait before retry number ``attempt``
(1, 2, ...): ``initial * 2**(attempt-1)`` seconds, at most ``cap``, less up to
``jitter`` of it at random, so that many clients that failed together do not
retry together::

    Backoff(initial=0.25, cap=4.0, jitter=0.5)
    attempt   1          2         3        4       5...
    delay     0.125-0.25 0.25-0.5  0.5-1.0  1-2     2-4

It only computes a number of seconds, so the same policy serves a
reactivex state machine (``scheduler.schedule_relative(policy.delay(n), ...)``,
which runs in virtual time under a ``TestScheduler``) and an asyncio loop
(``await asyncio.sleep(policy.delay(n))``). The random source is a field:
tests pass ``random=lambda: 0.0`` (no jitter taken off) for exact delays.

Why not tenacity or stamina: both are retry *loops* (decorators or context
managers that call, catch and sleep) with their own module-level random and
``asyncio.sleep``. Failover schedules its next attempt on a reactivex
scheduler, interleaved with Retry-After and key-pool waits; the store and
bus writers retry a batch taken from a queue that changes between attempts,
with their own outage logging. What they share is the delay, not the loop,
and a frozen object with one method says that with no dependency.

Example::

    policy = Backoff(initial=0.05, cap=2.0)
    attempt = 0
    while True:
        try:
            return await write()
        except ConnectionError:
            attempt += 1
            await asyncio.sleep(policy.delay(attempt))

Errors: ``ValueError`` at creation for a negative ``initial`` or ``cap``,
or a ``jitter`` outside 0..1.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Backoff"]

_MAX_DOUBLINGS = 64  # 2**64 times any initial delay is past every cap: no overflow


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter; see the module docstring.

    ``initial`` is the first delay (seconds), doubled per attempt up to
    ``cap``; ``jitter`` (0..1) is the largest share of a delay taken off at
    random; ``random`` returns a float in ``[0, 1)`` (default
    :func:`random.random`).
    """

    initial: float
    cap: float
    jitter: float = 0.5
    random: Callable[[], float] = field(default=_random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.initial >= 0 and self.cap >= 0):
            raise ValueError(
                f"backoff delays must be >= 0 seconds, got initial={self.initial!r}, "
                f"cap={self.cap!r}"
            )
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter!r}")

    def base(self, attempt: int) -> float:
        """The delay before retry ``attempt`` (1, 2, ...) without jitter."""
        doublings = min(max(attempt - 1, 0), _MAX_DOUBLINGS)
        return min(self.cap, self.initial * 2.0**doublings)

    def delay(self, attempt: int) -> float:
        """The delay before retry ``attempt`` (1, 2, ...): :meth:`base` less its jitter."""
        base = self.base(attempt)
        if not self.jitter:
            return base
        return base * (1.0 - self.jitter * self.random())
