"""The Redis live-event bus: streams readable and cancellable from any ``rxllm serve`` process.

Several processes behind a load balancer share Redis: each publishes the
events of the streams it runs (:class:`RedisPublisher`, off the hot path,
batched, retried), so a client that reconnects to another process with
``Last-Event-ID`` is served from Redis (:func:`open_events`: what Redis holds
after that ``seq``, then live, to the terminal event); a cancel request sent
to any process reaches the one holding the upstream request
(:func:`publish_cancel`, :class:`CancelListener`). :class:`RedisBus` puts them
together on one client. Keys and ids: :mod:`sinks.redis_bus.settings`.

What Redis does not hold (a stream that ended long ago and expired, events
trimmed, dropped while Redis was down or lost in a restart) comes from the
transcript store, which the processes share too (PostgreSQL); the errors
(:mod:`sinks.redis_bus.bus_errors`) say when to fall back to it.

Known differences from a message broker: pub/sub cancel requests are
delivered at most once (a process disconnected at that moment misses one);
the owner record expires ``live_ttl`` seconds after a process dies.
"""

from __future__ import annotations

from sinks.redis_bus.bus import CancelOutcome, RedisBus
from sinks.redis_bus.bus_errors import (
    BusError,
    BusGapError,
    BusStreamNotFoundError,
    BusUnavailableError,
)
from sinks.redis_bus.cancel import CancelHandler, CancelListener, publish_cancel
from sinks.redis_bus.publisher import DropHook, RedisPublisher
from sinks.redis_bus.reader import last_event, open_events
from sinks.redis_bus.settings import BusSettings

__all__ = [
    "BusError",
    "BusGapError",
    "BusSettings",
    "BusStreamNotFoundError",
    "BusUnavailableError",
    "CancelHandler",
    "CancelListener",
    "CancelOutcome",
    "DropHook",
    "RedisBus",
    "RedisPublisher",
    "last_event",
    "open_events",
    "publish_cancel",
]
