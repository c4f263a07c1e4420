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

:func:`retry_within` is the one asyncio loop around it: call, and while the
call fails with an error that may pass, wait and call again, for a bounded
time (the store's migration at open, a Redis reader's reconnect).

Why not tenacity or stamina: both are retry *loops* (decorators or context
managers that call, catch and sleep) with their own module-level random and
``asyncio.sleep``. Failover schedules its next attempt on a reactivex
scheduler, interleaved with Retry-After and key-pool waits; the store and
bus writers retry a batch taken from a queue that changes between attempts,
with their own outage logging. What they share is the delay, not the loop;
the one plain call-until-a-deadline loop is a dozen lines. A frozen object
with one method and that function say it with no dependency.

Example::

    policy = Backoff(initial=0.05, cap=2.0)
    rows = await retry_within(fetch, policy, within=10.0, retryable=is_transient)

Errors: ``ValueError`` at creation for a negative ``initial`` or ``cap``,
or a ``jitter`` outside 0..1.
"""

from __future__ import annotations

import asyncio
import random as _random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

__all__ = ["Backoff", "retry_within"]

_T = TypeVar("_T")

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


async def retry_within(
    action: Callable[[], Awaitable[_T]],
    policy: Backoff,
    *,
    within: float,
    retryable: Callable[[Exception], bool],
    on_retry: Callable[[Exception, int], None] | None = None,
) -> _T:
    """``await action()``; while it fails with a ``retryable`` error, again after a backoff.

    Retries go on for at most ``within`` seconds from the first failure (no
    wait reaches past that); ``on_retry(error, attempt)`` is called before
    each wait. Errors: the first error that is not retryable, or the last
    one when the time is up.
    """
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    attempt = 0
    while True:
        try:
            return await action()
        except Exception as error:
            if not retryable(error):
                raise
            now = loop.time()
            if deadline is None:
                deadline = now + within
            if now >= deadline:
                raise
            attempt += 1
            if on_retry is not None:
                on_retry(error, attempt)
            await asyncio.sleep(min(policy.delay(attempt), deadline - now))
