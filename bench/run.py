"""rxllm's benchmark: one command, every row beside its peers, measured in the same run.

    .venv/bin/python -m bench.run            # everything, about 5 minutes on 2 cores
    .venv/bin/python -m bench.run --quick    # fewer chunks and repetitions, about 1 minute
    .venv/bin/python -m bench.run --only rxllm.text,floor.lines

The built-in model runs in a separate process (``pipeline.mock.serve``) on
loopback; every measured client runs in a fresh process of its own, pinned
to another core than the servers where the machine has two. Each row is run
once to warm up, then ``--repeats`` times; the table gives the median, min
and max, and the ratio of the median to the row's reference (the floor for
per-chunk rows). It prints the table and writes ``bench/results.md`` and
``bench/results.json``. See ``bench/README.md`` for what each row means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    Cores,
    Measured,
    free_port,
    mock_command,
    pinned,
    python_env,
    start_process,
    stop_process,
)

HERE = Path(__file__).resolve().parent


@dataclass
class Row:
    """One line of the table: what is measured, in which unit, against what."""

    id: str
    label: str
    kind: str  # client | linear | memory | cancel | serve
    unit: str
    params: dict[str, Any] = field(default_factory=dict)
    ref: str | None = None  # the row the ratio is taken against
    target: float | None = None  # the median must be <= target
    target_ratio: float | None = None  # the ratio must be <= target_ratio
    group: str = ""


def rows() -> list[Row]:
    text = {"tools": False}
    tools = {"tools": True}
    chunk = "µs/chunk"
    return [
        Row("floor.lines", "httpx2 `aiter_lines` (the floor)", "client", chunk,
            {"client": "floor_lines", **text}, group="text stream, client CPU per chunk"),
        Row("floor.validate", "the same + `ChatCompletionChunk.model_validate_json`", "client",
            chunk, {"client": "floor_validate", **text}, ref="floor.lines"),
        Row("sdk.iter", "openai `chat.completions.create(stream=True)`, iterated", "client",
            chunk, {"client": "sdk_iter", **text}, ref="floor.lines"),
        Row("sdk.helper", "openai `chat.completions.stream()` helper + final completion",
            "client", chunk, {"client": "sdk_helper", **text}, ref="floor.lines"),
        Row("langchain", "langchain-openai `ChatOpenAI.astream`", "client", chunk,
            {"client": "langchain", **text}, ref="floor.lines"),
        Row("litellm", "litellm `acompletion(stream=True)` (5,000 chunks)", "client", chunk,
            {"client": "litellm", "chunks": 5000, **text}, ref="floor.lines"),
        Row("rxllm.text", "**rxllm consume path** (source + operators + Accumulator)", "client",
            chunk, {"client": "rxllm", **text}, ref="floor.lines", target=20.0),
        Row("rxllm.run", "rxllm consume path + `StreamRun` multicast + async reader", "client",
            chunk, {"client": "rxllm_run", **text}, ref="floor.lines"),
        Row("floor.lines.tools", "httpx2 `aiter_lines` (the floor)", "client", chunk,
            {"client": "floor_lines", **tools}, group="tool-call stream, client CPU per chunk"),
        Row("floor.validate.tools", "the same + `ChatCompletionChunk.model_validate_json`",
            "client", chunk, {"client": "floor_validate", **tools}, ref="floor.lines.tools"),
        Row("sdk.helper.tools", "openai `.stream()` helper, strict tool (5,000 chunks)",
            "client", chunk, {"client": "sdk_helper", "chunks": 5000, **tools},
            ref="floor.lines.tools"),
        Row("rxllm.tools", "**rxllm consume path**, partial parse on every fragment", "client",
            chunk, {"client": "rxllm", **tools}, ref="floor.lines.tools", target=30.0),
        Row("rxllm.tools.validated", "the same + arguments validated (JSON schema)", "client",
            chunk, {"client": "rxllm_validated", **tools}, ref="floor.lines.tools"),
        Row("linear.tools.small", "tool-call arguments, 10 KB in 10-byte fragments", "linear",
            "µs/KB", {"stream": "tools", "size": 10 * 1024},
            group="linear cost, in process (no HTTP)"),
        Row("linear.tools.big", "tool-call arguments, 1 MB in 10-byte fragments", "linear",
            "µs/KB", {"stream": "tools", "size": 1024 * 1024}, ref="linear.tools.small",
            target_ratio=2.0),
        Row("linear.text.small", "text, 10 KB in 10-byte pieces", "linear", "µs/KB",
            {"stream": "text", "size": 10 * 1024}),
        Row("linear.text.big", "text, 1 MB in 10-byte pieces", "linear", "µs/KB",
            {"stream": "text", "size": 1024 * 1024}, ref="linear.text.small", target_ratio=2.0),
        Row("memory.httpx", "httpx2 streams read raw (the floor)", "memory", "KB/stream",
            {"mode": "httpx", "interval": 0.2},
            group="memory: RSS growth per active stream, 1,000 concurrent streams"),
        Row("memory.sdk", "openai `create(stream=True)`, iterated", "memory", "KB/stream",
            {"mode": "sdk", "interval": 0.2}, ref="memory.httpx"),
        Row("memory.source", "rxllm `chat_completions` source alone, one subscriber", "memory",
            "KB/stream", {"mode": "source", "interval": 0.2}, ref="memory.httpx"),
        Row("memory", "**rxllm**: source + chain + `StreamRun` + Accumulator", "memory",
            "KB/stream", {"mode": "rxllm", "interval": 0.2}, ref="memory.httpx", target=50.0),
        Row("cancel", "1,000 disconnects mid-stream: p99 cancel → upstream socket closed",
            "cancel", "ms", {"streams": 1000, "interval": 0.2, "spacing": 0.002}, target=100.0,
            group="cancellation (StreamRun + source + chain, mock in process)"),
        Row("serve.proxy", "`rxllm serve` relaying (store + metrics on), server CPU per chunk",
            "serve", chunk, {"mode": "proxy"}, target=40.0, group="rxllm serve"),
        Row("litellm.proxy", "LiteLLM proxy relaying, server CPU per chunk (5,000 chunks)",
            "serve", chunk, {"mode": "litellm_proxy", "chunks": 5000}, ref="serve.proxy"),
        Row("serve.ttft", "TTFT through `rxllm serve` minus direct, one stream at a time",
            "serve", "ms", {"mode": "ttft"}, target=2.0),
        Row("serve.ttft.p99", "TTFT through `rxllm serve` minus direct, p99, 1,000 streams at "
            "20 tokens/s", "serve", "ms", {"mode": "ttft_p99"}, target=20.0),
    ]  # fmt: skip


# -- the worker: one row, in its own process ----------------------------------------------


def worker(args: argparse.Namespace) -> Measured:
    row = {r.id: r for r in rows()}[args.worker]
    p = row.params
    # The slowest peers stream fewer chunks (the cost is per chunk), to keep the run short.
    args.chunks = min(args.chunks, p.get("chunks", args.chunks))
    if row.kind == "client":
        from bench.client import measure_client

        return asyncio.run(
            measure_client(p["client"], args.base_url, args.chunks, p["tools"], args.repeats)
        )
    if row.kind == "linear":
        from bench.linear import measure_linear

        size = p["size"] if not args.quick else p["size"] // 4
        return measure_linear(p["stream"], size, args.repeats)
    if row.kind == "memory":
        from bench.concurrency import measure_memory

        return asyncio.run(measure_memory(args.base_url, args.streams, p["interval"], p["mode"]))
    if row.kind == "cancel":
        from bench.concurrency import measure_cancel

        return asyncio.run(measure_cancel(args.streams, p["interval"], p["spacing"]))
    if row.kind == "serve":
        from bench.serve import measure_serve

        return measure_serve(p["mode"], args)
    raise AssertionError(row.kind)


# -- the orchestrator ---------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    from importlib import metadata

    for name in ("openai", "httpx2", "pydantic", "jiter", "reactivex", "langchain-openai",
                 "litellm"):  # fmt: skip
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def run_worker(
    row: Row, args: argparse.Namespace, base_url: str, cpu: int | None, timeout: float
) -> Measured:
    command = [
        sys.executable, "-m", "bench.run", "--worker", row.id, "--base-url", base_url,
        "--chunks", str(args.chunks), "--repeats", str(args.repeats),
        "--streams", str(args.streams), "--cores", json.dumps([args.server_cpu, args.client_cpu]),
    ] + (["--quick"] if args.quick else [])  # fmt: skip
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=python_env(),
            cwd=ROOT,
            timeout=timeout,
            preexec_fn=pinned(cpu),
        )
    except subprocess.TimeoutExpired:
        return Measured(skipped=f"timed out after {timeout:.0f} s")
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return Measured(skipped="failed: " + " | ".join(tail))
    return Measured.from_json(lines[-1])


def fmt(value: float | None) -> str:
    if value is None or value != value:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(results: list[tuple[Row, Measured]]) -> str:
    by_id = {row.id: m for row, m in results}
    out = [
        "| row | unit | median | min | max | ratio | target | |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    group = None
    for row, m in results:
        if row.group and row.group != group:
            group = row.group
            out.append(f"| *{group}* | | | | | | | |")
        if m.skipped:
            out.append(f"| {row.label} | {row.unit} | - | - | - | - | {target_text(row)} | "
                       f"skipped: {m.skipped} |")  # fmt: skip
            continue
        median = m.median
        ref = by_id.get(row.ref) if row.ref else None
        ratio = median / ref.median if ref is not None and not ref.skipped else None
        verdict = ""
        if row.target is not None:
            verdict = "met" if median <= row.target else "**not met**"
        if row.target_ratio is not None and ratio is not None:
            verdict = "met" if ratio <= row.target_ratio else "**not met**"
        notes = [verdict] if verdict else []
        notes += [f"{k}: {fmt(v) if isinstance(v, float) else v}" for k, v in m.extra.items()]
        ratio_text = f"{ratio:.2f}x" if ratio is not None else ""
        out.append(
            f"| {row.label} | {row.unit} | {fmt(median)} | {fmt(min(m.samples))} | "
            f"{fmt(max(m.samples))} | {ratio_text} | {target_text(row)} | {'; '.join(notes)} |"
        )
    return "\n".join(out)


def target_text(row: Row) -> str:
    if row.target is not None:
        return f"≤ {row.target:g}"
    if row.target_ratio is not None:
        return f"ratio ≤ {row.target_ratio:g}"
    return ""


def orchestrate(args: argparse.Namespace) -> int:
    cores = Cores.plan(not args.no_pin)
    args.server_cpu, args.client_cpu = cores.server, cores.client
    selected = [r for r in rows() if not args.only or r.id in args.only.split(",")]
    if not selected:
        print("no such row; rows are: " + ", ".join(r.id for r in rows()), file=sys.stderr)
        return 2
    info = machine()
    load_before = os.getloadavg()[0]
    print(
        f"rxllm bench: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}; "
        f"{cores.note}; {args.chunks} chunks per stream, {args.repeats} repetitions",
        flush=True,
    )
    logs = Path(tempfile.mkdtemp(prefix="rxllm-bench-"))
    port = free_port()
    mock = None
    results: list[tuple[Row, Measured]] = []
    started = time.monotonic()
    try:
        if any(r.kind in ("client", "memory") for r in selected):
            mock = start_process(mock_command(port), cores.server, port, logs / "mock.log")
        base_url = f"http://127.0.0.1:{port}/v1"
        for row in selected:
            t0 = time.monotonic()
            cpu = None if row.kind in ("cancel", "serve") else cores.client
            measured = run_worker(row, args, base_url, cpu, args.timeout)
            results.append((row, measured))
            took = time.monotonic() - t0
            if measured.skipped:
                print(f"  {row.id:22s} skipped: {measured.skipped}", flush=True)
            else:
                print(
                    f"  {row.id:22s} median {fmt(measured.median):>7s} {row.unit:10s}"
                    f" ({took:.0f} s)",
                    flush=True,
                )
    finally:
        if mock is not None:
            stop_process(mock)
    elapsed = time.monotonic() - started
    load_after = os.getloadavg()[0]
    text = table(results)
    command = "python -m bench.run" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    header = (
        f"Command: `{command}` ({elapsed:.0f} s). Machine: {info['nproc']} CPUs, {info['cpu']}, "
        f"Python {info['python']}, {info['platform']}. {cores.note[0].upper()}{cores.note[1:]}. "
        f"Per-chunk rows: one stream of {args.chunks} small chunks, CPU time of the measured "
        f"process, median/min/max of {args.repeats} runs after one warm-up run. "
        f"Load average (1 min) before the run {load_before:.2f}"
        + (" (other work was running: expect noise)" if load_before > 0.8 else "")
        + f", after {load_after:.2f} (the run itself loads about 2)"
        + ".\n\n"
        + "Versions: "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    )
    print()
    print(text)
    if not args.no_write:
        (HERE / "results.md").write_text(header + "\n\n" + text + "\n")
        payload = {
            "command": command,
            "seconds": elapsed,
            "machine": info,
            "pinning": cores.note,
            "load_average": [load_before, load_after],
            "chunks": args.chunks,
            "repeats": args.repeats,
            "rows": [
                {
                    "id": row.id,
                    "label": row.label,
                    "unit": row.unit,
                    "samples": m.samples,
                    "median": m.median if m.samples else None,
                    "extra": m.extra,
                    "skipped": m.skipped,
                    "ref": row.ref,
                    "target": row.target,
                    "target_ratio": row.target_ratio,
                }
                for row, m in results
            ],
        }
        (HERE / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwritten: {HERE / 'results.md'}, {HERE / 'results.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated row ids")
    parser.add_argument("--quick", action="store_true", help="5,000 chunks, 3 repetitions")
    parser.add_argument("--chunks", type=int, help="chunks per stream (default 20000)")
    parser.add_argument("--repeats", type=int, help="measured runs per row (default 5)")
    parser.add_argument("--streams", type=int, help="concurrent streams (default 1000)")
    parser.add_argument("--no-pin", action="store_true", help="don't pin processes to cores")
    parser.add_argument("--no-write", action="store_true", help="only print the table")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per row")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--cores", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.chunks = args.chunks or (5000 if args.quick else 20000)
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.streams = args.streams or (200 if args.quick else 1000)
    if args.worker:
        args.server_cpu, args.client_cpu = json.loads(args.cores) if args.cores else (None, None)
        measured = worker(args)
        print(measured.to_json(), flush=True)
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
