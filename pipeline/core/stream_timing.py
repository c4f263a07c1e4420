"""A stream's timing from its events: time to first token, gaps between tokens, rate.

A *content event* is what :func:`pipeline.core.events.is_content` says (a
non-empty text, reasoning or refusal delta, a tool-call start or delta).
Time to first token (TTFT) is the ``t`` of the first one; a *gap* is the time
between two consecutive ones (inter-token latency); the rate is content
events per second between the first and the last.

Pure functions of the events' own ``t``: the same for a live stream, its
recording, its stored transcript and a replay at any speed.

Example::

    timing = stream_timing(events)
    print(timing.ttft, timing.gap_quantile(0.95), timing.tokens_per_second)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from pipeline.core.events import EventBase, is_content

__all__ = ["StreamTiming", "stream_timing"]


@dataclass(frozen=True)
class StreamTiming:
    """Timing of one stream (seconds); see the module docstring.

    ``content_times`` are the content events' ``t`` in arrival order;
    ``gaps[i]`` is the gap before content event ``i + 1``.
    """

    events: int
    duration: float | None
    content_times: tuple[float, ...] = field(default=())

    @property
    def ttft(self) -> float | None:
        """Time to first token, or ``None`` if no content came."""
        return self.content_times[0] if self.content_times else None

    @property
    def gaps(self) -> tuple[float, ...]:
        """The gaps between consecutive content events."""
        times = self.content_times
        return tuple(b - a for a, b in pairwise(times))

    @property
    def tokens_per_second(self) -> float | None:
        """Content events per second from the first to the last (``None`` under two)."""
        times = self.content_times
        if len(times) < 2 or times[-1] <= times[0]:
            return None
        return (len(times) - 1) / (times[-1] - times[0])

    def gap_quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1, nearest rank) of the gaps, ``None`` without gaps."""
        return _quantile(sorted(self.gaps), q)

    def largest_gap(self) -> tuple[float, float] | None:
        """The largest gap and the ``t`` at which it ended, ``None`` without gaps."""
        gaps = self.gaps
        if not gaps:
            return None
        i = max(range(len(gaps)), key=gaps.__getitem__)
        return gaps[i], self.content_times[i + 1]

    def rate_over_time(self, buckets: int = 20) -> list[tuple[float, float]]:
        """Content events per second in ``buckets`` equal slices of the stream.

        Each item is (the slice's start, its rate). Empty for a stream without content.
        """
        times = self.content_times
        end = self.duration if self.duration else (times[-1] if times else 0.0)
        if not times or end <= 0 or buckets < 1:
            return []
        width = end / buckets
        counts = [0] * buckets
        for t in times:
            counts[min(int(t / width), buckets - 1)] += 1
        return [(i * width, count / width) for i, count in enumerate(counts)]


def _quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    rank = min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))
    return values[rank]


def stream_timing(events: Iterable[EventBase]) -> StreamTiming:
    """The timing of ``events`` (in their order)."""
    count = 0
    last: float | None = None
    times: list[float] = []
    for event in events:
        count += 1
        last = event.t if last is None else max(last, event.t)
        if is_content(event):
            times.append(event.t)
    return StreamTiming(events=count, duration=last, content_times=tuple(times))
