"""rxllm's pipeline: the core, the runtime and the applications, and its public names.

``pipeline.core`` (events, errors, SSE decoding, the accumulated result) is
what every layer may import; ``pipeline.runtime`` (sources, the multicast
runner, failover, the hub, replay) sits above the operators; ``pipeline.apps``
(``rxllm serve``, the CLI, the built-in model) is the top. The layers are
import-linter contracts in ``pyproject.toml``. Names below load on first use,
so ``import pipeline.core.events`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Event": "pipeline.core.events",
    "EventBase": "pipeline.core.events",
    "Started": "pipeline.core.events",
    "TextDelta": "pipeline.core.events",
    "ReasoningDelta": "pipeline.core.events",
    "RefusalDelta": "pipeline.core.events",
    "ToolCallStarted": "pipeline.core.events",
    "ToolCallDelta": "pipeline.core.events",
    "ToolCallCompleted": "pipeline.core.events",
    "ToolCallInvalid": "pipeline.core.events",
    "UsageReport": "pipeline.core.events",
    "ChoiceFinished": "pipeline.core.events",
    "Finished": "pipeline.core.events",
    "StreamError": "pipeline.core.events",
    "Cancelled": "pipeline.core.events",
    "is_content": "pipeline.core.events",
    "is_terminal": "pipeline.core.events",
    "load_event": "pipeline.core.events",
    "RxllmError": "pipeline.core.errors",
    "UpstreamError": "pipeline.core.errors",
    "UpstreamStreamError": "pipeline.core.errors",
    "MalformedChunkError": "pipeline.core.errors",
    "StreamTimeoutError": "pipeline.core.errors",
    "SSEDecoder": "pipeline.core.sse_decoder",
    "SSEMessage": "pipeline.core.sse_decoder",
    "chat_completions": "pipeline.runtime.sources",
    "responses": "pipeline.runtime.sources",
    "sse_body": "pipeline.runtime.sources",
    "from_async_iterable": "pipeline.runtime.async_bridges",
    "from_observable": "pipeline.runtime.async_bridges",
    "Failover": "pipeline.core.events",
    "failover": "pipeline.runtime.failover",
    "FailoverOptions": "pipeline.runtime.failover_options",
    "Upstream": "pipeline.runtime.upstreams",
    "UpstreamConfig": "pipeline.runtime.upstreams",
    "KeyPool": "pipeline.runtime.key_pool",
    "NoKeyAvailable": "pipeline.runtime.key_pool",
    "replay": "pipeline.runtime.replay",
    "load_jsonl": "pipeline.runtime.replay",
    "RecordingError": "pipeline.runtime.replay",
    "StreamRun": "pipeline.runtime.multicast",
    "StreamHub": "pipeline.runtime.stream_hub",
    "ResumeGapError": "pipeline.runtime.stream_hub",
    "StreamNotFoundError": "pipeline.runtime.stream_hub",
    "llm_stream": "pipeline.runtime.standard_chain",
    "marbles": "pipeline.core.marbles",
    "MarbleDiagram": "pipeline.core.marbles",
    "Recording": "pipeline.core.recording",
    "stream_timing": "pipeline.core.stream_timing",
    "text_timeline": "pipeline.core.text_timeline",
    "operator_marbles": "pipeline.runtime.operator_marbles",
}

__all__ = sorted([*_EXPORTS, "load_ipython_extension"])


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext pipeline``: in IPython and Jupyter, every list of events shows as marbles."""
    from pipeline.core.recording import load_ipython_extension as load

    load(ipython)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
