"""The gateway: opens one pipeline per request and wires its sinks.

Every stream the server serves is a :class:`pipeline.runner.StreamRun` over
``failover(upstreams, request)`` (the standard chain per attempt, moving to
the next upstream on a retryable error before the first token) with these sinks
attached before it starts: the live-stream hub (resume with
``Last-Event-ID``), the metrics, and the transcript store (when enabled).
The gateway owns the upstream client, the built-in model (when no upstream
is configured) and the store, and closes them at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from pipeline.failover import Upstream, failover
from pipeline.hub import StreamHub
from pipeline.runner import StreamRun
from pipeline.server.config import FailoverOptions, load_config
from pipeline.server.errors import ApiError
from pipeline.server.settings import ServerSettings
from sinks.metrics import Metrics

__all__ = ["Gateway"]

log = logging.getLogger(__name__)


class Gateway:
    """The server's shared state: upstream client, hub, metrics, store."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        metrics: Metrics | None = None,
        hub: StreamHub | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.hub = hub or StreamHub(replay_size=settings.replay_size)
        self.store: Any = None
        self.models: frozenset[str] | None = None
        self.upstreams: list[Upstream] = []
        self.failover_options = FailoverOptions()
        self._mock: Any = None
        self._readers: dict[str, int] = {}
        self._orphan_timers: dict[str, asyncio.TimerHandle] = {}

    @property
    def upstream_label(self) -> str:
        """The metrics label of the upstreams: their names."""
        return "+".join(u.name for u in self.upstreams) or "none"

    async def startup(self) -> None:
        """Set up the upstreams (or start the built-in model), open the store."""
        settings = self.settings
        if settings.config is not None:
            config = load_config(settings.config)
            self.upstreams = [u.build() for u in config.upstreams]
            self.failover_options = config.failover
        elif settings.upstream is not None:
            self.upstreams = [Upstream("upstream", settings.upstream, settings.api_key)]
        else:
            from pipeline.mock import MockScript, MockServer

            rate = settings.mock_tokens_per_second
            script = MockScript(interval=1.0 / rate if rate > 0 else 0.0)
            self._mock = MockServer(script)
            await self._mock.__aenter__()
            self.upstreams = [Upstream("builtin", self._mock.base_url, "no-key-needed")]
            self.models = frozenset({"mock-model"})
        if settings.store:
            from sinks.store import Store

            self.store = Store(settings.db_url)
            await self.store.open()

    async def shutdown(self) -> None:
        """Cancel live streams, then close the store, the client and the built-in model."""
        for timer in self._orphan_timers.values():
            timer.cancel()
        self._orphan_timers.clear()
        for stream_id in self.hub.live():
            self.hub.cancel(stream_id, "server shutting down")
        if self.store is not None:
            await self.store.close()
        for upstream in self.upstreams:
            await upstream.aclose()
        if self._mock is not None:
            await self._mock.__aexit__(None, None, None)

    def default_model(self) -> str:
        """The model for requests that name none (the chat page, ``useChat``)."""
        if self.settings.model:
            return self.settings.model
        if self.models:
            return min(self.models)
        raise ApiError(
            400,
            "this request names no model and the server has no default: "
            "send 'model', or start rxllm serve with --model",
            param="model",
        )

    def open_stream(
        self, params: dict[str, Any], *, tools: Any = None, conversation_id: str | None = None
    ) -> StreamRun:
        """A new, not yet started, stream for a Chat Completions request.

        ``conversation_id`` keeps a conversation on one key of a sticky key pool.
        """
        stream_id = uuid.uuid4().hex
        params = dict(params)
        if params.get("stream_options") is None:
            params["stream_options"] = {"include_usage": True}
        events = failover(
            self.upstreams,
            params,
            stream_id=stream_id,
            tools=tools,
            conversation_id=conversation_id,
            metrics=self.metrics,
            **self.failover_options.kwargs(),
        )
        run = StreamRun(events, stream_id=stream_id)
        self.hub.register(run)
        self.metrics.attach(run, model=str(params.get("model")), upstream=self.upstream_label)
        if self.store is not None:
            self.store.attach(run, request=params)
        return run

    def reader_attached(self, stream_id: str) -> None:
        """A client started reading ``stream_id``: it is not orphaned."""
        self._readers[stream_id] = self._readers.get(stream_id, 0) + 1
        timer = self._orphan_timers.pop(stream_id, None)
        if timer is not None:
            timer.cancel()

    def reader_detached(self, stream_id: str) -> None:
        """A reader left; with none left, cancel the stream after the orphan timeout."""
        count = self._readers.get(stream_id, 1) - 1
        if count > 0:
            self._readers[stream_id] = count
            return
        self._readers.pop(stream_id, None)
        self.watch_orphan(stream_id)

    def watch_orphan(self, stream_id: str) -> None:
        """Cancel ``stream_id`` unless a reader attaches within the orphan timeout."""
        if stream_id in self._orphan_timers:
            return
        loop = asyncio.get_running_loop()

        def expire() -> None:
            self._orphan_timers.pop(stream_id, None)
            if not self._readers.get(stream_id) and stream_id in self.hub:
                self.hub.cancel(stream_id, "no client read the stream")

        self._orphan_timers[stream_id] = loop.call_later(self.settings.orphan_timeout, expire)
