"""The gateway with ``redis_url``: orphans read elsewhere, Redis down, shutdown.

In-process gateways (the built-in model upstream) against a real
``redis-server``; the two-process tests are in ``test_multiprocess.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pipeline.apps.server.gateway import Gateway
from pipeline.apps.server.server_settings import ServerSettings
from pipeline.core.events import Cancelled, Finished
from sinks.redis_bus import RedisBus
from tests.redis_server import RedisServer, start_redis
from tests.redis_server import redis_server as redis_server

pytestmark = pytest.mark.services  # needs Redis, started by the tests


def params(n_words: int = 100, interval: float = 0.05) -> dict[str, Any]:
    text = " ".join(f"w{i}" for i in range(n_words))
    return {
        "model": "mock-model",
        "messages": [{"role": "user", "content": "hi"}],
        "mock": {"text": text, "interval": interval},
    }


@pytest.fixture
async def gateway(redis_server: RedisServer) -> AsyncIterator[Gateway]:
    settings = ServerSettings(
        store=False, redis_url=redis_server.url, orphan_timeout=0.2, instance="gw-a"
    )
    gw = Gateway(settings)
    await gw.startup()
    try:
        yield gw
    finally:
        await gw.shutdown()


async def test_a_stream_read_only_through_another_process_is_not_orphaned(
    gateway: Gateway, redis_server: RedisServer
) -> None:
    assert gateway.bus is not None
    async with RedisBus(redis_server.url, owner="gw-b") as elsewhere:
        run = gateway.open_stream(params())
        stream_id = run.stream_id or ""
        assert await gateway.bus.register(stream_id)
        run.start()
        elsewhere.reader_attached(stream_id)
        for _ in range(200):
            if await elsewhere.readers(stream_id) == 1:
                break
            await asyncio.sleep(0.01)
        gateway.watch_orphan(stream_id)
        await asyncio.sleep(0.8)  # four orphan timeouts
        assert run.terminal is None
        elsewhere.reader_detached(stream_id)
        terminal = await asyncio.wait_for(run.wait(), 5)
        assert isinstance(terminal, Cancelled)
        assert terminal.reason == "no client read the stream"


async def test_streams_run_while_redis_is_down_and_shutdown_does_not_hang(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    server = start_redis()
    url = server.url
    server.stop()
    settings = ServerSettings(store=False, redis_url=url, instance="gw-a")
    gw = Gateway(settings)
    await gw.startup()  # Redis need not be up
    try:
        run = gw.open_stream(params(n_words=5, interval=0.0))
        run.start()
        terminal = await asyncio.wait_for(run.wait(), 10)
        assert isinstance(terminal, Finished)
    finally:
        async with asyncio.timeout(15):
            await gw.shutdown()
    messages = [record.getMessage() for record in caplog.records]
    assert sum("cannot write to Redis" in m for m in messages) == 1
    assert sum("cancel listener lost Redis" in m for m in messages) == 1
