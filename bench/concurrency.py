"""Many streams at once: memory per active stream, and cancellation.

Both go through what a server does with a stream: ``sources.chat_completions``
(the openai client) + the standard chain + :class:`pipeline.runtime.multicast.StreamRun`
with an ``Accumulator`` sink.
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.common import MESSAGES, MODEL, Measured, percentile, rss_bytes

SLOW_TEXT = " ".join(["word"] * 200)  # long enough to still be streaming when measured


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


class _Started:
    """Counts the streams that have sent text (or ended); one Event for all of them.

    One per stream would be the harness's own memory (an ``asyncio.Event`` is
    0.8 KB), counted against the path being measured.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.all = asyncio.Event()

    def one(self) -> None:
        self.count += 1
        if self.count == self.expected:
            self.all.set()


class _Stream:
    """One stream run with an Accumulator sink; tells ``started`` at its first text event."""

    def __init__(self, client: Any, script: dict[str, Any], started: _Started) -> None:
        from pipeline.core.result import Accumulator
        from pipeline.runtime.multicast import StreamRun
        from pipeline.runtime.sources import chat_completions
        from pipeline.runtime.standard_chain import llm_stream

        source = chat_completions(
            client, model=MODEL, messages=MESSAGES, extra_body={"mock": script}
        )
        self.run = StreamRun(llm_stream(source), errors_mapped=True)
        self.acc = Accumulator()
        self.started: _Started | None = started
        self.run.subscribe(self._on_event)

    def _on_event(self, event: Any) -> None:
        self.acc.add(event)  # the Accumulator sink, and the harness's check in one observer
        if self.started is not None and (
            (event.type == "text" and event.text) or event.type in ("error", "cancelled")
        ):
            self.started.one()
            self.started = None


async def _start(
    client: Any, scripts: list[dict[str, Any]], wait: float, check: bool = True
) -> list[_Stream]:
    """Start one stream per script; return once each has sent text (``check``: none ended)."""
    started = _Started(len(scripts))
    streams = [_Stream(client, script, started) for script in scripts]
    for stream in streams:
        stream.run.start()
    await asyncio.wait_for(started.all.wait(), wait)
    failed = [s.run.terminal for s in streams if s.run.terminal is not None]
    if check and failed:
        raise RuntimeError(f"{len(failed)} streams ended before the measurement: {failed[0]!r}")
    return streams


async def _warm_up(client: Any) -> None:
    (stream,) = await _start(client, [{"text": "warm up", "interval": 0.0}], 30, check=False)
    await stream.run.wait()


async def _peer_streams(base_url: str, mode: str, script: dict[str, Any], n: int) -> Any:
    """Start ``n`` streams the way a peer does; return (tasks, the events set at first text)."""
    got = [asyncio.Event() for _ in range(n)]
    if mode == "httpx":
        import httpx2

        client: Any = httpx2.AsyncClient(timeout=600, limits=httpx2.Limits(max_connections=n))
        body = {"model": MODEL, "messages": MESSAGES, "stream": True, "mock": script}

        async def one(event: asyncio.Event) -> None:
            url = base_url + "/chat/completions"
            async with client.stream("POST", url, json=body) as response:
                async for data in response.aiter_raw():
                    if b'"content":"word' in data:
                        event.set()

    else:
        from openai import AsyncOpenAI

        client = AsyncOpenAI(base_url=base_url, api_key="bench-key", max_retries=0)

        async def one(event: asyncio.Event) -> None:
            stream = await client.chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True, extra_body={"mock": script}
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    event.set()

    return client, one, got


