"""Linear cost: assembling a big stream costs per byte what a small one does.

In process, no HTTP: the frames the built-in model would send are made
beforehand, then fed one by one through the SSE decoder, the standard chain
(``llm_stream``: extract_deltas, assemble_tool_calls with its partial parse,
map_errors) and an ``Accumulator``. Timed with ``time.process_time()``.
"""

from __future__ import annotations

import gc
import json
import time
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import Disposable

from bench.common import Measured

PIECE = 10  # bytes per fragment / text piece


def arguments_of(size: int) -> str:
    """JSON arguments of about ``size`` bytes: a list of small records."""
    rows: list[dict[str, Any]] = []
    text = ""
    while len(text) < size:
        batch = [
            {"id": i, "name": f"row-{i}", "tags": ["a", "b"], "ok": i % 2 == 0}
            for i in range(len(rows), len(rows) + 64)
        ]
        rows.extend(batch)
        text = json.dumps({"rows": rows}, separators=(",", ":"))
    return text


def frames(kind: str, size: int) -> tuple[list[bytes], int]:
    """The encoded SSE frames of a ``kind`` ("tools" or "text") stream of ``size`` bytes."""
    from pipeline.apps.builtin_model.answer_script import MockScript, ToolCall
    from pipeline.apps.builtin_model.chat_wire import ChatWriter
    from pipeline.apps.builtin_model.wire_frames import Meta, encode

    if kind == "tools":
        args = arguments_of(size)
        pieces = [args[i : i + PIECE] for i in range(0, len(args), PIECE)]
        script = MockScript(tool_calls=[ToolCall(name="f", arguments=pieces)])
        nbytes = len(args)
    else:
        letters = "abcdefghijklmnopqrstuvwxyz "
        text = (letters * (size // len(letters) + 1))[:size]
        script = MockScript(text=[text[i : i + PIECE] for i in range(0, size, PIECE)])
        nbytes = size
    answer = script.answer("bench")
    return [encode(f) for f in ChatWriter(answer, Meta("bench", "m", 0)).frames()], nbytes


def frames_source(items: list[bytes]) -> Observable[Any]:
    """A synchronous source: each frame through the SSE decoder, as if read from HTTP."""
    from pipeline.core.sse_decoder import SSEDecoder

    def subscribe(
        observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        decoder = SSEDecoder()
        decode, on_next = decoder.decode, observer.on_next
        for frame in items:
            for message in decode(frame, 0.0):
                on_next(message)
        for message in decoder.flush(0.0):
            on_next(message)
        observer.on_completed()
        return Disposable()

    return Observable(subscribe)


def consume(items: list[bytes], kind: str) -> None:
    from pipeline.core.result import Accumulator
    from pipeline.runtime.standard_chain import llm_stream

    acc = Accumulator()
    llm_stream(frames_source(items)).subscribe(acc.add)
    result = acc.result()
    assert result.status == "finished", result.error
    if kind == "tools":
        call = result.choices[0].tool_calls[0]
        assert call.error is None and call.parsed is not None, call.error


def measure_linear(kind: str, size: int, repeats: int) -> Measured:
    """µs of CPU per KB to assemble a ``kind`` stream of ``size`` bytes in 10-byte pieces."""
    items, nbytes = frames(kind, size)
    samples = []
    for i in range(repeats + 1):
        gc.collect()
        start = time.process_time()
        consume(items, kind)
        spent = time.process_time() - start
        if i:
            samples.append(spent / nbytes * 1024 * 1e6)
    return Measured(samples, {"bytes": nbytes, "chunks": len(items)})
