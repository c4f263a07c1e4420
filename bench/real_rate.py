"""Proxies at a real token rate: N streams of R tokens/s, each chunk alone in its socket read.

The rows of ``bench.run`` whose ids start with ``rate.``. For one load
(``--streams`` x ``--rate``), every proxy in ``--proxies`` is measured in
turn, round after round (round 1 of every proxy, then round 2, ...), so a
burst of other work on the machine lands on one sample of each rather than
on all the samples of one. One measurement:

1. The light model (:mod:`bench.light_load`) and the proxy start, the model
   on one core with this process (the load), the proxy alone on the other.
2. ``streams - 1`` background streams open through the proxy over
   ``RAMP`` seconds, from raw-socket clients that count the words of the
   answer as it arrives and drop it (each token is one word, one chunk of
   the model, one socket read at these rates).
3. Once they all run, the window opens: probe pairs, one at a time (one
   stream straight to the model, one through the proxy, each timed from
   its request to the first byte of its first token), for at least
   ``WINDOW`` seconds. The proxy's CPU time (user + system, from
   ``/proc``, all its processes) and the words delivered are read at both
   ends of the window.

Reported per proxy: CPU per relayed chunk (CPU seconds / words delivered in
the window), TTFT p99 through the proxy minus p99 straight to the model,
and streams per core (``1 / (cpu per chunk x rate)``). ``client.*`` rows
measure, instead of a proxy, a process reading the same load straight from
the model through rxllm's source on one of three HTTP clients (its own CPU
per chunk: the part the HTTP client decides).

    python -m bench.real_rate --streams 200 --rate 20 --proxies relay,nginx,rxllm
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    MESSAGES,
    MODEL,
    Cores,
    Measured,
    cpu_seconds,
    free_port,
    percentile,
    python_env,
    scratch_dir,
    start_process,
    stop_process,
    system_cpu_seconds,
    thread_cpu_seconds,
)

__all__ = ["CLIENTS", "PROXIES", "main", "measure", "paired_ratio"]

HERE = Path(__file__).resolve().parent

PROXIES = {
    "relay": "a minimal Python relay (uvicorn + uvloop + h11, bytes forwarded)",
    "nginx": "nginx (`proxy_buffering off`)",
    "rxllm": "`rxllm serve` (SQLite store and metrics on, defaults)",
    "rxllm_nostore": "`rxllm serve --no-store`",
    "litellm": "LiteLLM proxy (defaults)",
}
CLIENTS = {
    "client_ours": "rxllm's source on `http_client()` (our httpcore2 asyncio backend)",
    "client_sdk": "rxllm's source on the openai SDK's default client (httpx2, anyio backend)",
    "client_aiohttp": "rxllm's source on `openai.DefaultAioHttpClient` (aiohttp)",
}
RAMP = 6.0  # seconds over which the background streams open
PROFILE: Path | None = None  # --profile: py-spy the proxy's first process during each window
SETTLE = 2.0  # seconds after the ramp before the window opens
WINDOW = 10.0  # the window's least length, seconds
PROBE_PAUSE = 0.05  # seconds between two probe pairs
PROBE_FIRST = 0.0  # seconds the model takes before a probe's first token (bench.ttft_path)
PROBE_TIMEOUT = 10.0  # seconds: a probe answered later counts as this late
MAX_LATE = 3  # late probes after which the window closes (the proxy is saturated)


# -- the load: raw-socket clients --------------------------------------------------------


def _quiet(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception retrieved (a reader that stopped waiting for it)."""
    if not future.cancelled():
        future.exception()


class _Words(asyncio.Protocol):
    """Reads a chunked answer, counts its words into ``counter``, drops it."""

    def __init__(self, counter: list[int], done: asyncio.Future[None]) -> None:
        self.counter = counter
        self.done = done
        done.add_done_callback(_quiet)
        self.tail = b""

    def data_received(self, data: bytes) -> None:
        joined = self.tail + data
        self.counter[0] += joined.count(b"word")
        self.tail = joined[-3:]  # too short to hold a word: one split between reads counts once
        if joined.endswith(b"0\r\n\r\n") and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed before the end"))


class _First(asyncio.Protocol):
    """A probe's reader: resolves ``first`` with the arrival of the first ``probe`` token."""

    def __init__(self, first: asyncio.Future[float], done: asyncio.Future[None]) -> None:
        self.first = first
        self.done = done
        self.seen = b""
        first.add_done_callback(_quiet)
        done.add_done_callback(_quiet)

    def data_received(self, data: bytes) -> None:
        if not self.first.done():
            self.seen += data
            if b"probe" in self.seen:
                self.first.set_result(time.perf_counter())
        if data.endswith(b"0\r\n\r\n") and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.first, self.done):
            if not future.done():
                future.set_exception(exc or ConnectionError("closed before the end"))


