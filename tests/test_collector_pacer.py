"""The collector's pacer: collections in a quiet moment, off the requests' way.

Regression: under 200 streams, CPython's own trigger ran a young-generation
pass inside about one request in twelve, on its way to its first token
(the request's own few hundred objects tipped the count over), and a
middle-generation pass (ten times the work) now and then; the slowest
probes' time to first token was mostly the collector's.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.apps.server.collector_pacer import BACKSTOP, CollectorPacer
from pipeline.apps.server.connection_guard import guarded_protocol
from pipeline.apps.server.server_settings import ServerSettings
from tests.serving import ServeProcess, app_in_loop

THRESHOLD = 2_000
GUARD = 10.0  # seconds: reached only if the behaviour under test is missing


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def quiet_collector() -> Iterator[None]:
    """CPython's own trigger off, so that only the pacer collects; everything put back after."""
    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    gc.disable()
    gc.collect()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if enabled:
            gc.enable()


def young(count: int) -> list[list[int]]:
    """``count`` tracked objects, kept alive: the young generation's count goes up by that."""
    return [[] for _ in range(count)]


def garbage_cycle() -> weakref.ref[Any]:
    """A reference cycle nobody holds (only a collection frees it), watched by a weak reference."""

    class Node:
        other: Any = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_below_its_threshold_it_does_not_collect(quiet_collector: None) -> None:
    pacer = CollectorPacer(THRESHOLD, clock=Clock())
    cycle = garbage_cycle()
    kept = young(THRESHOLD // 2)
    assert pacer.check() is None
    assert cycle() is not None
    assert gc.get_count()[0] >= len(kept)


def test_past_its_threshold_in_a_quiet_moment_it_collects_the_young_generation(
    quiet_collector: None,
) -> None:
    pacer = CollectorPacer(THRESHOLD, clock=Clock())
    cycle = garbage_cycle()
    kept = young(THRESHOLD + 100)
    assert pacer.check() == 0
    assert cycle() is None  # the cycle was collected
    assert gc.get_count()[0] < 100 < len(kept)


def test_it_waits_for_a_gap_in_the_arrivals(quiet_collector: None) -> None:
    clock = Clock()
    pacer = CollectorPacer(THRESHOLD, quiet=0.005, clock=clock)
    kept = young(THRESHOLD + 100)
    pacer.arrived()
    clock.now += 0.004
    assert pacer.check() is None  # a request came in 4 ms ago: it may still be on its way
    assert gc.get_count()[0] >= len(kept)
    clock.now += 0.002
    assert pacer.check() == 0


def test_without_a_gap_it_collects_at_twice_its_threshold(quiet_collector: None) -> None:
    clock = Clock()
    pacer = CollectorPacer(THRESHOLD, clock=clock)
    kept = young(THRESHOLD + 100)
    pacer.arrived()
    assert pacer.check() is None
    kept += young(THRESHOLD)
    pacer.arrived()
    assert pacer.check() == 0


def test_it_collects_the_generation_cpython_would(quiet_collector: None) -> None:
    gc.set_threshold(700, 2, 3)
    pacer = CollectorPacer(THRESHOLD, clock=Clock())
    done = []
    for _ in range(20):
        kept = young(THRESHOLD + 100)
        done.append(pacer.check())
        del kept
    # a middle pass once more than 2 young ones ran, a full one once more than 3 middle ones
    assert done == [0, 0, 0, 1] * 4 + [2, 0, 0, 0]


def test_start_raises_cpythons_trigger_to_the_backstop_and_stop_puts_it_back(
    quiet_collector: None,
) -> None:
    gc.set_threshold(700, 7, 9)
    loop = asyncio.new_event_loop()
    pacer = CollectorPacer(THRESHOLD)
    assert not pacer.started
    pacer.start(loop)
    assert pacer.started
    assert gc.get_threshold() == (THRESHOLD * BACKSTOP, 7, 9)
    loop.close()  # rxllm serve stops it once uvicorn has closed its loop
    pacer.stop()
    assert not pacer.started
    assert gc.get_threshold() == (700, 7, 9)


async def test_started_on_a_loop_it_collects_in_a_callback_of_its_own(
    quiet_collector: None,
) -> None:
    loop = asyncio.get_running_loop()
    collected = asyncio.Event()

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            loop.call_soon_threadsafe(collected.set)

    pacer = CollectorPacer(THRESHOLD, tick=0.001)
    gc.callbacks.append(seen)
    try:
        cycle = garbage_cycle()
        kept = young(THRESHOLD + 100)
        pacer.start(loop)
        await asyncio.wait_for(collected.wait(), GUARD)
        assert cycle() is None
        assert gc.get_count()[0] < len(kept)
    finally:
        pacer.stop()
        gc.callbacks.remove(seen)


class Reported:
    """A started pacer (on a loop that never runs) whose reported passes are kept."""

    def __init__(self, clock: Clock) -> None:
        self.passes: list[tuple[int, str, float]] = []
        self.loop = asyncio.new_event_loop()
        self.pacer = CollectorPacer(
            THRESHOLD, clock=clock, on_pass=lambda *p: self.passes.append(p)
        )
        self.pacer.start(self.loop)

    def close(self) -> None:
        self.pacer.stop()
        self.loop.close()


def test_each_pass_is_reported_with_what_started_it_after_it_ends(
    quiet_collector: None,
) -> None:
    clock = Clock()
    reported = Reported(clock)
    try:
        kept = young(THRESHOLD + 100)
        assert reported.pacer.check() == 0
        assert reported.passes == []  # not from inside the pass: at the next report
        reported.pacer.report()
        kept += young(2 * THRESHOLD)
        reported.pacer.arrived()
        assert reported.pacer.check() == 0  # past twice the threshold: no gap waited for
        gc.collect(1)  # anyone else's pass, or CPython's own trigger
        reported.pacer.report()
    finally:
        reported.close()
    assert [(g, trigger) for g, trigger, _ in reported.passes] == [
        (0, "paced"),
        (0, "forced"),
        (1, "backstop"),
    ]
    assert all(seconds > 0 for _, _, seconds in reported.passes)


def test_once_stopped_it_reports_what_is_left_and_hears_no_more_passes(
    quiet_collector: None,
) -> None:
    reported = Reported(Clock())
    gc.collect(0)
    reported.close()
    gc.collect(0)
    reported.pacer.report()
    assert [(g, trigger) for g, trigger, _ in reported.passes] == [(0, "backstop")]


@pytest.mark.slow  # starts rxllm serve
async def test_rxllm_serve_runs_the_passes_itself_and_counts_them(tmp_path: Path) -> None:
    body = {
        "model": "mock-model",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "mock": {"text": " ".join(["word"] * 40), "interval": 0.01},
    }
    with ServeProcess("--no-store", log_path=tmp_path / "serve.log") as served:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=served.url, timeout=GUARD, limits=limits) as http:

            async def stream() -> str:
                async with http.stream("POST", "/v1/chat/completions", json=body) as answer:
                    return "".join([part async for part in answer.aiter_text()])

            # Each round's open streams hold enough objects for a pass (a few hundred each),
            # and not so many that CPython's backstop, at four times the threshold, comes first.
            for _ in range(4):
                answers = await asyncio.gather(*(stream() for _ in range(25)))
                assert all(a.rstrip().endswith("data: [DONE]") for a in answers)
            paced = 0.0
            for _ in range(100):
                text = (await http.get("/metrics")).text
                paced = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("rxllm_gc_pause_seconds_count")
                    and ('trigger="paced"' in line or 'trigger="forced"' in line)
                )
                if paced:
                    break
                await asyncio.sleep(0.05)
    assert paced >= 1


async def test_the_servers_protocol_reports_request_bytes_as_they_arrive() -> None:
    arrivals: list[None] = []
    protocol = guarded_protocol(
        header_timeout=None,
        max_connections=None,
        on_closed=print,
        on_data=lambda: arrivals.append(None),
    )
    async with app_in_loop(ServerSettings(store=False), http=protocol) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n")
        await writer.drain()
        for _ in range(100):  # the first read is reported before the request is whole
            if arrivals:
                break
            await asyncio.sleep(0.01)
        assert len(arrivals) == 1
        writer.write(b"connection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), GUARD)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert len(arrivals) == 2
