"""``bench.real_rate``: the paired ratio (each round's proxy sample over the relay's of
that round) and the kernel's share of a proxy's CPU."""

from __future__ import annotations

import subprocess
import sys

from bench.common import cpu_seconds, system_cpu_seconds
from bench.real_rate import _summary, paired_ratio


def _samples(*us: float, start: int = 0) -> list[dict[str, float | int]]:
    return [{"round": start + i, "us_per_chunk": v} for i, v in enumerate(us)]


def test_each_round_is_divided_by_the_relay_of_the_same_round() -> None:
    # Medians alone would say 120 / 60 = 2.0; round by round the proxy is 1.5x to 2.5x.
    proxy = _samples(90.0, 120.0, 150.0)
    relay = _samples(60.0, 80.0, 60.0)
    got = paired_ratio(proxy, relay)
    assert got["x_relay_by_round"] == "1.50/1.50/2.50"
    assert got["x_relay_paired"] == 1.5


def test_a_round_without_the_relay_is_left_out() -> None:
    proxy = _samples(100.0, 300.0, 90.0)
    relay = [{"round": 0, "us_per_chunk": 50.0}, {"round": 2, "us_per_chunk": 45.0}]
    got = paired_ratio(proxy, relay)
    assert got["x_relay_by_round"] == "2.00/2.00"
    assert got["x_relay_paired"] == 2.0


def test_no_round_in_common_gives_nothing() -> None:
    assert paired_ratio(_samples(100.0), _samples(50.0, start=1)) == {}


def test_the_kernels_share_is_part_of_the_cpu_and_is_reported() -> None:
    # A child that spends its time in system calls: its system CPU is most of its CPU.
    code = (
        "import os, time\n"
        "fd = os.open('/dev/zero', os.O_RDONLY)\n"
        "while time.process_time() < 0.3:\n"
        "    os.read(fd, 1 << 20)\n"
        "print('spent', flush=True)\n"
        "input()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"spent\n"
        system, total = system_cpu_seconds(child.pid), cpu_seconds(child.pid)
    finally:
        child.communicate(b"\n", timeout=30)
    assert total / 2 < system <= total  # the field is the system time, not the user time
    sample = {"us_per_chunk": 80.0, "us_per_chunk_system": 21.5, "delivered": 1.0}
    sample |= {"load_average": 0.2, "cpu_busy": 0.2, "background_ended_early": 0}
    assert _summary([sample], 20.0).extra["us_per_chunk_system"] == "21.5"
