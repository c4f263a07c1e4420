"""Rows through a proxy: ``rxllm serve`` (and LiteLLM's proxy) relaying the built-in model.

* ``proxy`` / ``litellm_proxy``: server CPU per chunk. ``proxy_responses`` and
  ``proxy_messages`` are the same through ``POST /v1/responses`` and
  ``POST /v1/messages`` (the built-in model speaks both: same API on both
  sides, normalized to events and written back in the route's dialect). A second built-in model
  whose default answer is the benchmark's text stream runs on the servers'
  core, with the load-generating client; the proxy runs alone on the other
  core and its CPU time (``/proc/PID/stat``, user + system) is measured
  around each stream, store writes included (the measurement waits for the
  proxy to go idle after the stream).
* ``ttft``: time to first token through ``rxllm serve`` minus a direct
  connection to the same model, median over one stream at a time.
* ``ttft_p99``: the same under load: ``streams - 1`` background streams at 20
  tokens/s through ``rxllm serve`` (store and metrics on), then probe pairs
  (one straight to the model, one through the proxy), one pair at a time; the
  p99 of the proxied probes minus the p99 of the direct ones. The model and
  the background clients are :mod:`bench.light_load`'s, which cost a fraction
  of the built-in model's and httpx2's per chunk. The proxy's CPU
  per chunk at this rate is reported beside it. With fewer than four cores
  the load is 200 streams, not 1,000 (see ``_ttft_p99_row``).

``rxllm serve`` is started as ``python -m pipeline.apps.cli serve``; the rows are
skipped with a note when ``pipeline.apps.server`` does not import. LiteLLM's proxy
needs ``litellm[proxy]``, whose pins clash with the main environment: it is
looked for in ``$RXLLM_BENCH_LITELLM`` (the ``litellm`` executable), then in
``bench/.venv-litellm`` (``python -m venv bench/.venv-litellm &&
bench/.venv-litellm/bin/pip install 'litellm[proxy]'``), then on ``PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import (
    MESSAGES,
    MODEL,
    Measured,
    cpu_seconds,
    free_port,
    percentile,
    scratch_dir,
    start_process,
    stop_process,
    text_script,
)

HERE = Path(__file__).resolve().parent


def _serve_available() -> str | None:
    try:
        import pipeline.apps.server  # noqa: F401
    except Exception as exc:  # not built yet, or broken: the row says so
        return f"pipeline.apps.server does not import ({type(exc).__name__}: {exc})"
    return None


def _litellm_executable() -> str | None:
    candidates = [
        os.environ.get("RXLLM_BENCH_LITELLM"),
        str(HERE / ".venv-litellm" / "bin" / "litellm"),
        shutil.which("litellm"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _serve_command(port: int, upstream: str, logs: Path, *, store: bool = True) -> list[str]:
    """``rxllm serve`` in front of ``upstream``, with metrics and a SQLite store in ``logs``
    (``store=False``: ``--no-store``).

    The upstream (the built-in model) is said to speak all three APIs, so every
    route relays in its own API.
    """
    db = ["--db", f"sqlite+aiosqlite:///{logs / 'bench.db'}"] if store else ["--no-store"]
    return [
        sys.executable, "-m", "pipeline.apps.cli", "serve", "--host", "127.0.0.1",
        "--port", str(port), "--upstream", upstream, *db, "--log-level", "warning",
        "--upstream-api", "chat,responses,anthropic",
    ]  # fmt: skip


# route, request body: the per-chunk rows of each API through the proxy
_ROUTES: dict[str, tuple[str, dict[str, Any]]] = {
    "proxy": ("/v1/chat/completions", {"model": MODEL, "messages": MESSAGES, "stream": True}),
    "litellm_proxy": (
        "/v1/chat/completions",
        {"model": MODEL, "messages": MESSAGES, "stream": True},
    ),
    "proxy_responses": ("/v1/responses", {"model": MODEL, "input": MESSAGES, "stream": True}),
    "proxy_messages": (
        "/v1/messages",
        {"model": MODEL, "max_tokens": 1_000_000, "messages": MESSAGES, "stream": True},
    ),
}


def _content(data: dict[str, Any]) -> str | None:
    """The text of one streamed event of any of the three APIs (``None``: none)."""
    if "choices" in data:
        choices = data.get("choices") or [{}]
        content = (choices[0].get("delta") or {}).get("content")
        return content if isinstance(content, str) else None
    kind = data.get("type")
    if kind == "response.output_text.delta":
        return str(data.get("delta") or "")
    if kind == "content_block_delta":
        text = (data.get("delta") or {}).get("text")
        return text if isinstance(text, str) else None
    return None


@contextlib.contextmanager
def _behind_serve(
    model: Callable[[int], list[str]], args: argparse.Namespace, logs: Path
) -> Iterator[tuple[str, str, int, int]]:
    """A model (``model(port)`` is its command) and ``rxllm serve`` in front of it.

    The model runs on the servers' core with this process (the load), the
    proxy on the other. Yields the model's and the proxy's chat URLs and the
    proxy's and the model's pids; stops both.
    """
    upstream_port, proxy_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    if args.server_cpu is not None:
        os.sched_setaffinity(0, {args.server_cpu})
    mock = start_process(model(upstream_port), args.server_cpu, upstream_port, logs / "mock.log")
    try:
        command = _serve_command(proxy_port, upstream, logs)
        proxy = start_process(command, args.client_cpu, proxy_port, logs / "proxy.log", 120)
        try:
            served = f"http://127.0.0.1:{proxy_port}/v1/chat/completions"
            yield upstream + "/chat/completions", served, proxy.pid, mock.pid
        finally:
            stop_process(proxy)
    finally:
        stop_process(mock)


def _light_model(port: int) -> list[str]:
    """The load's model: ``bench.light_load`` (a timer per stream, pre-encoded frames)."""
    return [sys.executable, "-m", "bench.light_load", str(port)]


