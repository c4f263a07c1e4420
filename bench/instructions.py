"""Instructions per relayed chunk, counted by valgrind: a per-chunk cost that load does not move.

CPU time per chunk (:mod:`bench.real_rate`) is what matters, but on a
machine shared with other work it moves from run to run. ``valgrind
--tool=callgrind`` counts the instructions a process executes instead: the
same for the same program and input whatever else runs. Each proxy is run
twice under callgrind, relaying ``--streams`` streams of ``--short`` and
then of ``--long`` tokens at ``--rate`` tokens/s from the light model
(:mod:`bench.light_load`), each chunk alone in its socket read (the rate is
low enough for the proxy to keep up at valgrind's speed); the difference of
the two totals over the difference in chunks is the proxy's instructions
per chunk, its start, its shutdown and each stream's setup cancelled out.
Instructions are not time (a cache miss or a system call costs more than
an instruction), so this cross-checks the CPU rows, it does not replace them.

    python -m bench.instructions --proxies relay,rxllm,rxllm_nostore

Needs ``valgrind`` on ``PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import MESSAGES, MODEL, free_port, scratch_dir, start_process, stop_process

__all__ = ["main", "measure"]


def _command(kind: str, port: int, upstream_port: int, logs: Path) -> list[str]:
    if kind == "relay":
        return [sys.executable, "-m", "bench.relay", str(port), str(upstream_port)]
    from bench.serve import _serve_command

    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    return _serve_command(port, upstream, logs, store=kind != "rxllm_nostore")


async def _relay_streams(port: int, streams: int, tokens: int, rate: float) -> None:
    from bench.real_rate import _request, _Words

    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "mock": {"text": " ".join(f"word{i}" for i in range(tokens)), "interval": 1.0 / rate},
    }
    request = _request(port, "/v1/chat/completions", body, {})
    loop = asyncio.get_running_loop()
    counter = [0]

    async def one(delay: float) -> None:
        await asyncio.sleep(delay)
        done: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.create_connection(
            lambda: _Words(counter, done), "127.0.0.1", port
        )
        try:
            transport.write(request)
            await done
        finally:
            transport.close()

    await asyncio.gather(*(one(i / rate / streams) for i in range(streams)))
    if counter[0] != streams * tokens:
        raise RuntimeError(f"relayed {counter[0]} words of {streams * tokens}")


def _instructions(out_file: Path) -> int:
    for line in out_file.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out_file}")


def _one(kind: str, model_port: int, streams: int, tokens: int, rate: float, logs: Path) -> int:
    port = free_port()
    out_file = logs / f"callgrind.{kind}.{tokens}"
    (logs / "bench.db").unlink(missing_ok=True)
    valgrind = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
        "--dump-instr=no", "--trace-children=no",
    ]  # fmt: skip
    proc = start_process(
        valgrind + _command(kind, port, model_port, logs), None, port, logs / f"{kind}.log", 600
    )
    try:
        # One warm-up stream (in both runs: it cancels out), retried while the server
        # under valgrind is still starting up behind its open port.
        deadline = time.monotonic() + 600
        while True:
            try:
                asyncio.run(_relay_streams(port, 1, 2, rate))
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(2.0)
        asyncio.run(_relay_streams(port, streams, tokens, rate))
        time.sleep(1.0)  # the store's last flush
    finally:
        stop_process(proc)
    return _instructions(out_file)


def measure(
    kinds: list[str], streams: int, short: int, long: int, rate: float
) -> dict[str, dict[str, Any]]:
    """Instructions per chunk of each proxy in ``kinds`` (see the module)."""
    logs = scratch_dir("rxllm-bench-instr-")
    model_port = free_port()
    model = start_process(
        [sys.executable, "-m", "bench.light_load", str(model_port)],
        None,
        model_port,
        logs / "model.log",
    )
    out: dict[str, dict[str, Any]] = {}
    try:
        for kind in kinds:
            a = _one(kind, model_port, streams, short, rate, logs)
            b = _one(kind, model_port, streams, long, rate, logs)
            out[kind] = {
                "instructions_per_chunk": (b - a) / (streams * (long - short)),
                "short_total": a,
                "long_total": b,
            }
            print(f"  {kind:15s} {out[kind]['instructions_per_chunk']:10.0f} instr/chunk",
                  file=sys.stderr, flush=True)  # fmt: skip
    finally:
        stop_process(model)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--proxies", default="relay,rxllm,rxllm_nostore")
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--short", type=int, default=50)
    parser.add_argument("--long", type=int, default=250)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    results = measure(args.proxies.split(","), args.streams, args.short, args.long, args.rate)
    relay = results.get("relay", {}).get("instructions_per_chunk")
    for kind, r in results.items():
        ratio = f"  {r['instructions_per_chunk'] / relay:.2f}x the relay" if relay else ""
        print(f"{kind:15s} {r['instructions_per_chunk']:10.0f} instructions/chunk{ratio}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
