"""Microseconds per chunk of the ``rxllm assemble`` path on one recorded SSE body.

    python bench/assemble_path.py ../shared/streams/openai_chat_text-long-json_1.sse

The body is read once; each round runs it through ``llm_stream(sse_body(...))``
into an ``Accumulator`` and builds the result; the best of 20 rounds is printed
(wall time on one core, in process: no HTTP).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pipeline.core.result import Accumulator
from pipeline.runtime.sources import sse_body
from pipeline.runtime.standard_chain import llm_stream


def main(path: str, rounds: int = 20) -> None:
    body = Path(path).read_bytes()
    chunks = body.count(b"data:")
    best = float("inf")
    for _ in range(rounds):
        acc = Accumulator()
        started = time.perf_counter()
        llm_stream(sse_body(body)).subscribe(acc.add)
        acc.result()
        best = min(best, time.perf_counter() - started)
    per_chunk = best / chunks * 1e6
    name = Path(path).name
    print(f"{name}: {chunks} chunks, {per_chunk:.2f} µs per chunk (best of {rounds})")


if __name__ == "__main__":
    main(sys.argv[1])
