"""Where a probe's first token waits in ``rxllm serve``: the stages of its path, timed.

The load and the probes of :mod:`bench.real_rate` (``--streams`` x
``--rate``, one proxy: ``rxllm``, or ``rxllm_nostore``), with the proxy run
by :mod:`bench.ttft_trace`, which clocks each probe from its request's first
bytes to its first token written, stage by stage. Printed per stage, in the
order the probes reached them: what it marks, and the milliseconds since
the stage before (minimum, median, 90th percentile, maximum over the
probes), then the whole. ``--streams 2`` is the path without load;
``--first-token-ms`` makes the model take that long to a probe's first
token (straight and through the proxy alike), as a real model does.

    python -m bench.ttft_path --streams 200 --rate 20 [--first-token-ms 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from bench import real_rate, serve
from bench.common import Cores, scratch_dir
from bench.ttft_trace import STAGES

__all__ = ["main", "stage_times"]


def _traced_command(original: Any) -> Any:
    def command(*args: Any, **kwargs: Any) -> list[str]:
        argv: list[str] = original(*args, **kwargs)
        at = argv.index("pipeline.apps.cli")
        argv[at] = "bench.ttft_trace"
        return argv

    return command


def stage_times(lines: list[str]) -> dict[str, list[float]]:
    """Per stage, its milliseconds since the stage before it, in each probe that was written.

    The stages are taken in the order their times say: a source's task that starts
    eagerly has its request sent before ``StreamRun.start`` returns.
    """
    times: dict[str, list[float]] = {name: [] for name in [*STAGES, "total"]}
    for marks in _marks(lines):
        for name, took in _steps(marks):
            times[name].append(took)
        times["total"].append(max(at for name, at in marks.items() if name in STAGES))
    return times


def stage_order(lines: list[str]) -> list[str]:
    """The stages in the order the probes reached them (by their median time)."""
    at: dict[str, list[float]] = {}
    for line in lines:
        for item in line.split():
            name, value = item.split("=")
            at.setdefault(name, []).append(float(value))
    return sorted((n for n in STAGES if n in at), key=lambda n: statistics.median(at[n]))


def _marks(lines: list[str]) -> list[dict[str, float]]:
    """Each written probe's marks: stages and figures by name."""
    probes = [
        {k: float(v) for k, v in (item.split("=") for item in line.split())} for line in lines
    ]
    return [marks for marks in probes if "written" in marks]


def _steps(marks: dict[str, float]) -> list[tuple[str, float]]:
    """A probe's stages in the order of their times, each with its ms since the one before."""
    stages = sorted((item for item in marks.items() if item[0] in STAGES), key=lambda i: i[1])
    return [
        (name, at - before)
        for (name, at), before in zip(stages, [0.0] + [at for _, at in stages], strict=False)
    ]


def slowest(lines: list[str], count: int) -> list[str]:
    """The ``count`` slowest probes: their total, CPU and collector time (ms), the chunks
    written meanwhile, and their longest stage."""
    described = []
    for marks in _marks(lines):
        longest, name = max((took, name) for name, took in _steps(marks))
        text = (
            f"total {marks['written']:.2f}, cpu {marks.get('cpu', 0):.2f}, "
            f"chunks {marks.get('chunks', 0):.0f}, collector {marks.get('gc', 0):.2f}, "
            f"longest stage: {name} {longest:.2f}"
        )
        described.append((marks["written"], text))
    return [text for _, text in sorted(described, reverse=True)[:count]]


def collections(lines: list[str]) -> dict[int, list[float]]:
    """The collector's passes (lines of ``<trace>.gc``): milliseconds, by generation."""
    passes: dict[int, list[float]] = {}
    for line in lines:
        generation, took = line.split()
        passes.setdefault(int(generation), []).append(float(took))
    return passes


def _row(name: str, values: list[float], what: str) -> str:
    if not values:
        return f"| {name} | {what} | - | - | - | - |"
    v = sorted(values)
    p90 = v[min(len(v) - 1, int(len(v) * 0.9))]
    return (
        f"| {name} | {what} | {v[0]:.2f} | {statistics.median(v):.2f} | {p90:.2f} | {v[-1]:.2f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ttft_path", description=__doc__)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--proxy", choices=["rxllm", "rxllm_nostore"], default="rxllm")
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--nice", type=int, default=0, help="as bench.real_rate's --nice")
    parser.add_argument(
        "--first-token-ms",
        type=float,
        default=0.0,
        help="the model's time to a probe's first token (default none: it answers at once)",
    )
    args = parser.parse_args(argv)
    trace = scratch_dir("rxllm-bench-ttft-path-") / "trace.txt"
    os.environ["RXLLM_TTFT_TRACE"] = str(trace)
    serve._serve_command = _traced_command(serve._serve_command)
    real_rate.NICE = args.nice
    real_rate.PROBE_FIRST = args.first_token_ms / 1000
    measured = real_rate.measure(
        [args.proxy], args.streams, args.rate, 1, args.probes, Cores.plan(True)
    )[args.proxy]
    lines = trace.read_text().splitlines() if trace.exists() else []
    times = stage_times(lines)
    print(f"{args.proxy} at {args.streams} x {args.rate:g}: {len(times['total'])} probes traced")
    print(
        f"TTFT over direct, p50 / p99: {measured.extra.get('ttft_p50_over_direct_ms')} / "
        f"{measured.extra.get('ttft_p99_over_direct_ms')} ms"
    )
    print("\n| stage | reached when | ms since the stage before: min | p50 | p90 | max |")
    print("|---|---|---:|---:|---:|---:|")
    for name in stage_order(lines):
        print(_row(name, times[name], STAGES[name]))
    print(_row("total", times["total"], "the request's bytes to its first token written"))
    probes = _marks(lines)
    hit = [m["gc"] for m in probes if m.get("gc")]
    tracked = [m["tracked"] for m in probes if "tracked" in m]
    chunks = [m["chunks"] for m in probes if "chunks" in m]
    if chunks:
        print(
            f"\nChunks the server wrote to its clients on a probe's way: median "
            f"{statistics.median(chunks):.0f}, max {max(chunks):.0f}"
        )
    print(
        f"Probes with a collection on the way: {len(hit)} of {len(probes)}"
        + (f" (median {statistics.median(hit):.2f} ms)" if hit else "")
        + (
            f"; tracked objects made per probe: median {statistics.median(tracked):.0f}"
            if tracked
            else ""
        )
    )
    log = Path(str(trace) + ".gc")
    for generation, took in sorted(
        collections(log.read_text().splitlines() if log.exists() else []).items()
    ):
        print(
            f"Generation {generation} passes: {len(took)}, "
            f"median {statistics.median(took):.2f} ms, max {max(took):.2f} ms"
        )
    print("The slowest probes:")
    for line in slowest(lines, 5):
        print("  " + line)
    return 0 if times["total"] else 1


if __name__ == "__main__":
    sys.exit(main())
