"""The cyclic garbage collector run between requests, not on a request's way to its first token.

CPython starts a collection in whichever allocation crosses the first
generation's threshold. In a server that allocation is usually a request
being set up: a stream builds a few hundred tracked objects (the pipeline's
subscriptions, tasks, the HTTP exchange) that live as long as it does, so
the requests themselves fill the young generation, and the request that
tips it over waits for the pass (a young pass walks the whole young
generation; a middle one, every ten, walks ten times as much). The pause
lands on that request's time to first token.

:class:`CollectorPacer` moves the collections to a moment of their own. The
server tells it when request bytes arrive (:meth:`arrived`); a coarse timer
(:data:`TICK`) checks the collector's counts, and once the young generation
is past ``threshold`` and no request has arrived for :data:`QUIET` seconds
it runs the collection CPython would have run (the oldest generation whose
count is past its threshold), in a loop callback of its own. Under a stream
of arrivals with no such gap it collects anyway at twice the threshold, and
CPython's own trigger stays set at :data:`BACKSTOP` times it, for a loop too
busy to run the timer. The collector does the same work as before, at the
same rate: only its timing moves.

While started, every pass is reported to ``on_pass(generation, trigger,
seconds)``: ``trigger`` is ``"paced"`` (in a gap), ``"forced"`` (at twice
the threshold, without one) or ``"backstop"`` (CPython's own, or any other
code's ``gc.collect()``); ``rxllm serve`` records them as the
``rxllm_gc_pause_seconds`` histogram. The passes are noted as they end and
reported at the next tick, from the loop: a pass can start in any
allocation, including one made while a metric's lock is held, and
reporting from inside it would take that lock again.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

__all__ = ["BACKSTOP", "QUIET", "TICK", "CollectorPacer", "PassReport"]

TICK = 0.02
"""Seconds between two checks of the collector's counts."""
QUIET = 0.005
"""Seconds without a request's bytes arriving that make a moment to collect in."""
BACKSTOP = 4
"""CPython's own trigger, in multiples of the pacer's first-generation threshold."""

PassReport = Callable[[int, str, float], None]
"""``on_pass(generation, trigger, seconds)``: a pass of the collector (module docstring)."""


class CollectorPacer:
    """Collects the young generation in a quiet moment (module docstring).

    ``threshold`` is the pacer's first-generation threshold; the older
    generations' are CPython's (``gc.get_threshold()``). ``clock`` is read
    for arrivals and checks. A full pass comes after more than the third
    threshold's middle ones, as in CPython, but without CPython's extra rule
    that skips it while few objects have reached the old generation.
    """

    def __init__(
        self,
        threshold: int,
        *,
        quiet: float = QUIET,
        tick: float = TICK,
        clock: Callable[[], float] = time.monotonic,
        on_pass: PassReport | None = None,
    ) -> None:
        self.threshold = threshold
        self.quiet = quiet
        self.tick = tick
        self._clock = clock
        self._last_arrival = float("-inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._saved: tuple[int, int, int] | None = None
        self._on_pass = on_pass
        self._trigger: str | None = None  # what the pass being run by check() is
        self._began = 0.0  # when the current pass began (time.perf_counter)
        self._passes: list[tuple[int, str, float]] = []  # ended, not yet reported

    @property
    def started(self) -> bool:
        """Whether :meth:`start` ran and :meth:`stop` has not."""
        return self._loop is not None

    def arrived(self) -> None:
        """Request bytes came in: no collection for the next ``quiet`` seconds if it can wait."""
        self._last_arrival = self._clock()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Raise CPython's trigger to the backstop; check the counts every ``tick`` on ``loop``."""
        if self._loop is not None:
            return
        self._saved = gc.get_threshold()
        _, second, third = self._saved
        gc.set_threshold(self.threshold * BACKSTOP, second, third)
        if self._on_pass is not None:
            gc.callbacks.append(self._on_phase)
        self._loop = loop
        self._timer = loop.call_later(self.tick, self._on_tick)

    def stop(self) -> None:
        """Stop checking and give CPython its thresholds back (the loop may be closed by now)."""
        if self._timer is not None and self._loop is not None and not self._loop.is_closed():
            self._timer.cancel()
        self._timer = None
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None
        if self._on_phase in gc.callbacks:
            gc.callbacks.remove(self._on_phase)
        self.report()
        self._loop = None

    def check(self) -> int | None:
        """Collect now if it is time (module docstring); the generation collected, or None."""
        young, middle, old = gc.get_count()
        if young <= self.threshold:
            return None
        forced = young >= 2 * self.threshold
        if not forced and self._clock() - self._last_arrival < self.quiet:
            return None  # a request is on its way in: wait for a gap
        _, second, third = gc.get_threshold()
        generation = 2 if old > third else 1 if middle > second else 0
        self._trigger = "forced" if forced else "paced"
        try:
            gc.collect(generation)
        finally:
            self._trigger = None
        return generation

    def report(self) -> None:
        """Hand the passes that ended since the last report to ``on_pass``."""
        passes, self._passes = self._passes, []
        if self._on_pass is not None:
            for generation, trigger, seconds in passes:
                self._on_pass(generation, trigger, seconds)

    def _on_phase(self, phase: str, info: dict[str, int]) -> None:
        """``gc.callbacks``: time each pass and note it for :meth:`report`."""
        if phase == "start":
            self._began = time.perf_counter()
        else:
            seconds = time.perf_counter() - self._began
            self._passes.append((info["generation"], self._trigger or "backstop", seconds))

    def _on_tick(self) -> None:
        self.check()
        self.report()
        if self._loop is not None:
            self._timer = self._loop.call_later(self.tick, self._on_tick)