def _fixed_mock(port: int, chunks: int, logs: Path) -> list[str]:
    """A built-in model whose default answer is the benchmark's text stream."""
    answer = logs / "answer.txt"
    answer.write_text(text_script(chunks)["text"])
    code = (
        "import sys, pathlib; from pipeline.apps.builtin_model import serve; "
        f"serve('127.0.0.1', {port}, interval=0.0, log_level='warning', "
        "text=pathlib.Path(sys.argv[1]).read_text())"
    )
    return [sys.executable, "-c", code, str(answer)]


async def _stream(url: str, body: dict[str, Any], client: Any) -> tuple[int, float | None]:
    """Read one streamed answer; return its content's length and the first content's arrival.

    A proxy may merge deltas (``rxllm serve`` does when its client falls
    behind), so content is counted in characters, not chunks.
    """
    size = 0
    first: float | None = None
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            content = _content(json.loads(line[6:]))
            if content:
                size += len(content)
                if first is None:
                    first = time.perf_counter()
    return size, first


def _settle(pid: int, quiet: float = 0.3, limit: float = 10.0) -> float:
    """Wait until ``pid`` has used no CPU for ``quiet`` seconds; return its CPU seconds."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = cpu_seconds(pid)
        if now == last:
            return now
        last = now
    return last


async def _proxy_cpu(
    url: str,
    pid: int,
    chunks: int,
    repeats: int,
    headers: dict[str, str],
    body: dict[str, Any] | None = None,
) -> list[float]:
    import httpx2

    body = body or {"model": MODEL, "messages": MESSAGES, "stream": True}
    expected = len(text_script(chunks)["text"])
    samples = []
    async with httpx2.AsyncClient(timeout=600, headers=headers) as client:
        for i in range(repeats + 1):
            before = _settle(pid)
            size, _ = await _stream(url, body, client)
            after = _settle(pid)
            if size != expected:
                raise RuntimeError(f"the proxy relayed {size} of {expected} characters")
            if i:
                samples.append((after - before) / chunks * 1e6)
    return samples


def _proxy(mode: str, args: argparse.Namespace) -> Measured:
    chunks = args.chunks
    server_cpu, client_cpu = args.server_cpu, args.client_cpu
    logs = scratch_dir("rxllm-bench-serve-")
    upstream_port, proxy_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    if server_cpu is not None:  # the load generator shares the upstream's core
        os.sched_setaffinity(0, {server_cpu})
    if mode in ("proxy", "proxy_responses", "proxy_messages"):
        reason = _serve_available()
        if reason:
            return Measured(skipped=reason)
        command = _serve_command(proxy_port, upstream, logs)
        note = "store (SQLite) and metrics on"
        env: dict[str, str] = {}
        headers: dict[str, str] = {}
    else:
        litellm = _litellm_executable()
        if litellm is None:
            return Measured(
                skipped="LiteLLM proxy not installed (see bench/serve.py: "
                "bench/.venv-litellm with litellm[proxy])"
            )
        command = [
            litellm, "--model", f"openai/{MODEL}", "--api_base", upstream,
            "--host", "127.0.0.1", "--port", str(proxy_port),
        ]  # fmt: skip
        note = "default settings"
        key = "sk-bench-" + secrets.token_hex(16)  # the proxy refuses to start without one
        env = {"LITELLM_MASTER_KEY": key}
        headers = {"Authorization": f"Bearer {key}"}
    mock = start_process(_fixed_mock(upstream_port, chunks, logs), server_cpu, upstream_port,
                         logs / "mock.log")  # fmt: skip
    try:
        proxy = start_process(command, client_cpu, proxy_port, logs / "proxy.log", 120, env)
        try:
            route, body = _ROUTES[mode]
            url = f"http://127.0.0.1:{proxy_port}{route}"
            samples = asyncio.run(_proxy_cpu(url, proxy.pid, chunks, args.repeats, headers, body))
        finally:
            stop_process(proxy)
    finally:
        stop_process(mock)
    return Measured(samples, {"note": note})


async def _ttft(direct: str, served: str, rounds: int) -> tuple[list[float], float, float]:
    import httpx2

    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    direct_ms: list[float] = []
    served_ms: list[float] = []
    async with httpx2.AsyncClient(timeout=60) as client:
        for i in range(rounds + 2):
            for url, out in ((direct, direct_ms), (served, served_ms)):
                start = time.perf_counter()
                _, first = await _stream(url, body, client)
                if i >= 2 and first is not None:  # two warm-up rounds
                    out.append((first - start) * 1000)
    diffs = [s - d for s, d in zip(served_ms, direct_ms, strict=True)]
    return diffs, statistics.median(direct_ms), statistics.median(served_ms)


def _ttft_row(args: argparse.Namespace) -> Measured:
    reason = _serve_available()
    if reason:
        return Measured(skipped=reason)
    logs = scratch_dir("rxllm-bench-ttft-")
    rounds = 20 if args.quick else 50
    model = lambda port: _fixed_mock(port, 20, logs)  # noqa: E731
    with _behind_serve(model, args, logs) as (direct, served, *_):
        diffs, direct_ms, served_ms = asyncio.run(_ttft(direct, served, rounds))
    # One sample per round: the table's median/min/max are over the rounds.
    return Measured(diffs, {"direct_ms": direct_ms, "served_ms": served_ms, "rounds": len(diffs)})


LOAD_RATE = 20.0  # tokens per second of each background stream
LOAD_RAMP = 8.0  # seconds over which the background streams start
PROBE_PAUSE = 0.05  # seconds between two probe pairs
SMALL_MACHINE_STREAMS = 200  # the p99 row's streams on a machine of fewer than 4 cores
TARGET_STREAMS = 1000  # the p99 target's streams: a run with fewer says so (--quick, small machine)


async def _load_and_probe(
    direct: str, served: str, streams: int, probes: int
) -> tuple[list[float], list[float], int]:
    """``streams - 1`` background streams through the proxy, then probes one pair at a time.

    Each probe pair is one stream straight to the model and one through the
    proxy (so at most ``streams`` are open through it), each timed to its
    first content. The background streams are raw connections whose answers
    are read and dropped (:mod:`bench.light_load`), to keep the load
    generator light; they last until the probes are done.
    """
    import httpx2

    from bench.light_load import read_stream, request_bytes

    words = int((LOAD_RAMP + probes * 0.5 + 30) * LOAD_RATE)
    load_body = {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "mock": {"text": " ".join(["word"] * words), "interval": 1.0 / LOAD_RATE},
    }
    probe_body = {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "mock": {"text": "probe answer", "interval": 1.0 / LOAD_RATE},
    }
    proxy = urlsplit(served)
    host, port = proxy.hostname or "127.0.0.1", proxy.port or 80
    load_request = request_bytes(host, port, proxy.path, load_body)
    limits = httpx2.Limits(max_connections=16, max_keepalive_connections=16)

    async def background(delay: float) -> None:
        await asyncio.sleep(delay)
        await read_stream(host, port, load_request)  # lasts until the probes are done

    load = [
        asyncio.create_task(background(i * LOAD_RAMP / (streams - 1))) for i in range(streams - 1)
    ]
    async with httpx2.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.sleep(LOAD_RAMP + 2.0)
        direct_ms: list[float] = []
        served_ms: list[float] = []
        for _ in range(probes):
            for url, out in ((direct, direct_ms), (served, served_ms)):
                start = time.perf_counter()
                _, first = await _stream(url, probe_body, client)
                if first is not None:
                    out.append((first - start) * 1000)
            await asyncio.sleep(PROBE_PAUSE)
    # A background stream that is over (failed, or ended early) no longer loads the proxy.
    still = sum(1 for task in load if not task.done())
    for task in load:
        task.cancel()
    await asyncio.gather(*load, return_exceptions=True)  # their errors retrieved
    return direct_ms, served_ms, streams - 1 - still


def _ttft_p99_row(args: argparse.Namespace) -> Measured:
    reason = _serve_available()
    if reason:
        return Measured(skipped=reason)
    import resource

    # 1,000 streams at 20 tokens/s are 20,000 chunks/s, which at this rate (one read
    # and one write per chunk, 160-215 µs) are three to four cores of work for the one
    # proxy process, and the light load's model and clients need over another core:
    # with fewer than four cores, run the load this machine carries and say so in the
    # row; with more, the row shows what one process does at 1,000.
    cores = os.cpu_count() or 1
    streams = args.streams if cores >= 4 else min(args.streams, SMALL_MACHINE_STREAMS)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 4 * streams + 256  # the proxy: client and upstream sockets; the model; here
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    logs = scratch_dir("rxllm-bench-p99-")
    probes = 50 if args.quick else 200
    with _behind_serve(_light_model, args, logs) as (direct_url, served_url, pid, model_pid):
        pids = (pid, model_pid, os.getpid())
        cpu_before, wall_before = [cpu_seconds(p) for p in pids], time.monotonic()
        direct, served, failed = asyncio.run(
            _load_and_probe(direct_url, served_url, streams, probes)
        )
        wall = time.monotonic() - wall_before
        busy, model_busy, load_busy = (
            (cpu_seconds(p) - before) / wall for p, before in zip(pids, cpu_before, strict=True)
        )
    if not direct or not served:
        return Measured(skipped="no probe got a first token")
    p99_direct, p99_served = percentile(direct, 0.99), percentile(served, 0.99)
    per_chunk = busy / (streams * LOAD_RATE) * 1e6
    verdict: dict[str, str] = {}
    if streams < TARGET_STREAMS:
        verdict["verdict"] = (
            f"**not measured at {TARGET_STREAMS:,} streams**: {streams} on {cores} cores "
            f"({per_chunk:.0f} µs of proxy CPU per chunk at this rate: {TARGET_STREAMS:,} "
            f"streams are {TARGET_STREAMS * LOAD_RATE * per_chunk / 1e6:.1f} cores of work, "
            f"one process carries about {int(1e6 / per_chunk / LOAD_RATE)})"
        )
    return Measured(
        [p99_served - p99_direct],
        {
            **verdict,
            "streams": streams,
            "probes": len(served),
            "p99_direct_ms": round(p99_direct, 2),
            "p99_served_ms": round(p99_served, 2),
            "p50_direct_ms": round(statistics.median(direct), 2),
            "p50_served_ms": round(statistics.median(served), 2),
            "background_failed": failed,
            "proxy_cpu_busy": round(busy, 2),
            "model_cpu_busy": round(model_busy, 2),
            "load_cpu_busy": round(load_busy, 2),
            "proxy_cpu_us_per_chunk": round(per_chunk, 1),
        },
    )


def measure_serve(mode: str, args: argparse.Namespace) -> Measured:
    """Measure one of the proxy rows; see the module docstring."""
    if mode == "ttft":
        return _ttft_row(args)
    if mode == "ttft_p99":
        return _ttft_p99_row(args)
    return _proxy(mode, args)
