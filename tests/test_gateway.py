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


async def test_a_reader_leaving_a_stream_its_own_client_holds_never_cancels_it(
    upstream: MockServer,
) -> None:
    """A second reader of a /v1/chat/completions stream (the inspector following it) that
    leaves must not start the orphan timer: the request's own client still holds it."""
    settings = ServerSettings(
        store=False, upstream=upstream.base_url, api_key="k", orphan_timeout=0.05
    )
    gw = Gateway(settings)
    await gw.startup()
    try:
        mock = {"text": " ".join(["word"] * 12), "interval": 0.03}
        run = gw.open_stream(
            {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}], "mock": mock}
        )
        run.start()
        stream_id = run.stream_id or ""
        gw.reader_attached(stream_id)  # the inspector's EventSource...
        gw.reader_detached(stream_id)  # ...closed: its tab went away
        assert isinstance(await run.wait(), Finished)  # not cancelled 50 ms later
    finally:
        await gw.shutdown()


async def test_a_stream_nobody_holds_is_still_cancelled_once_its_last_reader_leaves(
    upstream: MockServer,
) -> None:
    from pipeline.core.events import Cancelled

    settings = ServerSettings(
        store=False, upstream=upstream.base_url, api_key="k", orphan_timeout=0.05
    )
    gw = Gateway(settings)
    await gw.startup()
    try:
        mock = {"text": " ".join(["word"] * 200), "interval": 0.03}
        run = gw.open_stream(
            {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}], "mock": mock}
        )
        run.start()
        stream_id = run.stream_id or ""
        gw.watch_orphan(stream_id)  # what POST /v1/streams does: no request holds it
        gw.reader_attached(stream_id)
        gw.reader_detached(stream_id)
        terminal = await run.wait()
        assert isinstance(terminal, Cancelled) and terminal.reason == "no client read the stream"
    finally:
        await gw.shutdown()
