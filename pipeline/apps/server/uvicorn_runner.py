"""Running the server with uvicorn on a socket that gets ``TCP_NODELAY``."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import socket

import uvicorn

from pipeline.apps.server.access_log import redact_access_log
from pipeline.apps.server.collector_pacer import CollectorPacer
from pipeline.apps.server.connection_guard import guarded_protocol
from pipeline.apps.server.eager_requests import EagerRequests
from pipeline.apps.server.http_api import create_app
from pipeline.apps.server.server_settings import ServerSettings
from pipeline.core.errors import RxllmError

__all__ = ["GC_THRESHOLD", "LISTEN_BACKLOG", "ListenError", "listening_socket", "serve", "tune_gc"]

log = logging.getLogger("rxllm.serve")


LISTEN_BACKLOG = 2048
"""Connections the kernel queues before they are accepted (uvicorn's own default)."""


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound TCP socket made with ``proto=IPPROTO_TCP``.

    asyncio sets ``TCP_NODELAY`` on an accepted connection only when the
    listening socket's ``proto`` says TCP; a socket made without it silently
    keeps Nagle's algorithm on, which stalls small SSE writes until the
    client's delayed ACK (bench/README.md has the figure).
    ``reuse_port`` sets ``SO_REUSEPORT``: several workers listen on one port
    (:mod:`pipeline.apps.server.worker_supervisor`).
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the per-chunk path of a long-running server.

    Every chunk allocates a few short-lived containers, and the transcript
    store holds a batch of events until it is written, so the collector runs
    often and its full collections walk every object the imports made (the
    SDK, SQLAlchemy, pydantic: hundreds of thousands). ``gc.freeze()`` moves
    what exists after start-up out of the collector's sight, and a larger
    first-generation threshold makes collections rarer (the ``serve.proxy``
    row of ``python -m bench.run``; see ``bench/README.md``).

    Not too large: a stream keeps a few hundred tracked objects (reactivex
    subscriptions, tasks, the HTTP exchange) while it lasts, and a second-
    generation pass walks everything that survived ten first-generation
    ones: the larger the threshold, the longer each such pass, a pause every
    stream's next token waits for, while the total time in the collector
    stays the same. :data:`GC_THRESHOLD` is the compromise measured under
    many streams (bench/README.md, "Figures moved out of the code").
    :func:`serve` then hands the first generation's trigger to a
    :class:`~pipeline.apps.server.collector_pacer.CollectorPacer` with this
    threshold, which runs the passes between requests rather than inside one.
    """
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, second, third)


GC_THRESHOLD = 5_000
"""Allocations between first-generation collections in ``rxllm serve`` (CPython's default: 700)."""


class ListenError(RxllmError, OSError):
    """The server cannot listen on its address (the port is taken, the host is not ours...)."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        if cause.errno == errno.EADDRINUSE:
            why = "the port is in use (is another server running there? pick one with --port)"
        elif cause.errno == errno.EACCES:
            why = "permission denied (ports below 1024 need privileges: pick one with --port)"
        elif isinstance(cause, socket.gaierror) or cause.errno == errno.EADDRNOTAVAIL:
            why = "no such address on this machine (check --host)"
        else:
            why = cause.strerror or str(cause)
        super().__init__(f"cannot listen on {host}:{port}: {why}")
        self.cause = cause


def serve(settings: ServerSettings, *, log_level: str = "info", reuse_port: bool = False) -> None:
    """Serve until interrupted (Ctrl+C); ``reuse_port``: as one of several workers."""
    app = create_app(settings)
    tune_gc()
    try:
        sock = listening_socket(settings.host, settings.port, reuse_port=reuse_port)
    except OSError as exc:
        raise ListenError(settings.host, settings.port, exc) from None
    # Listening before the banner: a client that connects as soon as it reads the
    # banner is queued by the kernel until start-up (the store opened) is done,
    # rather than refused; uvicorn calls listen() again with its own backlog.
    sock.listen(LISTEN_BACKLOG)
    upstream = settings.upstream or settings.config or "the built-in model, any model name"
    print(
        f"rxllm serve: http://{settings.host}:{sock.getsockname()[1]}/ "
        f"(upstream: {upstream}; auth: {'on' if settings.auth_token else 'off'})",
        flush=True,
    )
    # h11, not httptools: uvicorn's httptools protocol answers an HTTP/1.0
    # request (nginx's default to upstreams) with chunked encoding, which
    # HTTP/1.0 does not have; h11 ends such a body by closing the connection.
    # uvicorn's h11 protocol with a header read timeout and a connection limit.
    metrics = app.state.gateway.metrics
    pacer = CollectorPacer(GC_THRESHOLD, on_pass=metrics.observe_gc_pause)
    eager = EagerRequests()

    def on_data() -> None:
        if not pacer.started:  # on the server's loop, which uvicorn makes: at the first request
            loop = asyncio.get_running_loop()
            pacer.start(loop)
            eager.install(loop)
        pacer.arrived()

    protocol = guarded_protocol(
        header_timeout=settings.header_timeout,
        max_connections=settings.max_connections,
        on_closed=metrics.inc_connection_closed,
        on_data=on_data,
        on_parsed=eager.run,
    )
    config = uvicorn.Config(
        app,
        log_level=log_level,
        timeout_graceful_shutdown=2,
        proxy_headers=False,
        http=protocol,
    )
    redact_access_log()  # after uvicorn.Config, which sets up its loggers
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        pacer.stop()
        sock.close()
    if not server.started:  # the lifespan failed (its error is logged above): say so, non-zero
        raise SystemExit("rxllm serve: start-up failed (see the error above)")