def _request(port: int, path: str, body: dict[str, Any], headers: dict[str, str]) -> bytes:
    data = json.dumps(body).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"accept: text/event-stream\r\n{extra}content-length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


async def _probe(port: int, request: bytes) -> float:
    """Milliseconds from sending ``request`` on a new connection to the first token."""
    loop = asyncio.get_running_loop()
    first: asyncio.Future[float] = loop.create_future()
    done: asyncio.Future[None] = loop.create_future()
    start = time.perf_counter()
    transport, _ = await loop.create_connection(lambda: _First(first, done), "127.0.0.1", port)
    try:
        transport.write(request)
        arrived = await asyncio.wait_for(first, PROBE_TIMEOUT)
        await asyncio.wait_for(done, PROBE_TIMEOUT)
    finally:
        transport.close()
    return (arrived - start) * 1000


async def _load(
    model_port: int,
    proxy_port: int,
    headers: dict[str, str],
    streams: int,
    rate: float,
    pids: list[int],
    probes: int,
) -> dict[str, Any]:
    """Run the load through the proxy and measure one window (see the module)."""
    loop = asyncio.get_running_loop()
    words = int((RAMP + SETTLE + WINDOW + probes * 0.4 + 60) * rate)
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        # Words that differ: LiteLLM ends a stream that repeats one chunk over and over.
        "mock": {"text": " ".join(f"word{i % 997}" for i in range(words)), "interval": 1.0 / rate},
    }
    probe_body = {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "mock": {"text": "probe answer", "interval": 1.0 / rate, "first": PROBE_FIRST},
    }
    path = "/v1/chat/completions"
    load_request = _request(proxy_port, path, body, headers)
    counter = [0]
    transports: list[asyncio.BaseTransport] = []
    dones: list[asyncio.Future[None]] = []

    async def open_one(delay: float) -> None:
        await asyncio.sleep(delay)
        done: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.create_connection(
            lambda: _Words(counter, done), "127.0.0.1", proxy_port
        )
        transport.write(load_request)
        transports.append(transport)
        dones.append(done)

    background = streams - 1
    await asyncio.gather(*(open_one(i * RAMP / background) for i in range(background)))
    await asyncio.sleep(SETTLE)
    direct_request = _request(model_port, path, probe_body, {})
    served_request = _request(proxy_port, path, probe_body, headers)
    spy = _profile(pids[0])
    cpu0, words0, t0 = sum(cpu_seconds(p) for p in pids), counter[0], time.monotonic()
    threads0 = sum(thread_cpu_seconds(p) for p in pids)
    system0 = sum(system_cpu_seconds(p) for p in pids)
    direct: list[float] = []
    served: list[float] = []
    i = 0
    late = 0
    while (i < probes or time.monotonic() - t0 < WINDOW) and late < MAX_LATE:
        for port, request, out in (
            (model_port, direct_request, direct),
            (proxy_port, served_request, served),
        ):
            try:
                out.append(await _probe(port, request))
            except (TimeoutError, ConnectionError):  # a saturated proxy: counted as late
                out.append(PROBE_TIMEOUT * 1000)
                late += 1
        await asyncio.sleep(PROBE_PAUSE)
        i += 1
    cpu1, words1, t1 = sum(cpu_seconds(p) for p in pids), counter[0], time.monotonic()
    threads1 = sum(thread_cpu_seconds(p) for p in pids)
    system1 = sum(system_cpu_seconds(p) for p in pids)
    if spy is not None:
        spy.wait()
    failed = sum(1 for d in dones if d.done())
    for transport in transports:
        transport.close()
    await asyncio.gather(*dones, return_exceptions=True)
    chunks = words1 - words0
    expected = background * rate * (t1 - t0)
    return {
        "us_per_chunk": (cpu1 - cpu0) / max(chunks, 1) * 1e6,
        "cpu_busy": (cpu1 - cpu0) / (t1 - t0),
        # Of which threads other than the main one (the store's SQLite thread).
        "us_per_chunk_threads": (threads1 - threads0) / max(chunks, 1) * 1e6,
        # Of which the kernel's (reads, writes, wake-ups): the rest is the proxy's own code.
        "us_per_chunk_system": (system1 - system0) / max(chunks, 1) * 1e6,
        "delivered": chunks / expected if expected else 0.0,
        "ttft_p99_over_direct_ms": percentile(served, 0.99) - percentile(direct, 0.99),
        "p99_direct_ms": percentile(direct, 0.99),
        "p99_served_ms": percentile(served, 0.99),
        "p50_served_ms": percentile(served, 0.5),
        "ttft_p50_over_direct_ms": percentile(served, 0.5) - percentile(direct, 0.5),
        "probes": len(served),
        "window_s": t1 - t0,
        "background_ended_early": failed,
        "probes_late": late,
    }


