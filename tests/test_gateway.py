"""The server's gateway in process: what it sets up at start-up."""

from __future__ import annotations

from typing import Any

import pytest
from openai import AsyncOpenAI

import pipeline.runtime.upstreams
from pipeline.apps.builtin_model import MockServer
from pipeline.apps.server.gateway import Gateway
from pipeline.apps.server.server_settings import ServerSettings
from pipeline.core.events import Finished


async def test_the_upstream_client_is_made_at_startup_not_on_the_first_request(
    upstream: MockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[AsyncOpenAI] = []

    def counting(*args: Any, **kwargs: Any) -> AsyncOpenAI:
        client = AsyncOpenAI(*args, **kwargs)
        made.append(client)
        return client

    monkeypatch.setattr(pipeline.runtime.upstreams, "AsyncOpenAI", counting)
    gw = Gateway(ServerSettings(store=False, upstream=upstream.base_url, api_key="k"))
    await gw.startup()
    try:
        assert len(made) == 1
        run = gw.open_stream(
            {
                "model": "mock-model",
                "messages": [{"role": "user", "content": "hi"}],
                "mock": {"text": "hello"},
            }
        )
        run.start()
        assert isinstance(await run.wait(), Finished)
        assert len(made) == 1  # the request used the client made at start-up
    finally:
        await gw.shutdown()
