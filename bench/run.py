"""rxllm's benchmark: one command, every row beside its peers, measured in the same run.

    .venv/bin/python -m bench.run            # everything, about 5 minutes on 2 cores
    .venv/bin/python -m bench.run --quick    # fewer chunks and repetitions, about 1 minute
    .venv/bin/python -m bench.run --only rxllm.text,floor.lines

The built-in model runs in a separate process (``pipeline.apps.builtin_model.serve``) on
loopback; every measured client runs in a process of its own, pinned to
another core than the servers where the machine has two. Each row is run
once to warm up, then ``--repeats`` times; the per-chunk client rows are
interleaved (round 1 of every row, then round 2, ...) so that a burst of
other work on the machine lands on one sample of every row rather than on
all the samples of one. The table gives the median, min and max, and the
ratio of the median to the row's reference (the floor for per-chunk rows).
The real-rate rows (``rate.*``) run :mod:`bench.real_rate` once per load, its
proxies interleaved round by round (``--nice`` sets the niceness of what it measures).
It prints the table and writes ``bench/results.md`` and
``bench/results.json``. ``bench/README.md`` says what each row means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import select
import subprocess
import sys
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
    scratch_dir,
    start_process,
    stop_process,
)

HERE = Path(__file__).resolve().parent


@dataclass
class Row:
    """One line of the table: what is measured, in which unit, against what."""

    id: str
    label: str
    kind: str  # client | linear | memory | cancel | serve | rate
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
        Row("memory.source.http", "rxllm's source alone, on rxllm's `http_client()`", "memory",
            "KB/stream", {"mode": "source_http", "interval": 0.2}, ref="memory.httpx"),
        Row("memory.http", "**rxllm**: the same full path on rxllm's `http_client()`", "memory",
            "KB/stream", {"mode": "rxllm_http", "interval": 0.2}, ref="memory.httpx",
            target=50.0),
        Row("cancel", "1,000 disconnects mid-stream: p99 cancel → upstream socket closed",
            "cancel", "ms", {"streams": 1000, "interval": 0.2, "spacing": 0.002}, target=100.0,
            group="cancellation (StreamRun + source + chain)"),
        Row("serve.proxy", "`rxllm serve` relaying (store + metrics on), server CPU per chunk",
            "serve", chunk, {"mode": "proxy"}, target=40.0, group="rxllm serve"),
        Row("serve.proxy.responses", "`rxllm serve` relaying the Responses API "
            "(`POST /v1/responses`), server CPU per chunk", "serve", chunk,
            {"mode": "proxy_responses"}, ref="serve.proxy"),
        Row("serve.proxy.messages", "`rxllm serve` relaying Anthropic Messages "
            "(`POST /v1/messages`), server CPU per chunk", "serve", chunk,
            {"mode": "proxy_messages"}, ref="serve.proxy"),
        Row("litellm.proxy", "LiteLLM proxy relaying, server CPU per chunk (5,000 chunks)",
            "serve", chunk, {"mode": "litellm_proxy", "chunks": 5000}, ref="serve.proxy"),
        Row("serve.ttft", "TTFT through `rxllm serve` minus direct, one stream at a time",
            "serve", "ms", {"mode": "ttft"}, target=2.0),
        Row("serve.ttft.p99", "TTFT through `rxllm serve` minus direct, p99, 1,000 streams at "
            "20 tokens/s (200 on fewer than 4 cores)", "serve", "ms", {"mode": "ttft_p99"},
            target=20.0),
        *rate_rows(),
    ]  # fmt: skip


RATE_LOADS = ((200, 20.0), (50, 50.0))  # streams x tokens/s of the real-rate rows


def rate_rows() -> list[Row]:
    """The real-rate rows (:mod:`bench.real_rate`): each proxy beside the minimal relay."""
    from bench.real_rate import CLIENTS, PROXIES

    out: list[Row] = []
    for streams, rate in RATE_LOADS:
        load = f"{streams} streams x {rate:g} tokens/s"
        base = f"rate.{streams}x{rate:g}"
        relay = f"{base}.relay"
        for kind, label in PROXIES.items():
            rxllm = kind == "rxllm"
            out.append(Row(
                f"{base}.{kind}", f"**{label}**" if rxllm else label, "rate", "µs/chunk",
                {"kind": kind, "streams": streams, "rate": rate},
                ref=None if kind == "relay" else relay, target_ratio=2.0 if rxllm else None,
                group=f"proxy CPU per relayed chunk, {load} (the relay is the reference)"
                if kind == "relay" else "",
            ))  # fmt: skip
        ours = f"{base}.client_ours"
        for kind, label in CLIENTS.items():
            out.append(Row(
                f"{base}.{kind}", label, "rate", "µs/chunk",
                {"kind": kind, "streams": streams, "rate": rate},
                ref=None if kind == "client_ours" else ours,
                group=f"HTTP clients under rxllm's source, reader CPU per chunk, {load}"
                if kind == "client_ours" else "",
            ))  # fmt: skip
    return out


def run_rate_rows(selected: list[Row], args: argparse.Namespace) -> dict[str, Measured]:
    """Measure the real-rate rows, one :mod:`bench.real_rate` run per load (interleaved)."""
    loads: dict[tuple[int, float], list[Row]] = {}
    for row in selected:
        if row.kind == "rate":
            loads.setdefault((row.params["streams"], row.params["rate"]), []).append(row)
    out: dict[str, Measured] = {}
    for (streams, rate), group in loads.items():
        command = [
            sys.executable, "-m", "bench.real_rate", "--json", "--streams", str(streams),
            "--rate", str(rate), "--rounds", str(max(3, args.repeats if not args.quick else 3)),
            "--probes", "20" if args.quick else "50",
            "--proxies", ",".join(row.params["kind"] for row in group),
            "--nice", str(args.nice),
        ] + (["--no-pin"] if args.no_pin else [])  # fmt: skip
        t0 = time.monotonic()
        done = subprocess.run(
            command, stdout=subprocess.PIPE, text=True, env=python_env(), cwd=ROOT, timeout=3600
        )
        lines = done.stdout.strip().splitlines()
        data = json.loads(lines[-1]) if done.returncode == 0 and lines else {}
        for row in group:
            kind = row.params["kind"]
            out[row.id] = (
                Measured.from_json(json.dumps(data[kind]))
                if kind in data
                else Measured(skipped=f"bench.real_rate exited with {done.returncode}")
            )
            ttft = out[row.id].extra.get("ttft_p99_over_direct_ms")
            if kind == "rxllm" and ttft is not None:
                out[row.id].extra["ttft_target"] = "≤ 5 ms " + ("met" if ttft <= 5 else "not met")
            report(row, out[row.id])
        print(f"  (real-rate rows at {streams}x{rate:g}: {time.monotonic() - t0:.0f} s)")
    return out


# -- the worker: one row, in its own process ----------------------------------------------


def worker(args: argparse.Namespace) -> Measured | None:
    if args.interactive:
        from bench.client import serve_samples

        row = {r.id: r for r in rows()}[args.worker]
        chunks = min(args.chunks, row.params.get("chunks", args.chunks))
        client, tools = row.params["client"], row.params["tools"]
        asyncio.run(serve_samples(client, args.base_url, chunks, tools))
        return None
    if args.worker == "warm-up":
        from bench.client import measure_client

        return asyncio.run(measure_client("floor_lines", args.base_url, args.chunks, False, 2))
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

        return asyncio.run(
            measure_cancel(args.streams, p["interval"], p["spacing"], args.server_cpu)
        )
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


class Interleaved:
    """One long-lived worker per client row; samples are taken round by round."""

    def __init__(self, selected: list[Row], args: argparse.Namespace, base_url: str) -> None:
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.failed: dict[str, str] = {}
        self.samples: dict[str, list[float]] = {row.id: [] for row in selected}
        self.warnings: dict[str, str] = {}
        self.timeout = args.timeout
        for row in selected:  # one at a time: no import runs while another row measures
            command = [
                sys.executable, "-m", "bench.run", "--worker", row.id, "--interactive",
                "--base-url", base_url, "--chunks", str(args.chunks),
            ]  # fmt: skip
            proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=python_env(),
                cwd=ROOT,
                preexec_fn=pinned(args.client_cpu),
            )
            self.procs[row.id] = proc
            if self._line(row.id) != "ready":
                self._fail(row.id, "did not start")

    def _line(self, row_id: str) -> str | None:
        proc = self.procs[row_id]
        assert proc.stdout is not None
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], self.timeout)
            if not ready:
                return None
            line = proc.stdout.readline()
            if not line:
                return None
            line = line.strip()
            if line == "ready" or line.startswith("{"):
                return line

    def _fail(self, row_id: str, why: str) -> None:
        self.failed[row_id] = why
        proc = self.procs.pop(row_id)
        proc.kill()
        proc.wait()

    def sample(self, row_id: str, keep: bool = True) -> None:
        proc = self.procs.get(row_id)
        if proc is None:
            return
        assert proc.stdin is not None
        try:
            proc.stdin.write("sample\n")
            proc.stdin.flush()
        except OSError:
            self._fail(row_id, "worker died")
            return
        line = self._line(row_id)
        if line is None or not line.startswith("{"):
            self._fail(row_id, "failed or timed out")
            return
        data = json.loads(line)
        if keep:
            self.samples[row_id].append(data["us"])
        if data["got"] != data["expected"]:
            self.warnings[row_id] = f"saw {data['got']} content chunks, expected {data['expected']}"

    def result(self, row_id: str) -> Measured:
        if row_id in self.failed:
            return Measured(skipped=self.failed[row_id])
        measured = Measured(self.samples[row_id])
        if row_id in self.warnings:
            measured.extra["warning"] = self.warnings[row_id]
        return measured

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.write("quit\n")
                    proc.stdin.flush()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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
        extra = dict(m.extra)
        verdict = extra.pop("verdict", verdict)  # a row measured off its target's terms says so
        notes = [verdict] if verdict else []
        notes += [f"{k}: {fmt(v) if isinstance(v, float) else v}" for k, v in extra.items()]
        ratio_text = f"{ratio:.2f}x" if ratio is not None else ""
        out.append(
            f"| {row.label} | {row.unit} | {fmt(median)} | {fmt(min(m.samples))} | "
            f"{fmt(max(m.samples))} | {ratio_text} | {target_text(row)} | {'; '.join(notes)} |"
        )
    return "\n".join(out)


def report(row: Row, measured: Measured, took: float | None = None) -> None:
    if measured.skipped:
        print(f"  {row.id:22s} skipped: {measured.skipped}", flush=True)
        return
    line = f"  {row.id:22s} median {fmt(measured.median):>7s} {row.unit}"
    print(line + (f" ({took:.0f} s)" if took is not None else ""), flush=True)


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
    logs = scratch_dir("rxllm-bench-")
    port = free_port()
    mock = None
    results: list[tuple[Row, Measured]] = []
    started = time.monotonic()
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        if any(r.kind in ("client", "memory") for r in selected):
            mock = start_process(mock_command(port), cores.server, port, logs / "mock.log")
            # A cold model answers its first streams slower, and how fast chunks arrive
            # changes what the client spends on each: warm it up before the first row.
            warm = Row("warm-up", "", "client", "", {"client": "floor_lines", "tools": False})
            run_worker(warm, args, base_url, cores.client, args.timeout)
        measured_rows: dict[str, Measured] = {}
        clients = [row for row in selected if row.kind == "client"]
        if clients:
            t0 = time.monotonic()
            interleaved = Interleaved(clients, args, base_url)
            try:
                for row in clients:  # the warm-up round
                    interleaved.sample(row.id, keep=False)
                for _ in range(args.repeats):
                    for row in clients:
                        interleaved.sample(row.id)
            finally:
                interleaved.close()
            for row in clients:
                measured_rows[row.id] = interleaved.result(row.id)
                report(row, measured_rows[row.id])
            print(f"  (client rows, interleaved: {time.monotonic() - t0:.0f} s)", flush=True)
        measured_rows.update(run_rate_rows(selected, args))
        for row in selected:
            if row.kind in ("client", "rate"):
                continue
            t0 = time.monotonic()
            cpu = None if row.kind == "serve" else cores.client
            measured_rows[row.id] = run_worker(row, args, base_url, cpu, args.timeout)
            report(row, measured_rows[row.id], time.monotonic() - t0)
        results.extend((row, measured_rows[row.id]) for row in selected)
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
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the real-rate rows' processes (see bench.real_rate)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--cores", help=argparse.SUPPRESS)
    parser.add_argument("--interactive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.chunks = args.chunks or (5000 if args.quick else 20000)
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.streams = args.streams or (200 if args.quick else 1000)
    if args.worker:
        args.server_cpu, args.client_cpu = json.loads(args.cores) if args.cores else (None, None)
        measured = worker(args)
        if measured is not None:
            print(measured.to_json(), flush=True)
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