def _profile(pid: int) -> subprocess.Popen[bytes] | None:
    """With ``--profile DIR``: py-spy samples ``pid`` for ``WINDOW`` seconds (collapsed stacks)."""
    if PROFILE is None:
        return None
    PROFILE.mkdir(parents=True, exist_ok=True)
    out = PROFILE / f"{pid}.txt"
    command = [
        "py-spy", "record", "--pid", str(pid), "--duration", str(int(WINDOW)),
        "--rate", "250", "--nonblocking", "--format", "raw", "--output", str(out),
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- the proxies -------------------------------------------------------------------------


NGINX_CONFIG = """\
{user}
worker_processes 1;
worker_rlimit_nofile 16384;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream model {{ server 127.0.0.1:{upstream}; keepalive 512; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    """Debian's nginx, on ``PATH`` or in ``/usr/sbin``."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def _litellm() -> str | None:
    from bench.serve import _litellm_executable

    return _litellm_executable()


NICE = 0
"""Niceness of the proxy, the model and the load (``--nice``; below 0 needs privileges)."""


def _renice(pid: int) -> None:
    """Give ``pid`` (every thread it has now) the niceness :data:`NICE`."""
    if NICE:
        for task in Path(f"/proc/{pid}/task").iterdir():
            os.setpriority(os.PRIO_PROCESS, int(task.name), NICE)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def unavailable(kind: str) -> str | None:
    """Why ``kind`` can't be measured here, or ``None``."""
    if kind == "nginx" and nginx_binary() is None:
        return "nginx is not installed"
    if kind == "litellm" and _litellm() is None:
        return "LiteLLM's proxy is not installed (bench/.venv-litellm with litellm[proxy])"
    if kind == "client_aiohttp" and importlib.util.find_spec("aiohttp") is None:
        return "aiohttp is not installed (the openai[aiohttp] extra)"
    return None


@contextlib.contextmanager
def _proxy(
    kind: str, upstream_port: int, cpu: int | None, logs: Path
) -> Iterator[tuple[int, list[int], dict[str, str]]]:
    """Start one proxy; yield its port, the pids to measure and the headers it needs."""
    port = free_port()
    headers: dict[str, str] = {}
    env: dict[str, str] = {}
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    if kind == "relay":
        command = [sys.executable, "-m", "bench.relay", str(port), str(upstream_port)]
    elif kind in ("rxllm", "rxllm_nostore"):
        from bench.serve import _serve_command

        store = kind == "rxllm"
        command = _serve_command(port, upstream, logs, store=store)
        if store:
            (logs / "bench.db").unlink(missing_ok=True)
    elif kind == "nginx":
        binary = nginx_binary()
        assert binary is not None
        user = "user root;" if os.geteuid() == 0 else ""
        config = NGINX_CONFIG.format(user=user, tmp=logs, port=port, upstream=upstream_port)
        (logs / "nginx.conf").write_text(config)
        command = [binary, "-c", str(logs / "nginx.conf"), "-p", str(logs)]
    elif kind == "litellm":
        litellm = _litellm()
        assert litellm is not None
        command = [
            litellm, "--model", f"openai/{MODEL}", "--api_base", upstream,
            "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
        key = "sk-bench-" + secrets.token_hex(16)
        env = {"LITELLM_MASTER_KEY": key}
        headers = {"authorization": f"Bearer {key}"}
    else:
        raise ValueError(kind)
    proc = start_process(command, cpu, port, logs / f"{kind}.log", 180, env)
    try:
        pids = [proc.pid, *_children(proc.pid)]
        for pid in pids:
            _renice(pid)
        yield port, pids, headers
    finally:
        stop_process(proc)


# -- the client rows ---------------------------------------------------------------------


def _client(kind: str) -> Any:
    if kind == "client_ours":
        from pipeline.runtime.http_backend import http_client

        return http_client()
    if kind == "client_sdk":
        from openai import DefaultAsyncHttpxClient

        return DefaultAsyncHttpxClient()
    from openai import DefaultAioHttpClient

    return DefaultAioHttpClient()


async def _client_load(kind: str, model_port: int, streams: int, rate: float) -> dict[str, Any]:
    """This process reads ``streams`` streams through rxllm's source; its CPU per chunk."""
    from openai import AsyncOpenAI

    from pipeline.runtime.sources import chat_completions

    words = int((RAMP + SETTLE + WINDOW + 30) * rate)
    client = AsyncOpenAI(
        base_url=f"http://127.0.0.1:{model_port}/v1",
        api_key="bench",
        http_client=_client(kind),
        max_retries=0,
    )
    counter = [0]
    ended: list[BaseException | None] = []
    mock = {"text": " ".join(["word"] * words), "interval": 1.0 / rate}

    def on_next(message: Any) -> None:
        counter[0] += 1

    subscriptions = []
    for _ in range(streams):
        source = chat_completions(client, model=MODEL, messages=MESSAGES, mock=mock)
        subscriptions.append(source.subscribe(on_next, ended.append, lambda: ended.append(None)))
        await asyncio.sleep(RAMP / streams)
    await asyncio.sleep(SETTLE)
    cpu0, words0, t0 = time.process_time(), counter[0], time.monotonic()
    await asyncio.sleep(WINDOW)
    cpu1, words1, t1 = time.process_time(), counter[0], time.monotonic()
    for subscription in subscriptions:
        subscription.dispose()
    await asyncio.sleep(0.2)
    await client.close()
    chunks = words1 - words0
    expected = streams * rate * (t1 - t0)
    errors = [repr(e) for e in ended if e is not None]
    return {
        "us_per_chunk": (cpu1 - cpu0) / max(chunks, 1) * 1e6,
        "cpu_busy": (cpu1 - cpu0) / (t1 - t0),
        "delivered": chunks / expected if expected else 0.0,
        "window_s": t1 - t0,
        "background_ended_early": len(ended),
        **({"error": errors[0]} if errors else {}),
    }


def _client_worker(argv: list[str]) -> None:
    """``--client-worker KIND MODEL_PORT STREAMS RATE``: one client sample, as JSON."""
    import uvloop

    global NICE
    kind, port, streams, rate = argv[0], int(argv[1]), int(argv[2]), float(argv[3])
    NICE = int(os.environ.get("RXLLM_BENCH_NICE", "0"))
    _renice(os.getpid())
    result = uvloop.run(_client_load(kind, port, streams, rate))
    print(json.dumps(result), flush=True)


def _client_sample(kind: str, model_port: int, streams: int, rate: float, cpu: int | None) -> Any:
    from bench.common import pinned

    command = [
        sys.executable, "-m", "bench.real_rate", "--client-worker", kind, str(model_port),
        str(streams), str(rate),
    ]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**python_env(), "RXLLM_BENCH_NICE": str(NICE)},
        cwd=HERE.parent,
        timeout=300,
        preexec_fn=pinned(cpu),
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError("client worker failed: " + " | ".join(tail))
    return json.loads(lines[-1])


# -- one load, every proxy ---------------------------------------------------------------


def measure(
    kinds: list[str], streams: int, rate: float, rounds: int, probes: int, cores: Cores
) -> dict[str, Measured]:
    """Measure every kind of ``kinds`` at ``streams`` x ``rate``, interleaved over ``rounds``."""
    import resource

    import uvloop

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 6 * streams + 256
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    if cores.server is not None:  # the load shares the model's core
        os.sched_setaffinity(0, {cores.server})
    logs = scratch_dir("rxllm-bench-rate-")
    model_port = free_port()
    model_cmd = [sys.executable, "-m", "bench.light_load", str(model_port)]
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    skipped = {k: why for k in kinds if (why := unavailable(k))}
    failures: dict[str, list[str]] = {}
    model = start_process(model_cmd, cores.server, model_port, logs / "model.log")
    _renice(model.pid)
    _renice(os.getpid())
    try:
        for round_ in range(rounds):
            for kind in kinds:
                if kind in skipped:
                    continue
                load = os.getloadavg()[0]
                try:
                    if kind.startswith("client_"):
                        sample = _client_sample(kind, model_port, streams, rate, cores.client)
                    else:
                        with _proxy(kind, model_port, cores.client, logs) as (port, pids, hd):
                            sample = uvloop.run(
                                _load(model_port, port, hd, streams, rate, pids, probes)
                            )
                except Exception as exc:  # a proxy that fails is a row that says so
                    why = f"failed: {type(exc).__name__}: {exc}"[:300]
                    failures.setdefault(kind, []).append(why)
                    print(f"  round {round_ + 1} {kind:15s} {why}", file=sys.stderr, flush=True)
                    continue
                sample["load_average"] = load
                sample["round"] = round_
                results[kind].append(sample)
                print(
                    f"  round {round_ + 1} {kind:15s} {sample['us_per_chunk']:7.1f} µs/chunk"
                    f"  ttft p99 +{sample.get('ttft_p99_over_direct_ms', float('nan')):.1f} ms"
                    f"  delivered {sample['delivered']:.2f}  load {load:.1f}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        stop_process(model)
    out: dict[str, Measured] = {}
    for kind in kinds:
        samples = results[kind]
        if not samples:
            out[kind] = Measured(skipped=skipped.get(kind) or failures[kind][0])
            continue
        out[kind] = _summary(samples, rate)
        if kind != "relay" and results.get("relay"):
            out[kind].extra.update(paired_ratio(samples, results["relay"]))
        if kind in failures:
            out[kind].extra["failed_rounds"] = f"{len(failures[kind])}: {failures[kind][0]}"
    return out


def paired_ratio(samples: list[dict[str, Any]], relay: list[dict[str, Any]]) -> dict[str, Any]:
    """The proxy's CPU per chunk over the relay's, round by round, and their median.

    The rounds interleave the proxies, so a round's two samples ran minutes
    apart, in the same state of the machine: their ratio moves less with the
    hour than the ratio of the two medians (rounds without both are left out).
    """
    import statistics

    relay_by_round = {s["round"]: s["us_per_chunk"] for s in relay}
    ratios = [
        s["us_per_chunk"] / relay_by_round[s["round"]]
        for s in samples
        if relay_by_round.get(s["round"])
    ]
    if not ratios:
        return {}
    return {
        "x_relay_paired": round(statistics.median(ratios), 3),
        "x_relay_by_round": "/".join(f"{r:.2f}" for r in ratios),
    }


def _summary(samples: list[dict[str, Any]], rate: float) -> Measured:
    import statistics

    us = [s["us_per_chunk"] for s in samples]
    extra: dict[str, Any] = {
        "streams_per_core": int(1e6 / (statistics.median(us) * rate)),
        "delivered": round(min(s["delivered"] for s in samples), 3),
        "load_avg": "/".join(f"{s['load_average']:.1f}" for s in samples),
    }
    ttft = [s["ttft_p99_over_direct_ms"] for s in samples if "ttft_p99_over_direct_ms" in s]
    if ttft:
        extra["ttft_p99_over_direct_ms"] = round(statistics.median(ttft), 2)
        extra["ttft_p99_samples"] = "/".join(f"{v:.1f}" for v in ttft)
        p50 = [s["ttft_p50_over_direct_ms"] for s in samples]
        extra["ttft_p50_over_direct_ms"] = round(statistics.median(p50), 2)
    late = sum(s.get("probes_late", 0) for s in samples)
    if late:
        extra["probes_late"] = f"{late} (counted as {PROBE_TIMEOUT:g} s: the proxy is saturated)"
    extra["proxy_cpu_busy"] = "/".join(f"{s['cpu_busy']:.2f}" for s in samples)
    system = [s["us_per_chunk_system"] for s in samples if "us_per_chunk_system" in s]
    if system:
        extra["us_per_chunk_system"] = "/".join(f"{v:.1f}" for v in system)
    threads = [s["us_per_chunk_threads"] for s in samples if "us_per_chunk_threads" in s]
    if threads and max(threads) > 0:
        extra["us_per_chunk_other_threads"] = "/".join(f"{v:.1f}" for v in threads)
    ended = sum(s["background_ended_early"] for s in samples)
    if ended:
        extra["streams_ended_early"] = ended
    return Measured(us, extra)


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["--client-worker"]:
        _client_worker(args_list[1:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.real_rate", description=__doc__)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--proxies", default=",".join([*PROXIES, *CLIENTS]))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the measured processes and the load: on a machine shared with "
        "other work, below 0 keeps them from being starved (needs privileges)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="a folder: py-spy (on PATH) samples each proxy during its window, collapsed stacks",
    )
    args = parser.parse_args(args_list)
    global NICE, PROFILE
    NICE = args.nice
    PROFILE = args.profile
    kinds = args.proxies.split(",")
    unknown = [k for k in kinds if k not in PROXIES and k not in CLIENTS]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    cores = Cores.plan(not args.no_pin)
    results = measure(kinds, args.streams, args.rate, args.rounds, args.probes, cores)
    if args.json:
        print(json.dumps({k: json.loads(m.to_json()) for k, m in results.items()}), flush=True)
    else:
        for kind, m in results.items():
            if m.skipped:
                print(f"{kind:15s} skipped: {m.skipped}")
            else:
                print(f"{kind:15s} {m.median:7.1f} µs/chunk  {m.extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
