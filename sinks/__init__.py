"""Sinks: where a stream's events go. One sink per module.

* :mod:`sinks.sse_response` -- the SSE responder (an ASGI response), with
  :mod:`sinks.dialects` for rxllm events, OpenAI chunks and the Vercel AI SDK
  UI message stream;
* :mod:`sinks.store` -- the SQL transcript store (SQLite, PostgreSQL);
* :mod:`sinks.jsonl_recorder` -- a JSON Lines recording of a stream;
* :mod:`sinks.metrics` -- Prometheus metrics (TTFT, inter-token latency, tokens/s, ...).

The store is imported on first use (it loads SQLAlchemy and Alembic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sinks.dialects import Dialect, OpenAIDialect, RxllmDialect, VercelDialect
from sinks.jsonl_recorder import JsonlRecorder, record_to
from sinks.metrics import Metrics, StreamStats
from sinks.sse_response import SSEResponse

if TYPE_CHECKING:
    from sinks.store import Store

__all__ = [
    "Dialect",
    "JsonlRecorder",
    "Metrics",
    "OpenAIDialect",
    "RxllmDialect",
    "SSEResponse",
    "Store",
    "StreamStats",
    "VercelDialect",
    "record_to",
]


def __getattr__(name: str) -> Any:
    if name == "Store":
        from sinks.store import Store

        return Store
    raise AttributeError(f"module 'sinks' has no attribute {name!r}")
