"""``rxllm serve`` with a clock on the way of each probe's first token (for :mod:`bench.ttft_path`).

Run as ``python -m bench.ttft_trace serve ...`` (the arguments of
``rxllm serve``), with ``RXLLM_TTFT_TRACE`` naming a file. Before the server
starts, it wraps the functions a streamed chat completion passes through on
its way to its first token, and for each request whose body holds
:data:`MARK` it writes one line to the file: the milliseconds from the
request's first bytes to each stage (:data:`STAGES`), then four figures
of the whole way: ``cpu``, the main thread's CPU milliseconds; ``chunks``,
the chunks the server wrote to its clients meanwhile (other streams' work
the probe waited behind); ``gc``, the milliseconds the cyclic collector ran;
``tracked``, the objects the collector tracks that were made on the way and
are still alive (only when no collection ran). Every collection from the
first traced request on is a line of ``<file>.gc``: its generation and
milliseconds. The wrappers add a clock read per stage; other requests pay
the wrappers' calls and checks. Not a part of rxllm: it reaches into
private names, and fails at start when one moved.
"""

from __future__ import annotations

import functools
import gc
import inspect
import os
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["MARK", "STAGES", "install"]

MARK = b"probe answer"
"""What the probes' bodies hold (:func:`bench.real_rate._load`'s probe text)."""

STAGES = {
    "handler": "the route's handler runs (uvicorn, Starlette)",
    "body": "the body is read and parsed",
    "checked": "the request is validated and checked: gateway.open_stream starts",
    "opened": "the stream is made (failover chain, sinks attached): StreamRun.start starts",
    "source": "the source's task runs its first step",
    "pool": "the upstream request is built and reaches the connection pool",
    "sent": "the upstream request is written (pool, httpcore2, h11)",
    "subscribed": "StreamRun.start returns (the operators subscribed, the source's task made)",
    "headers": "the upstream's headers are parsed into a response (the model's answer)",
    "event": "the first event reaches the stream's sinks (the chunk read, decoded, operators)",
    "start": "the SSE response starts (the fan-out to the sinks)",
    "written": "the headers and the first token are written to the client",
}
"""Each stage's name and the point it marks. A line gives each stage's time from the
request's first bytes; the stages come in this order but for ``source``, ``pool`` and
``sent``, which come before ``subscribed`` when the source's task starts eagerly."""

_now = time.perf_counter


class _Clock:
    """The stages of the request being traced (one at a time: the probes are sequential)."""

    def __init__(self, path: str) -> None:
        self.out = open(path, "a")  # noqa: SIM115 - open for the server's life
        self.start: float | None = None
        self.times: dict[str, float] = {}
        self.run: Any = None  # the traced request's StreamRun
        self.cpu = 0.0  # the main thread's CPU time when the request arrived
        self.chunks = 0  # chunks written to any client so far
        self.chunks_before = 0  # ... when the request arrived
        self.tracked = 0  # the collector's young count when the request arrived
        self.collecting = 0.0  # seconds in the collector since the request arrived
        self.collections: Any = None  # the collections' file, from the first request on
        self.collection_began = 0.0
        gc.callbacks.append(self._collection)

    def _collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.collection_began = _now()
            return
        took = _now() - self.collection_began
        if self.start is not None:
            self.collecting += took
        if self.collections is not None:
            self.collections.write(f"{info['generation']} {took * 1000:.3f}\n")
            self.collections.flush()

    def begin(self) -> None:
        if self.collections is None:
            self.collections = open(self.out.name + ".gc", "a")  # noqa: SIM115
        self.start, self.times, self.run = _now(), {}, None
        self.cpu, self.tracked, self.collecting = time.thread_time(), gc.get_count()[0], 0.0
        self.chunks_before = self.chunks

    def mark(self, stage: str, after: str | None = None) -> None:
        """Record ``stage`` once per request (only once ``after`` is, if given)."""
        if self.start is None or stage in self.times:
            return
        if after is not None and after not in self.times:
            return
        self.times[stage] = _now()
        if stage == "written":
            start = self.start
            line = " ".join(f"{k}={(v - start) * 1000:.3f}" for k, v in self.times.items())
            line += f" cpu={(time.thread_time() - self.cpu) * 1000:.3f}"
            line += f" chunks={self.chunks - self.chunks_before}"
            line += f" gc={self.collecting * 1000:.3f}"
            if not self.collecting:
                line += f" tracked={gc.get_count()[0] - self.tracked}"
            self.out.write(line + "\n")
            self.out.flush()
            self.start = None


def _before(owner: Any, name: str, action: Callable[[tuple[Any, ...]], None]) -> None:
    """Wrap ``owner.name`` (sync or async) so that ``action(args)`` runs before it."""
    original = getattr(owner, name)
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
            action(args)
            return await original(*args, **kwargs)

        setattr(owner, name, wrapped_async)
        return

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        action(args)
        return original(*args, **kwargs)

    setattr(owner, name, wrapped)


def install(path: str) -> None:
    """Wrap the stages' functions; each traced request appends its line to ``path``."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from pipeline.apps.server import chunked_body, gateway, http_api
    from pipeline.runtime import direct_request, http_backend, http_pool, multicast
    from sinks import sse_response

    clock = _Clock(path)

    def arrived(args: tuple[Any, ...]) -> None:
        if MARK in args[1]:
            clock.begin()

    _before(H11Protocol, "data_received", arrived)
    names = vars(http_api)  # read_json as the handlers find it: a global of their module
    read_json = names["read_json"]

    async def traced_read_json(*args: Any, **kwargs: Any) -> Any:
        clock.mark("handler")
        body = await read_json(*args, **kwargs)
        clock.mark("body")
        return body

    names["read_json"] = traced_read_json
    _before(gateway.Gateway, "open_stream", lambda _: clock.mark("checked", "body"))
    start = multicast.StreamRun.start

    def traced_start(self: Any) -> None:
        if clock.start is not None and clock.run is None and "checked" in clock.times:
            clock.run = self
            clock.mark("opened")
        start(self)
        if self is clock.run:
            clock.mark("subscribed")

    multicast.StreamRun.start = traced_start  # type: ignore[method-assign]
    _before(direct_request.DirectResponse, "__aenter__", lambda _: clock.mark("source", "opened"))
    _before(http_pool.LightPool, "handle_async_request", lambda _: clock.mark("pool", "source"))

    def written(args: tuple[Any, ...]) -> None:
        if MARK in args[1]:
            clock.mark("sent", "pool")

    _before(http_backend.AsyncioStream, "write", written)
    enter = direct_request.DirectResponse.__aenter__

    async def traced_enter(self: Any) -> Any:
        opened = await enter(self)
        clock.mark("headers", "sent")
        return opened

    direct_request.DirectResponse.__aenter__ = traced_enter  # type: ignore[method-assign]

    def event(args: tuple[Any, ...]) -> None:
        if args[0] is clock.run:
            clock.mark("event")

    _before(multicast.StreamRun, "_on_next", event)
    _before(sse_response.SSEResponse, "_start_now", lambda _: clock.mark("start", "event"))

    def first_token(args: tuple[Any, ...]) -> None:
        clock.chunks += 1
        if b"probe" in args[1]:
            clock.mark("written", "start")

    _before(chunked_body.ChunkedBodySend, "write_now", first_token)


def main() -> None:
    """Install the clock, then run ``rxllm``'s command line with this process's arguments."""
    install(os.environ["RXLLM_TTFT_TRACE"])
    from pipeline.apps.cli import main as cli

    sys.argv[0] = "rxllm"
    cli()


if __name__ == "__main__":
    main()
