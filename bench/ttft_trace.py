"""``rxllm serve`` with a clock on the way of each probe's first token (for :mod:`bench.ttft_path`).

Run as ``python -m bench.ttft_trace serve ...`` (the arguments of
``rxllm serve``), with ``RXLLM_TTFT_TRACE`` naming a file. Before the server
starts, it wraps the functions a streamed chat completion passes through on
its way to its first token, and for each request whose body holds
:data:`MARK` it writes one line to the file: the milliseconds from the
request's first bytes to each stage (:data:`STAGES`). The wrappers add a
clock read per stage; other requests pay a dictionary lookup. Not a part of
rxllm: it reaches into private names, and fails at start when one moved.
"""

from __future__ import annotations

import functools
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
    "handler": "the request's bytes to the route's handler (uvicorn, Starlette, a loop turn)",
    "body": "the body read and parsed",
    "checked": "validated, checked (pydantic, the request's rules)",
    "opened": "gateway.open_stream: the failover chain, the sinks attached",
    "subscribed": "StreamRun.start: the operators subscribed, the source's task created",
    "source": "the source's task runs (a loop turn)",
    "pool": "the upstream request built, down to the connection pool",
    "sent": "the pool, httpcore2 and h11: the request written",
    "headers": "the upstream's answer: its headers parsed into a response",
    "event": "the first chunk read, decoded and through the operators",
    "start": "the fan-out to the sinks, up to the SSE response's start",
    "written": "the headers and the first token written to the client",
}
"""Each stage's name, in order, and what happens between it and the one before."""

_now = time.perf_counter


class _Clock:
    """The stages of the request being traced (one at a time: the probes are sequential)."""

    def __init__(self, path: str) -> None:
        self.out = open(path, "a")  # noqa: SIM115 - open for the server's life
        self.start: float | None = None
        self.times: dict[str, float] = {}

    def begin(self) -> None:
        self.start, self.times = _now(), {}

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
    _before(multicast.StreamRun, "start", lambda _: clock.mark("opened", "checked"))
    _before(
        direct_request.DirectResponse, "__aenter__", lambda _: clock.mark("source", "subscribed")
    )
    start = multicast.StreamRun.start

    def traced_start(self: Any) -> None:
        start(self)
        clock.mark("subscribed", "opened")

    multicast.StreamRun.start = traced_start  # type: ignore[method-assign]
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
    _before(multicast.StreamRun, "_on_next", lambda _: clock.mark("event", "headers"))
    _before(sse_response.SSEResponse, "_start_now", lambda _: clock.mark("start", "event"))

    def first_token(args: tuple[Any, ...]) -> None:
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
