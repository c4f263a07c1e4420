"""The standard chain: raw chunks to assembled, error-safe events.

``llm_stream(source)`` is ``source.pipe(extract_deltas(id),
assemble_tool_calls(tools), map_errors(id))``: every provider format becomes
events, tool-call arguments are assembled and parsed, and any failure becomes
a terminal ``error`` event. Compose the operators yourself for anything else.
"""

from __future__ import annotations

import uuid
from typing import Any

from reactivex import Observable

from operators.assemble_tool_calls import assemble_tool_calls
from operators.extract_deltas import RawChunk, extract_deltas
from operators.map_errors import map_errors
from pipeline.events import Event

__all__ = ["llm_stream"]


def llm_stream(
    source: Observable[RawChunk],
    *,
    stream_id: str | None = None,
    tools: Any = None,
    partial: bool = True,
) -> Observable[Event]:
    """Normalize, assemble tool calls (validated against ``tools`` if given), map errors."""
    sid = stream_id or uuid.uuid4().hex
    return source.pipe(
        extract_deltas(sid),
        assemble_tool_calls(tools, partial=partial),
        map_errors(sid),
    )
