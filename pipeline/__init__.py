"""rxllm's pipeline: the event model, sources, the multicast runner and the bridges.

Names are loaded on first use, so ``import pipeline.events`` stays cheap and
the operators (which import the event model) never import this package's
heavier parts in a cycle.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Event": "pipeline.events",
    "EventBase": "pipeline.events",
    "Started": "pipeline.events",
    "TextDelta": "pipeline.events",
    "ReasoningDelta": "pipeline.events",
    "RefusalDelta": "pipeline.events",
    "ToolCallStarted": "pipeline.events",
    "ToolCallDelta": "pipeline.events",
    "ToolCallCompleted": "pipeline.events",
    "ToolCallInvalid": "pipeline.events",
    "UsageReport": "pipeline.events",
    "ChoiceFinished": "pipeline.events",
    "Finished": "pipeline.events",
    "StreamError": "pipeline.events",
    "Cancelled": "pipeline.events",
    "is_content": "pipeline.events",
    "is_terminal": "pipeline.events",
    "load_event": "pipeline.events",
    "RxllmError": "pipeline.errors",
    "UpstreamError": "pipeline.errors",
    "UpstreamStreamError": "pipeline.errors",
    "MalformedChunkError": "pipeline.errors",
    "StreamTimeoutError": "pipeline.errors",
    "SSEDecoder": "pipeline.sse",
    "SSEMessage": "pipeline.sse",
    "chat_completions": "pipeline.sources",
    "responses": "pipeline.sources",
    "sse_body": "pipeline.sources",
    "from_async_iterable": "pipeline.aio",
    "from_observable": "pipeline.aio",
    "Failover": "pipeline.events",
    "failover": "pipeline.failover",
    "Upstream": "pipeline.failover",
    "UpstreamConfig": "pipeline.failover",
    "KeyPool": "pipeline.keypool",
    "NoKeyAvailable": "pipeline.keypool",
    "replay": "pipeline.replay",
    "load_jsonl": "pipeline.replay",
    "RecordingError": "pipeline.replay",
    "StreamRun": "pipeline.runner",
    "StreamHub": "pipeline.hub",
    "ResumeGapError": "pipeline.hub",
    "StreamNotFoundError": "pipeline.hub",
    "llm_stream": "pipeline.stream",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
