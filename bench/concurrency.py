"""Many streams at once: memory per active stream, and cancellation.

Both go through what a server does with a stream: ``sources.chat_completions``
(the openai client) + the standard chain + :class:`pipeline.runner.StreamRun`
with an ``Accumulator`` sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import resource
import statistics
import time
from typing import Any

from bench.common import MESSAGES, MODEL, Measured, rss_bytes

SLOW_TEXT = " ".join(["word"] * 400)  # long enough to still be streaming when measured


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


class _Stream:
    """One stream run with an Accumulator sink; ``first`` is set at its first text event."""

    def __init__(self, client: Any, script: dict[str, Any]) -> None:
        from operators.accumulate import Accumulator
        from pipeline.runner import StreamRun
        from pipeline.sources import chat_completions
        from pipeline.stream import llm_stream

        source = chat_completions(
            client, model=MODEL, messages=MESSAGES, extra_body={"mock": script}
        )
        self.run = StreamRun(llm_stream(source))
        self.acc = Accumulator()
        self.first = asyncio.Event()
        self.run.subscribe(self.acc.add)
        self.run.subscribe(self._on_event)

    def _on_event(self, event: Any) -> None:
        if (event.type == "text" and event.text) or event.type in ("error", "cancelled"):
            self.first.set()


async def _start(client: Any, scripts: list[dict[str, Any]], wait: float) -> list[_Stream]:
    """Start one stream per script; return once each has sent text (or ended)."""
    streams = [_Stream(client, script) for script in scripts]
    for stream in streams:
        stream.run.start()
    await asyncio.wait_for(asyncio.gather(*(s.first.wait() for s in streams)), wait)
    failed = [s.run.terminal for s in streams if s.run.terminal is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} streams ended before the measurement: {failed[0]!r}")
    return streams


async def _warm_up(client: Any) -> None:
    (stream,) = await _start(client, [{"text": "warm up", "interval": 0.0}], 30)
    await stream.run.wait()


async def measure_memory(base_url: str, streams: int, interval: float) -> Measured:
    """RSS growth of this process per active stream, with ``streams`` streams mid-answer."""
    from openai import AsyncOpenAI

    _raise_fd_limit(streams * 2 + 256)
    async with AsyncOpenAI(base_url=base_url, api_key="bench-key", max_retries=0) as client:
        await _warm_up(client)
        gc.collect()
        before = rss_bytes()
        script = {"text": SLOW_TEXT, "interval": interval}
        active = await _start(client, [script] * streams, 120)
        gc.collect()
        during = rss_bytes()
        for stream in active:
            stream.run.cancel("benchmark done")
        await asyncio.gather(*(s.run.wait() for s in active))
    per_stream = (during - before) / streams / 1024
    return Measured([per_stream], {"streams": streams, "rss_growth_mb": (during - before) / 2**20})


async def measure_cancel(streams: int, interval: float, spacing: float) -> Measured:
    """Cancel ``streams`` streams mid-answer, one every ``spacing`` seconds.

    The mock runs in this process (its recorder sees the TCP connections
    close): the latency of one is the time from ``StreamRun.cancel()`` to the
    mock's ``connection_lost`` for its connection.
    """
    from openai import AsyncOpenAI

    from pipeline.mock import MockScript, MockServer

    _raise_fd_limit(streams * 4 + 256)
    async with (
        MockServer(MockScript(interval=interval), shutdown_grace=1.0) as server,
        AsyncOpenAI(base_url=server.base_url, api_key="bench-key", max_retries=0) as client,
    ):
        await _warm_up(client)
        scripts = [{"text": SLOW_TEXT, "fault_key": f"bench-{i}"} for i in range(streams)]
        active = await _start(client, scripts, 120)
        cancelled_at: dict[str, float] = {}
        for i, stream in enumerate(active):
            cancelled_at[f"bench-{i}"] = time.monotonic()
            stream.run.cancel("client went away")
            await asyncio.sleep(spacing)
        recorder = server.recorder
        keys = set(cancelled_at)

        def all_closed() -> bool:
            records = [r for r in recorder.requests if (r.script or {}).get("fault_key") in keys]
            return len(records) == streams and all(
                r.connection is not None and r.connection.closed_at is not None for r in records
            )

        with contextlib.suppress(TimeoutError):
            await recorder.wait_for_async(all_closed, 10.0)
        latencies: list[float] = []
        closed = 0
        for record in recorder.requests:
            key = (record.script or {}).get("fault_key")
            connection = record.connection
            if key in keys and connection is not None and connection.closed_at is not None:
                closed += 1
                latencies.append((connection.closed_at - cancelled_at[key]) * 1000)
        terminals = [s.run.terminal.type if s.run.terminal else None for s in active]
    latencies.sort()
    p99 = latencies[max(0, round(0.99 * len(latencies)) - 1)] if latencies else float("nan")
    return Measured(
        [p99],
        {
            "streams": streams,
            "closed": closed,
            "cancelled_events": terminals.count("cancelled"),
            "p50_ms": statistics.median(latencies) if latencies else None,
            "max_ms": latencies[-1] if latencies else None,
        },
    )
