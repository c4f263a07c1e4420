"""The standard chain: raw chunks to assembled, error-safe events.

``llm_stream(source)`` is ``source.pipe(extract_deltas(id),
assemble_tool_calls(tools), timeouts(...), map_errors(id))``, run as one observer of
the source (:func:`operators._fused.fused`): every provider
format becomes events, tool-call arguments are assembled and parsed, a stream
that is too slow fails (only when a timeout is given), and any failure becomes
a terminal ``error`` event (a timeout: kind ``timeout``, retryable, with
``after_first_token`` saying whether content had been sent). Compose the
operators yourself for anything else.
"""

from __future__ import annotations

from typing import Any

from reactivex import Observable, abc

from operators._fused import Fusable, fused
from operators.assemble_tool_calls import assemble_tool_calls
from operators.extract_deltas import RawChunk, extract_deltas
from operators.map_errors import map_errors
from operators.timeouts import timeouts
from pipeline.core.events import Event
from pipeline.core.ids import new_stream_id

__all__ = ["llm_stream"]


def llm_stream(
    source: Observable[RawChunk],
    *,
    stream_id: str | None = None,
    tools: Any = None,
    partial: bool = True,
    first_token_timeout: float | None = None,
    idle_timeout: float | None = None,
    total_timeout: float | None = None,
    scheduler: abc.SchedulerBase | None = None,
) -> Observable[Event]:
    """Normalize, assemble tool calls (validated against ``tools`` if given), map errors.

    ``first_token_timeout``, ``idle_timeout`` and ``total_timeout`` (seconds,
    ``None``: no limit) are :func:`operators.timeouts`' limits; ``scheduler``
    runs their timers and measures the error event's ``t`` (default: the
    running loop's). ``ValueError`` if a timeout is not a positive number.
    """
    sid = stream_id or new_stream_id()
    steps: list[Fusable[Any, Event]] = [
        extract_deltas(sid),
        assemble_tool_calls(tools, partial=partial),
    ]
    if first_token_timeout is not None or idle_timeout is not None or total_timeout is not None:
        steps.append(
            timeouts(first_token_timeout, idle_timeout, total_timeout, scheduler=scheduler)
        )
    steps.append(map_errors(sid, scheduler=scheduler))
    # One observer of the source for the whole chain (operators._fused): a chunk goes
    # through each step as a method call, not through an observer layer per operator.
    return fused(source, *steps)
