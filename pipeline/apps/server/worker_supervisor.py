"""Several ``rxllm serve`` worker processes on one port (``rxllm serve --workers N``).

One process runs on one core: at a real token rate (20 tokens/s) it carries
a couple of hundred streams within the latency targets
(``bench/README.md``). ``--workers N`` forks N servers that listen on the same port
with ``SO_REUSEPORT``, so the kernel spreads the connections over them.

A stream lives in the worker that started it, and a client's next request
may reach another worker: resuming a stream, reading one started with
``POST /v1/streams`` and cancelling one all go through Redis, as between
separate processes (``--redis``, required with more than one worker; the
transcript store should be a database the workers share, PostgreSQL best).
Worker ``i`` is named ``<instance>/<i>`` in Redis and as the store's owner,
the same name after a restart, so a restarted worker marks only its own
streams of before as interrupted.

The supervisor (the process started) binds the port first and keeps it,
forks the workers before it starts any thread or event loop, restarts a
worker that exits on its own (after a second), and on SIGINT or SIGTERM
stops them all and waits for them.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import signal
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from pipeline.apps.server.server_settings import ServerSettings

__all__ = ["WorkersError", "run_workers"]

log = logging.getLogger("rxllm.serve")

RESTART_DELAY = 1.0
"""Seconds before a worker that exited on its own is started again."""


class WorkersError(ValueError):
    """The settings can't run several workers (what to change is in the message)."""


def _worker(settings: ServerSettings, log_level: str) -> None:
    from pipeline.apps.server.uvicorn_runner import serve

    # Until uvicorn takes the signals over, a Ctrl+C (sent to the whole process group)
    # is the supervisor's to handle: it stops the workers with SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(settings, log_level=log_level, reuse_port=True)


def run_workers(settings: ServerSettings, workers: int, *, log_level: str = "info") -> None:
    """Run ``workers`` servers on ``settings.host:settings.port`` until interrupted.

    Errors: :class:`WorkersError` without ``redis_url`` or with ``workers`` < 2.
    """
    from pipeline.apps.server.uvicorn_runner import listening_socket

    if workers < 2:
        raise WorkersError(f"--workers needs at least 2 to run workers, got {workers}")
    if not settings.redis_url:
        raise WorkersError(
            "several workers share their streams through Redis (a client's next request "
            "may reach another worker): pass --redis URL"
        )
    held = listening_socket(settings.host, settings.port, reuse_port=True)  # keeps the port
    port = held.getsockname()[1]
    base = settings.instance or f"{settings.host}:{port}"
    context = multiprocessing.get_context("fork")
    stopping = False

    def start(index: int) -> BaseProcess:
        named = dataclasses.replace(settings, port=port, instance=f"{base}/{index}")
        process = context.Process(
            target=_worker, args=(named, log_level), name=f"rxllm-worker-{index}", daemon=False
        )
        process.start()
        return process

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"rxllm serve: {workers} workers on http://{settings.host}:{port}/", flush=True)
    processes = {index: start(index) for index in range(1, workers + 1)}
    try:
        while not stopping:
            time.sleep(0.2)
            for index, process in list(processes.items()):
                if process.exitcode is not None and not stopping:
                    log.warning("worker %d exited (%s); starting it again", index, process.exitcode)
                    time.sleep(RESTART_DELAY)
                    processes[index] = start(index)
    finally:
        for process in processes.values():
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + 10
        for process in processes.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(5)
        held.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
