"""Pipeable operators over rxllm events, one per module, used with ``.pipe()``.

events = source.pipe(extract_deltas(), assemble_tool_calls(tools), map_errors())
"""

from operators.accumulate import accumulate
from operators.assemble_tool_calls import assemble_tool_calls
from operators.batch_flush import batch_flush
from operators.extract_deltas import extract_deltas
from operators.map_errors import map_errors
from operators.timeouts import timeouts
from pipeline.core.result import Accumulator, ChoiceResult, Result, ToolCallResult

__all__ = [
    "Accumulator",
    "ChoiceResult",
    "Result",
    "ToolCallResult",
    "accumulate",
    "assemble_tool_calls",
    "batch_flush",
    "extract_deltas",
    "map_errors",
    "timeouts",
]
