"""Python and C calls per relayed chunk (or per request) in ``rxllm serve``, counted by cProfile.

At a real token rate a chunk's cost in ``rxllm serve`` is mostly the Python
calls it goes through, from the upstream's read to the client's write (the
profile in ``bench/README.md``); each one also touches its stream's own
objects, cold in the cache by the time the stream's next chunk comes. This
counts them: the server runs under ``cProfile`` twice, relaying ``--streams``
concurrent streams of ``--short`` and then of ``--long`` tokens from the light
model (:mod:`bench.light_load`, each token in its own socket read), and the
difference of the two call counts, function by function, over the difference
in chunks is what one chunk calls. Start-up, shutdown and each stream's
set-up cancel out. Counts do not move with the machine's load, so a change
on the hot path can be judged in any hour; cProfile's own times are not the
server's and are not shown.

``--requests`` counts per request instead: ``N`` and then ``2 N`` streamed
requests one after another, each a two-word answer.

    python -m bench.call_count                         # per chunk, store on
    python -m bench.call_count --no-store --top 60
    python -m bench.call_count --requests 200          # per request
"""

from __future__ import annotations

import argparse
import asyncio
import pstats
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, free_port, scratch_dir, start_process, stop_process
from bench.light_load import read_stream, request_bytes
from bench.serve import _serve_command

__all__ = ["counts", "main", "per_unit"]

Key = tuple[str, str]  # (where: a file, or "C" for a built-in; the function's name)

_MODEL = "load"


def counts(profile: Path) -> Counter[Key]:
    """Calls per function in a cProfile output file, keyed by its file and name."""
    out: Counter[Key] = Counter()
    table: dict[tuple[str, int, str], tuple[Any, ...]] = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    root = f"{ROOT}/"
    for (path, _line, name), (_primitive, calls, *_times) in table.items():
        where = "C" if path == "~" else path.split("site-packages/")[-1].removeprefix(root)
        out[where, name] += calls
    return out


def per_unit(short: Counter[Key], long: Counter[Key], units: int) -> dict[Key, float]:
    """``(long - short) / units`` per function: what one more unit (a chunk, a request) calls."""
    return {key: (long[key] - short.get(key, 0)) / units for key in long}


def _serve(port: int, upstream_port: int, logs: Path, profile: Path, store: bool) -> list[str]:
    """The benchmarks' ``rxllm serve`` command, run under cProfile."""
    python, *rest = _serve_command(port, f"http://127.0.0.1:{upstream_port}/v1", logs, store=store)
    return [python, "-m", "cProfile", "-o", str(profile), *rest]


async def _streams(port: int, streams: int, tokens: int, rate: float) -> None:
    words = " ".join(f"w{i}" for i in range(tokens))
    body = {
        "model": _MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "mock": {"text": words, "interval": 1.0 / rate},
    }
    request = request_bytes("127.0.0.1", port, "/v1/chat/completions", body)
    await asyncio.gather(*(read_stream("127.0.0.1", port, request) for _ in range(streams)))


async def _requests(port: int, n: int) -> None:
    body = {
        "model": _MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "mock": {"text": "two words", "interval": 0.0},
    }
    request = request_bytes("127.0.0.1", port, "/v1/chat/completions", body)
    for _ in range(n):
        await read_stream("127.0.0.1", port, request)


Load = Callable[[int], Coroutine[Any, Any, None]]
"""What a run sends through the server, given its port."""


def _profiled(load: Load, logs: Path, name: str, model_port: int, store: bool) -> Counter[Key]:
    """Run ``rxllm serve`` under cProfile through ``load``; its calls per function."""
    port = free_port()
    profile = logs / f"{name}.prof"
    server = start_process(
        _serve(port, model_port, logs, profile, store), None, port, logs / f"{name}.log"
    )
    try:
        asyncio.run(load(port))
    finally:
        server.send_signal(signal.SIGINT)  # a clean exit: cProfile writes its file
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            stop_process(server)
    return counts(profile)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.call_count", description=__doc__)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--short", type=int, default=20)
    parser.add_argument("--long", type=int, default=120)
    parser.add_argument("--rate", type=float, default=20.0, help="tokens/s of each stream")
    parser.add_argument("--requests", type=int, default=0, help="count per request instead")
    parser.add_argument("--no-store", action="store_true")
    parser.add_argument("--top", type=int, default=40, help="functions listed (most calls first)")
    args = parser.parse_args(argv)
    logs = scratch_dir("rxllm-bench-calls-")
    model_port = free_port()
    model_cmd = [sys.executable, "-m", "bench.light_load", str(model_port)]
    model = start_process(model_cmd, None, model_port, logs / "model.log")
    store = not args.no_store
    try:
        if args.requests:
            n = args.requests
            a = _profiled(lambda p: _requests(p, n), logs, "a", model_port, store)
            b = _profiled(lambda p: _requests(p, 2 * n), logs, "b", model_port, store)
            unit, units = "request", n
        else:
            s, r = args.streams, args.rate
            a = _profiled(lambda p: _streams(p, s, args.short, r), logs, "a", model_port, store)
            b = _profiled(lambda p: _streams(p, s, args.long, r), logs, "b", model_port, store)
            unit, units = "chunk", s * (args.long - args.short)
    finally:
        stop_process(model)
    each = per_unit(a, b, units)
    python = sum(v for (where, _), v in each.items() if where != "C")
    builtin = sum(v for (where, _), v in each.items() if where == "C")
    print(f"per {unit}: {python:.1f} Python calls, {builtin:.1f} C calls ({store=})")
    for (where, name), v in sorted(each.items(), key=lambda kv: -kv[1])[: args.top]:
        if v >= 0.05:
            print(f"{v:8.2f}  {where}:{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
