"""Sinks: where a stream's events go. One sink per module.

* :mod:`sinks.metrics` -- Prometheus metrics (TTFT, inter-token latency, tokens/s, ...)
"""

from sinks.metrics import Metrics, StreamStats

__all__ = ["Metrics", "StreamStats"]