async def measure_memory(base_url: str, streams: int, interval: float, mode: str) -> Measured:
    """RSS growth of this process per active stream, with ``streams`` streams mid-answer.

    ``mode``: ``rxllm`` (StreamRun + source + chain + Accumulator), ``source``
    (rxllm's source alone, one plain subscriber), ``sdk`` (the openai SDK's
    ``create(stream=True)`` iterated) or ``httpx`` (httpx2 streams read raw);
    ``rxllm_http`` and ``source_http``: the same on rxllm's ``http_client()``.
    """
    from openai import AsyncOpenAI

    from pipeline.runtime.http_backend import http_client

    _raise_fd_limit(streams * 2 + 256)
    script = {"text": SLOW_TEXT, "interval": interval}
    http = http_client() if mode.endswith("_http") else None
    mode = mode.removesuffix("_http")
    async with AsyncOpenAI(
        base_url=base_url, api_key="bench-key", max_retries=0, http_client=http
    ) as client:
        await _warm_up(client)
        if mode in ("rxllm", "source"):
            stop: list[Any] = []
            if mode == "rxllm":
                gc.collect()
                before = rss_bytes()
                active = await _start(client, [script] * streams, 120)
                stop = [s.run for s in active]
            else:
                from pipeline.runtime.sources import chat_completions

                firsts = [asyncio.Event() for _ in range(streams + 1)]

                def subscribe(event: asyncio.Event) -> Any:
                    source = chat_completions(
                        client, model=MODEL, messages=MESSAGES, extra_body={"mock": script}
                    )
                    return source.subscribe(lambda m: event.set() if "word" in m.data else None)

                warm = subscribe(firsts[-1])
                await firsts[-1].wait()
                warm.dispose()
                gc.collect()
                before = rss_bytes()
                stop = [subscribe(event) for event in firsts[:-1]]
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in firsts[:-1])), 120)
            gc.collect()
            during = rss_bytes()
            for item in stop:
                (item.cancel if mode == "rxllm" else item.dispose)()
        else:
            peer, one, got = await _peer_streams(base_url, mode, script, streams + 1)
            warm = asyncio.create_task(one(got[-1]))
            await got[-1].wait()
            warm.cancel()
            gc.collect()
            before = rss_bytes()
            tasks = [asyncio.create_task(one(event)) for event in got[:-1]]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in got[:-1])), 120)
            gc.collect()
            during = rss_bytes()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await peer.aclose() if mode == "httpx" else await peer.close()
        await asyncio.sleep(0.5)
    per_stream = (during - before) / streams / 1024
    return Measured([per_stream], {"streams": streams, "rss_growth_mb": (during - before) / 2**20})


def _spawn_model(interval: float, cpu: int | None) -> subprocess.Popen[str]:
    from bench.common import pinned, python_env

    return subprocess.Popen(
        [sys.executable, "-m", "bench.recorded_mock", str(interval)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=python_env(),
        preexec_fn=pinned(cpu),
    )


async def measure_cancel(
    streams: int, interval: float, spacing: float, server_cpu: int | None
) -> Measured:
    """Cancel ``streams`` streams mid-answer, one every ``spacing`` seconds.

    The model runs with its recorder in a process of its own
    (:mod:`bench.recorded_mock`, pinned to the servers' core), which sees
    the TCP connections close: the latency of one stream is the time from
    ``StreamRun.cancel()`` to the model's ``connection_lost`` for its
    connection (``time.monotonic()`` in both processes).
    """
    from openai import AsyncOpenAI

    _raise_fd_limit(streams * 2 + 256)
    model = _spawn_model(interval, server_cpu)
    assert model.stdin is not None and model.stdout is not None
    stdin, stdout = model.stdin, model.stdout

    def report() -> dict[str, float | None]:
        stdin.write("report\n")
        stdin.flush()
        return {row["key"]: row["closed_at"] for row in json.loads(stdout.readline())}

    try:
        port = int(stdout.readline())
        base_url = f"http://127.0.0.1:{port}/v1"
        async with AsyncOpenAI(base_url=base_url, api_key="bench-key", max_retries=0) as client:
            await _warm_up(client)
            scripts = [{"text": SLOW_TEXT, "fault_key": f"bench-{i}"} for i in range(streams)]
            active = await _start(client, scripts, 120)
            cancelled_at: dict[str, float] = {}
            for i, stream in enumerate(active):
                cancelled_at[f"bench-{i}"] = time.monotonic()
                stream.run.cancel("client went away")
                await asyncio.sleep(spacing)
            deadline = time.monotonic() + 10
            while True:
                closed_at = report()
                done = [k for k in cancelled_at if closed_at.get(k) is not None]
                if len(done) == streams or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            terminals = [getattr(s.run.terminal, "type", None) for s in active]
        stdin.write("quit\n")
        stdin.flush()
        model.wait(15)
    finally:
        if model.poll() is None:
            model.kill()
            model.wait()
    latencies = [(closed_at[k] - cancelled_at[k]) * 1000 for k in done]  # type: ignore[operator]
    p99 = percentile(latencies, 0.99)
    return Measured(
        [p99],
        {
            "streams": streams,
            "closed": len(done),
            "cancelled_events": terminals.count("cancelled"),
            "p50_ms": statistics.median(latencies) if latencies else None,
            "max_ms": max(latencies) if latencies else None,
        },
    )
