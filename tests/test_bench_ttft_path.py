"""``bench.ttft_path``: its trace still finds what it wraps, and its table adds up.

No timing here: the figures come from ``python -m bench.ttft_path``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.ttft_path import collections, slowest, stage_order, stage_times
from bench.ttft_trace import STAGES

ROOT = Path(__file__).resolve().parent.parent


def test_the_trace_installs_on_the_current_code(tmp_path: Path) -> None:
    # In a process of its own: it wraps classes for the life of the process.
    code = f"from bench.ttft_trace import install; install({str(tmp_path / 't')!r})"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_stage_times_are_each_stage_since_the_one_before_it_in_time() -> None:
    marks = {name: (i + 1) * 0.5 for i, name in enumerate(STAGES)}
    marks["subscribed"] = 2.2  # before "source" at 2.5: a source's task that starts later
    whole = " ".join(f"{k}={v:.3f}" for k, v in marks.items())
    unfinished = "handler=0.200 body=0.400"  # a request that never wrote its first token
    times = {k: [round(v, 6) for v in vs] for k, vs in stage_times([whole, unfinished]).items()}
    assert times["handler"] == [0.5] and times["sent"] == [0.5]
    assert times["subscribed"] == [0.2] and times["source"] == [0.3]
    assert times["headers"] == [1.0]
    assert times["total"] == [0.5 * len(STAGES)]
    order = stage_order([whole])
    assert order.index("opened") < order.index("subscribed") < order.index("source")


def test_the_slowest_probes_name_their_longest_stage_and_the_collectors_time() -> None:
    fast = "handler=0.300 written=1.000 cpu=0.900 gc=0.000 tracked=400"
    slow = "handler=0.300 body=2.300 written=2.500 cpu=2.400 chunks=31 gc=1.500"
    unfinished = "handler=9.000 body=9.500"
    assert slowest([fast, slow, unfinished], 1) == [
        "total 2.50, cpu 2.40, chunks 31, collector 1.50, longest stage: body 2.00"
    ]
    assert len(slowest([fast, slow, unfinished], 5)) == 2


def test_collections_are_grouped_by_generation() -> None:
    assert collections(["0 1.000", "1 9.500", "0 0.500"]) == {0: [1.0, 0.5], 1: [9.5]}
