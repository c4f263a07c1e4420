"""CPU of one bookkeeping pass of the HTTP client's connection pool, by open connections.

httpcore2's pool runs a pass (``_assign_requests_to_connections``) when a
request arrives and when a response closes: twice per streamed request. With
N long streams open it walks N connections each time.
:class:`pipeline.runtime.http_pool.LightPool` (what rxllm's ``http_client()``
uses) leaves the connections requests hold unasked. This times one pass of
each over pools of real httpcore2 connection objects (HTTP/1.1, each held by
an in-flight request, a few idle), one new request queued, in a tight loop;
the floor is a pass over an empty pool. Rounds alternate the two pools.

A tight loop keeps every object in the CPU's cache; in ``rxllm serve`` at
200 streams at 20 tokens/s, where each object is a cache miss, a throwaway
timer around the pass measured several times these figures (bench/README.md,
"The connection pool's pass").

    python -m bench.pool_pass
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpcore2
from httpcore2._async.connection import AsyncHTTPConnection
from httpcore2._async.connection_pool import AsyncPoolRequest
from httpcore2._async.http11 import AsyncHTTP11Connection, HTTPConnectionState
from httpcore2._models import Origin

from pipeline.runtime.http_pool import LightPool

ORIGIN = Origin(b"http", b"127.0.0.1", 8000)
URL = b"http://127.0.0.1:8000/v1/chat/completions"


def _connection(state: HTTPConnectionState) -> AsyncHTTPConnection:
    connection = AsyncHTTPConnection(origin=ORIGIN)
    inner = AsyncHTTP11Connection(origin=ORIGIN, stream=None)  # type: ignore[arg-type]
    inner._state = state
    connection._connection = inner
    return connection


def _pool(kind: type[httpcore2.AsyncConnectionPool], open_: int) -> Any:
    """A pool with ``open_`` connections, all but a few held by requests, one request queued."""
    pool = kind(max_connections=10_000, max_keepalive_connections=100)
    idle = min(4, open_)
    for i in range(open_):
        state = HTTPConnectionState.IDLE if i < idle else HTTPConnectionState.ACTIVE
        connection = _connection(state)
        pool._connections.append(connection)
        if state is HTTPConnectionState.ACTIVE:
            request = AsyncPoolRequest(httpcore2.Request("POST", URL))
            request.connection = connection
            pool._requests.append(request)
    return pool


def _time_pass(pool: Any, passes: int) -> float:
    """Microseconds of CPU per pass; the queued request is put back in the queue each time."""
    queued = AsyncPoolRequest(httpcore2.Request("POST", URL))
    pool._requests.append(queued)
    connections = list(pool._connections)
    start = time.process_time()
    for _ in range(passes):
        queued.connection = None
        pool._connections = list(connections)
        pool._assign_requests_to_connections()
    return (time.process_time() - start) / passes * 1e6


async def _measure(sizes: list[int], passes: int, rounds: int) -> None:
    print(f"{'open':>6} {'floor':>8} {'httpcore2':>10} {'LightPool':>10}   µs per pass")
    for size in sizes:
        figures: dict[str, list[float]] = {"floor": [], "httpcore2": [], "light": []}
        for _ in range(rounds):
            figures["floor"].append(_time_pass(_pool(LightPool, 0), passes))
            figures["httpcore2"].append(
                _time_pass(_pool(httpcore2.AsyncConnectionPool, size), passes)
            )
            figures["light"].append(_time_pass(_pool(LightPool, size), passes))
        best = {name: min(values) for name, values in figures.items()}
        print(
            f"{size:>6} {best['floor']:>8.1f} {best['httpcore2']:>10.1f} {best['light']:>10.1f}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pool_pass", description=__doc__)
    parser.add_argument("--sizes", default="10,200,1000")
    parser.add_argument("--passes", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    asyncio.run(_measure(sizes, args.passes, args.rounds))  # the pool's events need a loop
    return 0


if __name__ == "__main__":
    sys.exit(main())
