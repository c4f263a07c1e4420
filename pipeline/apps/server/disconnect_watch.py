"""Noticing a client that leaves while a handler waits, before any response is sent.

A streaming response (:class:`sinks.sse_response.SSEResponse`) listens for
``http.disconnect`` itself, but only once it is sending. Before that -- a
non-streaming request waiting for the whole answer, a streaming one waiting
for its first token (or for a failover's backoff) to choose its status --
nobody would hear the client go, and the upstream request would run (and be
billed) to its end.

:func:`cancel_on_disconnect` listens for that time: when the ASGI server
reports ``http.disconnect`` (uvicorn does as soon as the socket closes or is
reset, once the request body has been read), it calls ``cancel(reason)``,
typically ``StreamRun.cancel``, which disposes the upstream request and
ends the stream with ``cancelled``.

Example::

    async with cancel_on_disconnect(request, run.cancel):
        run.start()
        terminal = await run.wait()     # returns early, cancelled, if the client left
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request
from starlette.types import Receive

from sinks.sse_response import CLIENT_GONE_HOOKS

__all__ = ["CLIENT_GONE", "cancel_on_disconnect"]

log = logging.getLogger(__name__)

CLIENT_GONE = "client disconnected"
"""The cancel reason (counted as ``client_gone`` by the metrics)."""


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


@contextlib.asynccontextmanager
async def cancel_on_disconnect(
    request: Request, cancel: Callable[[str], object]
) -> AsyncIterator[None]:
    """Call ``cancel("client disconnected")`` if the client leaves inside the block.

    Read the request body before entering: the listener takes what
    ``receive()`` gives. The listening task is cancelled and awaited on the
    way out, so a response can listen again after it. A server that calls
    the scope's :data:`sinks.sse_response.CLIENT_GONE_HOOKS` (``rxllm serve``)
    has ``cancel`` called in the callback where it learns the client left.
    """
    loop = asyncio.get_running_loop()
    done = False

    def gone() -> None:
        nonlocal done
        if not done:
            done = True
            log.debug("client left before the response started; cancelling its stream")
            cancel(CLIENT_GONE)

    async def listen() -> None:
        await _until_disconnect(request.receive)
        gone()

    hooks = request.scope.get(CLIENT_GONE_HOOKS)
    if isinstance(hooks, list):
        hooks.append(gone)
    task = loop.create_task(listen())
    try:
        yield
    finally:
        if isinstance(hooks, list):
            hooks.remove(gone)
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            log.error("the disconnect listener failed", exc_info=task.exception())
