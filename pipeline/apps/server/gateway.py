"""The gateway: opens one pipeline per request and wires its sinks.

Every stream the server serves is a :class:`pipeline.runtime.multicast.StreamRun` over
``failover(upstreams, request)`` (the standard chain per attempt, moving to
the next upstream on a retryable error before the first token) with these sinks
attached before it starts: the live-stream hub (resume with
``Last-Event-ID``), the metrics, and the transcript store (when enabled).
The gateway owns the upstream client, the built-in model (when no upstream
is configured) and the store, and closes them at shutdown.

With ``redis_url`` set, every stream is also published to Redis
(:class:`sinks.redis_bus.RedisBus`) and the gateway listens there for cancel
requests from the other processes. A stream started with ``POST /v1/streams``
and read only through other processes is not orphaned: their readers are
counted in Redis (a process that dies while reading leaves its count until
the key expires, ``live_ttl``: the stream then runs to its end).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pipeline.apps.server.api_errors import ApiError
from pipeline.apps.server.config_file import load_config, with_default_timeouts
from pipeline.apps.server.model_list import ModelList
from pipeline.apps.server.server_settings import ServerSettings
from pipeline.core.errors import UntranslatableError
from pipeline.core.ids import new_stream_id
from pipeline.runtime.api_keys import NO_KEY
from pipeline.runtime.api_routing import attempt_source, plan_calls, tools_for
from pipeline.runtime.failover import failover
from pipeline.runtime.failover_options import FailoverOptions
from pipeline.runtime.multicast import StreamRun
from pipeline.runtime.stream_hub import StreamHub
from pipeline.runtime.upstreams import API_NAMES, Upstream
from sinks.metrics import Metrics

if TYPE_CHECKING:
    from sinks.redis_bus import RedisBus

__all__ = ["Gateway"]

log = logging.getLogger(__name__)

_MAX_CHATS = 10_000  # chats whose last answer is remembered for resume and stop


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
        self.builtin_default: str | None = None
        self.model_list = ModelList([])
        self.chat_tools: list[dict[str, Any]] = []  # offered on /api/chat (config [[tools]])
        self._chats: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
        self.upstreams: list[Upstream] = []
        self.failover_options = FailoverOptions()
        self.route_timeouts: dict[str, dict[str, float]] = {}
        self._mock: Any = None
        self._readers: dict[str, int] = {}
        self._orphan_timers: dict[str, asyncio.TimerHandle] = {}
        # Streams no request holds (POST /v1/streams, a resumable chat): only these are
        # cancelled once nobody reads them. A /v1/chat/completions stream is held by its
        # own response: a second reader (the inspector) leaving must not cancel it.
        self._orphanable: set[str] = set()
        self.bus: RedisBus | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def upstream_label(self) -> str:
        """The metrics label of the upstreams: their names."""
        return "+".join(u.name for u in self.upstreams) or "none"

    def _key_removed(self, upstream: str) -> Callable[[str], None]:
        """The hook a key pool calls when it takes a key out: count it."""

        def removed(_fingerprint: str) -> None:
            self.metrics.inc_key_removed(upstream)

        return removed

    @property
    def instance(self) -> str:
        """This process's name in Redis and as the store's owner."""
        settings = self.settings
        if settings.instance:
            return settings.instance
        port = str(settings.port) if settings.port else f"pid{os.getpid()}"
        return f"{socket.gethostname()}:{port}"

    async def startup(self) -> None:
        """Set up the upstreams (or start the built-in model), open the store and the bus."""
        settings = self.settings
        if settings.config is not None:
            config = load_config(settings.config)
            self.upstreams = [
                u.build(on_key_removed=self._key_removed(u.name)) for u in config.upstreams
            ]
            self.failover_options = config.failover
            self.chat_tools = [tool.openai() for tool in config.tools]
            self.route_timeouts = {path: r.timeouts() for path, r in config.routes.items()}
        elif settings.upstream is not None:
            self.upstreams = [
                Upstream(
                    "upstream", settings.upstream, settings.api_key, apis=settings.upstream_apis
                )
            ]
        else:
            from pipeline.apps.builtin_model import DEFAULT_MODEL, MockScript, MockServer

            rate = settings.mock_tokens_per_second
            # A short think before the first token, as a real model has, so the page's
            # time to first token shows something.
            script = MockScript(interval=1.0 / rate if rate > 0 else 0.0, stall=0.2)
            self._mock = MockServer(script)
            await self._mock.__aenter__()
            self.upstreams = [
                Upstream("builtin", self._mock.base_url, NO_KEY, prefill="prefix", apis=API_NAMES)
            ]
            # It answers to any model name, as the name asked; this one when none is.
            self.builtin_default = DEFAULT_MODEL
        given = {
            "first_token_timeout": settings.first_token_timeout,
            "idle_timeout": settings.idle_timeout,
            "total_timeout": settings.total_timeout,
        }
        options = self.failover_options.replace(
            **{name: value for name, value in given.items() if value is not None}
        )
        self.failover_options = with_default_timeouts(options)  # never without a timeout
        self._warm_up_clients()
        self.model_list = ModelList(self.upstreams, default=settings.model or self.builtin_default)
        if settings.store:
            from sinks.store import Store, StoreSettings

            # Processes sharing a database need distinct owners: one's open()
            # would otherwise mark the other's live streams interrupted.
            shared = settings.instance or settings.redis_url
            store_settings = StoreSettings(owner=self.instance) if shared else None
            metrics = self.metrics
            self.store = Store(
                settings.db_url,
                settings=store_settings,
                on_drop=lambda n: metrics.inc_store_buffer_dropped(n, sink="store"),
                on_available=lambda ok: metrics.set_store_unavailable(not ok),
                on_hold=metrics.set_store_streams_held,
            )
            await self.store.open()
        if settings.redis_url:
            from sinks.redis_bus import RedisBus

            self.bus = RedisBus(
                settings.redis_url,
                owner=self.instance,
                on_drop=lambda n: self.metrics.inc_store_buffer_dropped(n, sink="redis"),
            )
            await self.bus.open()
            self.bus.listen(self._remote_cancel)

    def _warm_up_clients(self) -> None:
        """Make each single-key upstream's client now, not on the first request.

        The first client costs tens of milliseconds (its TLS context, the SDK's
        chat modules imported on first use): a first request would wait for it.
        A key pool's clients are made on each key's first use.
        """
        for upstream in self.upstreams:
            if upstream.pool is None:  # the client failover will ask for: upstream.key's
                upstream.client(upstream.key).chat.completions  # noqa: B018 (imports on access)

    async def shutdown(self) -> None:
        """Cancel live streams, then close the store, the client and the built-in model."""
        for timer in self._orphan_timers.values():
            timer.cancel()
        self._orphan_timers.clear()
        self._orphanable.clear()
        for stream_id in self.hub.live():
            self.hub.cancel(stream_id, "server shutting down")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self.bus is not None:
            await self.bus.close()  # after the cancels: their terminal events are published
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
        if self.builtin_default is not None:
            return self.builtin_default
        raise ApiError(
            400,
            "this request names no model and the server has no default: "
            "send 'model', or start rxllm serve with --model",
            param="model",
        )

    def open_stream(
        self,
        params: dict[str, Any],
        *,
        tools: Any = None,
        conversation_id: str | None = None,
        continue_after_first_token: bool | None = None,
        api: str = "chat",
        route: str | None = None,
        **timeouts: float,
    ) -> StreamRun:
        """A new, not yet started, stream for a request of ``api`` (default Chat Completions).

        Each upstream takes it in its own API when it speaks ``api`` (the body
        as it is), else translated (:mod:`pipeline.runtime.api_routing`); a
        request no upstream can take is an :class:`ApiError` 400 naming the
        field, before any upstream call. ``conversation_id`` keeps a
        conversation on one key of a sticky key pool; ``timeouts``
        (``first_token_timeout``, ``idle_timeout``, ``total_timeout``)
        override the configured ones for this request,
        and so does ``continue_after_first_token`` (``None``: as configured;
        Chat Completions only). A continued stream's runs are stored too, as
        ``<id>.1``, ``<id>.2``... Which timeout applies, most specific first:
        the request's, the ``route``'s (the config file's
        ``[routes."/path"]``), the upstream's, the ``[failover]`` section's,
        the defaults (all finite).
        """
        stream_id = new_stream_id()
        params = dict(params)
        request_timeouts = {**self.route_timeouts.get(route or "", {}), **timeouts}
        if api == "chat" and all("chat" in u.apis for u in self.upstreams):
            if params.get("stream_options") is None:
                params["stream_options"] = {"include_usage": True}
            events = failover(
                self.upstreams,
                params,
                stream_id=stream_id,
                tools=tools,
                conversation_id=conversation_id,
                metrics=self.metrics,
                options=self.failover_options.replace(**_set(continue_after_first_token)),
                on_attempt=self._store_attempt if self.store is not None else None,
                request_timeouts=request_timeouts,
            )
        else:
            try:
                plan = plan_calls(self.upstreams, api, params)
            except UntranslatableError as exc:
                raise ApiError(400, str(exc), param=exc.field, code="untranslatable") from None
            events = failover(
                plan.upstreams,
                {"model": params.get("model")},
                stream_id=stream_id,
                tools=tools if tools is not None else tools_for(api, params),
                conversation_id=conversation_id,
                metrics=self.metrics,
                # a continuation is written in Chat Completions: not for these
                options=self.failover_options.replace(continue_after_first_token=False),
                attempt_source=attempt_source(plan),
                request_timeouts=request_timeouts,
            )
        run = StreamRun(events, stream_id=stream_id, errors_mapped=True)
        self.hub.register(run)
        self.metrics.attach(run, model=str(params.get("model")), upstream=self.upstream_label)
        if self.store is not None:
            self.store.attach(run, request=params)
        if self.bus is not None:
            self.bus.attach(run)
        return run

    def chat_started(self, chat_id: str, stream_id: str, message_id: str | None) -> None:
        """``useChat``'s chat ``chat_id`` is now answered by ``stream_id`` (its last answer)."""
        self._chats.pop(chat_id, None)
        self._chats[chat_id] = (stream_id, message_id)
        while len(self._chats) > _MAX_CHATS:
            self._chats.popitem(last=False)

    def chat_stream(self, chat_id: str) -> tuple[str, str | None] | None:
        """The live stream answering ``chat_id`` and its message id; ``None`` when none runs."""
        found = self._chats.get(chat_id)
        if found is None:
            return None
        run = self.hub.get(found[0])
        if run is None or run.terminal is not None:
            del self._chats[chat_id]
            return None
        return found

    def _store_attempt(self, n: int, request: Mapping[str, Any]) -> Any:
        """The store's sink for one run of a continued stream (its own transcript)."""
        return self.store.sink(request=request) if self.store is not None else None

    def _remote_cancel(self, stream_id: str, reason: str) -> None:
        """A cancel request from another process: cancel the stream if it is live here."""
        if stream_id in self.hub:
            self.hub.cancel(stream_id, reason)

    def reader_attached(self, stream_id: str) -> None:
        """A client started reading ``stream_id``: it is not orphaned."""
        self._readers[stream_id] = self._readers.get(stream_id, 0) + 1
        timer = self._orphan_timers.pop(stream_id, None)
        if timer is not None:
            timer.cancel()

    def reader_detached(self, stream_id: str) -> None:
        """A reader left; with none left, cancel an orphanable stream after the orphan timeout.

        Only a stream :meth:`watch_orphan` was called for: one that a request holds
        (``/v1/chat/completions``) ends with that request, whoever else read it.
        """
        count = self._readers.get(stream_id, 1) - 1
        if count > 0:
            self._readers[stream_id] = count
            return
        self._readers.pop(stream_id, None)
        if stream_id in self._orphanable:
            self.watch_orphan(stream_id)

    def watch_orphan(self, stream_id: str) -> None:
        """Cancel ``stream_id`` unless a reader attaches within the orphan timeout.

        From then on the stream is orphanable: whenever its last reader leaves, the
        timeout starts again, until the stream ends.
        """
        self._orphanable.add(stream_id)
        if stream_id in self._orphan_timers:
            return
        loop = asyncio.get_running_loop()

        def expire() -> None:
            self._orphan_timers.pop(stream_id, None)
            run = self.hub.get(stream_id)
            if run is None or run.terminal is not None:
                self._orphanable.discard(stream_id)  # it ended (or was dropped): done
                return
            if self._readers.get(stream_id):
                return
            if self.bus is None:
                self.hub.cancel(stream_id, "no client read the stream")
                return
            task = loop.create_task(self._expire_unless_read_elsewhere(stream_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._orphan_timers[stream_id] = loop.call_later(self.settings.orphan_timeout, expire)

    async def _expire_unless_read_elsewhere(self, stream_id: str) -> None:
        """Cancel an orphan unless a client reads it through another process (Redis says)."""
        from sinks.redis_bus import BusError

        assert self.bus is not None
        try:
            elsewhere = await self.bus.readers(stream_id)
        except BusError:
            elsewhere = 1  # Redis cannot say: look again later rather than cancel a read stream
        run = self.hub.get(stream_id)
        if self._readers.get(stream_id) or run is None or run.terminal is not None:
            return
        if elsewhere > 0:
            self.watch_orphan(stream_id)
        else:
            self.hub.cancel(stream_id, "no client read the stream")


def _set(continue_after_first_token: bool | None) -> dict[str, bool]:
    if continue_after_first_token is None:
        return {}
    return {"continue_after_first_token": continue_after_first_token}
