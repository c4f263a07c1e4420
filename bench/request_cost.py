"""CPU per request: what a proxy spends to take a request, open its upstream and start the answer.

At a real token rate the time to first token through a proxy is its own
per-request work (parse, route, validate, build the pipeline, send the
upstream request, read its headers) stretched by the load it shares the
CPU with, so this is the figure that TTFT under load follows. Each proxy
(as :mod:`bench.real_rate` starts it, against the light model) answers
``--requests`` streamed requests one after another, each on a new
connection, each a two-word answer sent at once; its CPU (all its threads,
from ``/proc``) over those requests, divided by them, is the row. Median
latency of a request beside it. Three rounds per proxy after a warm-up.

    python -m bench.request_cost --proxies relay,rxllm_nostore,rxllm
    python -m bench.request_cost --proxies rxllm_nostore --profile DIR   # py-spy, raw stacks
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    MODEL,
    cpu_seconds,
    free_port,
    percentile,
    scratch_dir,
    start_process,
    stop_process,
)
from bench.light_load import read_stream, request_bytes
from bench.real_rate import _proxy

WARM_UP = 50
BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "mock": {"text": "two words", "interval": 0.0},
}


def _request(port: int, headers: dict[str, str]) -> bytes:
    head, rest = request_bytes("127.0.0.1", port, "/v1/chat/completions", BODY).split(b"\r\n", 1)
    extra = b"".join(f"{name}: {value}\r\n".encode() for name, value in headers.items())
    return head + b"\r\n" + extra + rest


async def _round(port: int, request: bytes, n: int, pids: list[int]) -> tuple[float, float]:
    """CPU ms per request and median latency ms over ``n`` requests, one at a time."""
    before = sum(cpu_seconds(pid) for pid in pids)
    latencies = []
    for _ in range(n):
        start = time.perf_counter()
        await read_stream("127.0.0.1", port, request)
        latencies.append(time.perf_counter() - start)
    cpu = sum(cpu_seconds(pid) for pid in pids) - before
    return cpu / n * 1e3, percentile(latencies, 0.5) * 1e3


async def _measure(port: int, request: bytes, n: int, rounds: int, pids: list[int]) -> list[str]:
    for _ in range(WARM_UP):
        await read_stream("127.0.0.1", port, request)
    return [
        "%.2f ms CPU, %.2f ms p50" % await _round(port, request, n, pids) for _ in range(rounds)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.request_cost", description=__doc__)
    parser.add_argument("--proxies", default="relay,rxllm_nostore,rxllm")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=Path, default=None, help="a folder for py-spy's stacks")
    args = parser.parse_args(argv)
    logs = scratch_dir("request-cost-")
    model_port = free_port()
    model_cmd = [sys.executable, "-m", "bench.light_load", str(model_port)]
    model = start_process(model_cmd, None, model_port, logs / "model.log")
    try:
        for kind in args.proxies.split(","):
            with _proxy(kind, model_port, None, logs) as (port, pids, headers):
                spy = None
                if args.profile is not None:
                    args.profile.mkdir(parents=True, exist_ok=True)
                    out = args.profile / f"{kind}.txt"
                    spy = subprocess.Popen(
                        ["py-spy", "record", "--pid", str(pids[0]), "--rate", "1000",
                         "--nonblocking", "--format", "raw", "--output", str(out)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                    time.sleep(1)
                rounds = asyncio.run(
                    _measure(port, _request(port, headers), args.requests, args.rounds, pids)
                )
                if spy is not None:
                    spy.send_signal(2)
                    spy.wait()
                print(f"{kind:15s} " + " | ".join(rounds), flush=True)
    finally:
        stop_process(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
