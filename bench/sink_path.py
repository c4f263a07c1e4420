"""CPU per chunk from a raw SSE message to every sink of ``rxllm serve``, in process.

The part of a chunk's cost that :mod:`bench.real_rate` cannot isolate: the
operators (``extract_deltas``, ``assemble_tool_calls``, ``timeouts``,
``map_errors``), failover's attempt observer, the fan-out of
:class:`pipeline.runtime.multicast.StreamRun`, and the sinks the gateway
attaches (the hub's replay buffer, metrics, the transcript store writing to a
real SQLite file), built as ``Gateway.open_stream`` builds them. No sockets:
``--streams`` sources are fed one Chat Completions chunk each in turn (as the
real rate interleaves them), with a loop turn after each round so that the
store's writer drains as it does under load (a batch per ``batch_size``
events: its flush timer is off, so that what a batch holds does not depend on
how fast the bench runs).

    python -m bench.sink_path                         # µs per chunk, best of --rounds
    python -m bench.sink_path --no-store
    python -m bench.sink_path --instructions          # instructions per chunk (callgrind)

``--instructions`` runs the bench twice under ``valgrind --tool=callgrind``
(``--short`` and ``--long`` tokens per stream, one round each) and divides
the difference of the totals by the difference in chunks: a figure the
machine's load does not move. The store's writer thread is counted too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reactivex import Observable, abc
from reactivex.disposable import Disposable

from bench.common import scratch_dir
from pipeline.core.sse_decoder import SSEMessage
from pipeline.runtime.failover import failover
from pipeline.runtime.multicast import StreamRun
from pipeline.runtime.stream_hub import StreamHub
from pipeline.runtime.upstreams import Upstream
from sinks.metrics import Metrics
from sinks.store.batch_writer import StoreSettings
from sinks.store.transcript_store import Store

__all__ = ["main", "run"]

_PREFIX = '{"id":"chatcmpl-load","object":"chat.completion.chunk","created":0,"model":"load"'


def _frames(tokens: int) -> list[str]:
    def delta(d: dict[str, str]) -> str:
        choice = {"index": 0, "delta": d, "finish_reason": None}
        return _PREFIX + ',"choices":[' + json.dumps(choice) + "]}"

    frames = [delta({"role": "assistant", "content": "word0"})]
    frames += [delta({"content": f" word{i}"}) for i in range(1, tokens)]
    frames.append(_PREFIX + ',"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}')
    usage = {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": tokens + 5}
    frames.append(_PREFIX + ',"choices":[],"usage":' + json.dumps(usage) + "}")
    frames.append("[DONE]")
    return frames


class _Feed:
    """One stream's source: the observer it was subscribed with, fed by the driver."""

    def __init__(self) -> None:
        self.observer: abc.ObserverBase[SSEMessage] | None = None

    def observable(self, client: Any, params: dict[str, Any]) -> Observable[SSEMessage]:
        def subscribe(
            observer: abc.ObserverBase[SSEMessage], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            self.observer = observer
            return Disposable()

        return Observable(subscribe)


async def run(streams: int, tokens: int, *, store: bool, db: Path) -> tuple[float, int]:
    """Feed ``streams`` streams of ``tokens`` tokens through; return (seconds, chunks)."""
    upstream = Upstream("load", base_url="http://127.0.0.1:9/v1")
    hub = StreamHub()
    metrics = Metrics()
    transcripts: Store | None = None
    if store:
        # Batches of batch_size events, as at 200 x 20 (4,000 events per 0.25 s); the
        # flush timer would make batch sizes depend on how fast the bench runs.
        transcripts = Store(
            f"sqlite+aiosqlite:///{db}", settings=StoreSettings(flush_interval=3600.0)
        )
        await transcripts.open()
    frames = _frames(tokens)
    params = {"model": "load", "messages": [{"role": "user", "content": "hi"}]}
    feeds = [_Feed() for _ in range(streams)]
    runs = []
    for i, feed in enumerate(feeds):
        events = failover(
            [upstream],
            params,
            stream_id=f"s{i}",
            metrics=metrics,
            client_factory=lambda u, k: None,  # type: ignore[arg-type,return-value]
            source_factory=feed.observable,
            first_token_timeout=30.0,
            idle_timeout=30.0,
            total_timeout=600.0,
        )
        stream = StreamRun(events, stream_id=f"s{i}", errors_mapped=True)
        hub.register(stream)
        metrics.attach(stream, model="load", upstream="load")
        if transcripts is not None:
            transcripts.attach(stream, request=params)
        stream.start()
        runs.append(stream)
    observers = [feed.observer for feed in feeds]
    assert all(o is not None for o in observers)
    started = time.process_time()  # every thread: the store writes from its own
    t = 0.0
    for frame in frames:
        t += 0.05
        for observer in observers:
            observer.on_next(SSEMessage(frame, t=t))  # type: ignore[union-attr]
        await asyncio.sleep(0)  # the store's writer drains when a batch is full
    for observer in observers:
        observer.on_completed()  # type: ignore[union-attr]
    if transcripts is not None:
        await transcripts.flush()
    elapsed = time.process_time() - started
    for stream in runs:
        assert stream.terminal is not None and stream.terminal.type == "finished"
    if transcripts is not None:
        await transcripts.close()
    return elapsed, streams * len(frames)


def _callgrind(argv: list[str], out_file: Path) -> int:
    command = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
        "--dump-instr=no", sys.executable, "-m", "bench.sink_path", *argv,
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    for line in out_file.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out_file}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sink_path", description=__doc__)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-store", action="store_true")
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--short", type=int, default=20)
    parser.add_argument("--long", type=int, default=120)
    args = parser.parse_args(argv)
    tmp = scratch_dir("rxllm-bench-sink-")
    if args.instructions:
        if shutil.which("valgrind") is None:
            print("valgrind is not installed", file=sys.stderr)
            return 2
        common = ["--streams", str(args.streams), "--rounds", "1"]
        common += ["--no-store"] if args.no_store else []
        a = _callgrind([*common, "--tokens", str(args.short)], tmp / "cg.short")
        b = _callgrind([*common, "--tokens", str(args.long)], tmp / "cg.long")
        per_chunk = (b - a) / (args.streams * (args.long - args.short))
        store = "no store" if args.no_store else "store"
        print(f"{per_chunk:.0f} instructions/chunk ({store}, {args.streams} streams)")
        return 0
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    best = float("inf")
    chunks = 0
    for _ in range(args.rounds):
        (tmp / "bench.db").unlink(missing_ok=True)
        seconds, chunks = asyncio.run(
            run(args.streams, args.tokens, store=not args.no_store, db=tmp / "bench.db")
        )
        best = min(best, seconds)
    store = "no store" if args.no_store else "store"
    print(f"{best / chunks * 1e6:.2f} µs/chunk ({store}, {chunks} chunks, best of {args.rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
