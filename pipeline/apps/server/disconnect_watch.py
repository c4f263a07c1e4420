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
    way out, so a response can listen again after it.
    """
    loop = asyncio.get_running_loop()

    async def listen() -> None:
        await _until_disconnect(request.receive)
        log.debug("client left before the response started; cancelling its stream")
        cancel(CLIENT_GONE)

    task = loop.create_task(listen())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            log.error("the disconnect listener failed", exc_info=task.exception())
