"""``bench.call_count``: calls per function from cProfile files, and per chunk between two runs."""

from __future__ import annotations

import cProfile
from collections import Counter
from pathlib import Path

from bench.call_count import counts, per_unit


def _leaf(x: int) -> int:
    return len(str(x))


def _work(n: int) -> int:
    return sum(_leaf(i) for i in range(n))


def test_counts_keys_functions_by_file_and_name(tmp_path: Path) -> None:
    profile = tmp_path / "p.prof"
    profiler = cProfile.Profile()
    profiler.runcall(_work, 7)
    profiler.dump_stats(profile)
    got = counts(profile)
    assert got["tests/test_bench_call_count.py", "_leaf"] == 7
    assert got["tests/test_bench_call_count.py", "_work"] == 1
    assert got["C", "<built-in method builtins.len>"] == 7


def test_per_unit_is_the_difference_over_the_units() -> None:
    short = Counter({("a.py", "f"): 10, ("C", "len"): 4})
    long = Counter({("a.py", "f"): 30, ("C", "len"): 4, ("b.py", "g"): 5})
    assert per_unit(short, long, 10) == {("a.py", "f"): 2.0, ("C", "len"): 0.0, ("b.py", "g"): 0.5}
