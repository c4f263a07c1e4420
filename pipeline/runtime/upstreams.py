"""Upstreams: where a request can go, with which key(s), and the client that takes it there.

:class:`Upstream` is one endpoint (base URL, one key or a
:class:`~pipeline.runtime.key_pool.KeyPool`, model aliases, per-upstream
timeouts, the APIs it speaks: ``chat``, ``responses``, ``anthropic``) and
makes its clients, one per key and event loop: ``AsyncOpenAI`` for Chat
Completions and Responses, ``AsyncAnthropic`` for Anthropic Messages (which
sends ``x-api-key`` and ``anthropic-version``).
:class:`UpstreamConfig` is the same upstream as written in a config file.
:func:`pipeline.runtime.failover.failover` tries them in order.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from weakref import WeakKeyDictionary

from openai import AsyncOpenAI
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from pipeline.core.redaction import redact_url
from pipeline.runtime.api_keys import ANTHROPIC_KEY_VAR, NO_KEY, client_key, keys_from
from pipeline.runtime.api_keys import api_key as api_key_from
from pipeline.runtime.http_backend import http_client
from pipeline.runtime.key_pool import KeyPool, fingerprint

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

__all__ = [
    "API_NAMES",
    "ClientFactory",
    "Cooldown",
    "Upstream",
    "UpstreamConfig",
    "parse_apis",
]

ApiName = Literal["chat", "responses", "anthropic"]

_DEFAULT_APIS: list[ApiName] = ["chat", "responses"]

#: The APIs an upstream can speak, as ``--upstream-api`` and ``apis = [...]`` name them.
API_NAMES: tuple[str, ...] = ("chat", "responses", "anthropic")


def parse_apis(value: str | Iterable[str]) -> tuple[str, ...]:
    """``"chat,responses"`` (or a list) as a tuple of API names; ``ValueError`` for others."""
    names = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    unknown = [name for name in names if name not in API_NAMES]
    if unknown or not names:
        raise ValueError(
            f"unknown upstream API {', '.join(map(repr, unknown)) or '(none given)'}: "
            f"use one or more of {', '.join(API_NAMES)}"
        )
    return tuple(dict.fromkeys(names))


class Cooldown:
    """Until when an upstream asked not to be asked again (its 429's Retry-After).

    ``clock`` gives monotonic seconds (inject a fake one in tests). Thread-safe
    enough for its one job: a float written and read whole.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._until = -math.inf

    def cool(self, seconds: float) -> None:
        """Ask for no request in the next ``seconds`` (a later end wins)."""
        if math.isfinite(seconds) and seconds > 0:
            self._until = max(self._until, self.clock() + seconds)

    def wait_time(self) -> float:
        """Seconds until the upstream may be asked again (0: now)."""
        return max(0.0, self._until - self.clock())


@dataclass(frozen=True, eq=False)
class Upstream:
    """One OpenAI-compatible upstream: where, with which key(s), which model names.

    ``api_key`` is one key (sent as is, never removed) or a
    :class:`KeyPool`; ``None`` takes ``OPENAI_API_KEY`` (or sends a dummy key,
    for local servers that want none). ``models`` maps a requested model name
    to this upstream's name for it (``"*"``: any other name). The timeouts
    (seconds) override those given to :func:`failover` for this upstream.
    ``cooldown`` remembers a pool-less upstream's last Retry-After across
    requests (a pool keeps one per key). ``client_options`` go to
    ``AsyncOpenAI`` (``timeout``, ``default_headers``...; without an
    ``http_client``, :func:`pipeline.runtime.http_backend.http_client` is used).
    ``prefill`` is how a cut answer is sent back to it to be continued
    (:mod:`pipeline.runtime.continuation`): ``"prefix"`` (a trailing assistant
    message with ``prefix: true``), ``"instruction"`` or ``"none"``.
    The repr shows fingerprints, never keys.
    ``apis`` are the APIs it speaks (default Chat Completions and Responses); for
    ``anthropic``, ``base_url`` is the one the ``anthropic`` SDK takes
    (``https://api.anthropic.com``; a trailing ``/v1`` is dropped for it, so one
    URL serves all three on a server that speaks them all) and a missing key is
    ``ANTHROPIC_API_KEY``'s.
    """

    name: str
    base_url: str | None = None
    api_key: str | KeyPool | None = field(default=None, repr=False)
    models: Mapping[str, str] = field(default_factory=dict)
    first_token_timeout: float | None = None
    idle_timeout: float | None = None
    total_timeout: float | None = None
    client_options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    cooldown: Cooldown = field(default_factory=Cooldown, repr=False)
    prefill: Literal["prefix", "instruction", "none"] = "instruction"
    apis: tuple[str, ...] = ("chat", "responses")
    # One client per key and event loop (an httpx pool belongs to one loop).
    _clients: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str | None, AsyncOpenAI]] = field(
        default_factory=WeakKeyDictionary, init=False, repr=False
    )
    _anthropic_clients: WeakKeyDictionary[
        asyncio.AbstractEventLoop, dict[str | None, AsyncAnthropic]
    ] = field(default_factory=WeakKeyDictionary, init=False, repr=False)

    @property
    def pool(self) -> KeyPool | None:
        """The key pool, if ``api_key`` is one."""
        return self.api_key if isinstance(self.api_key, KeyPool) else None

    @property
    def key(self) -> str | None:
        """The one key, if ``api_key`` is not a pool (``None``: none given)."""
        return self.api_key if isinstance(self.api_key, str) else None

    def model_for(self, model: Any) -> Any:
        """This upstream's name for the requested ``model``."""
        if isinstance(model, str):
            return self.models.get(model, self.models.get("*", model))
        return model

    def client(self, api_key: str | None = None) -> AsyncOpenAI:
        """The ``AsyncOpenAI`` client for ``api_key`` on the running loop (cached, no retries).

        Raises ``RuntimeError`` outside a running event loop.
        """
        loop = asyncio.get_running_loop()
        clients = self._clients.setdefault(loop, {})
        client = clients.get(api_key)
        if client is None:
            key = client_key(api_key)
            options = {**self.client_options, "max_retries": 0}  # failover does the retries
            if "http_client" not in options:
                options["http_client"] = http_client()  # the asyncio-native network backend
            client = AsyncOpenAI(base_url=self.base_url, api_key=key, **options)
            clients[api_key] = client
        return client

    def anthropic_client(self, api_key: str | None = None) -> AsyncAnthropic:
        """The ``AsyncAnthropic`` client for ``api_key`` on the running loop (cached, no retry).

        On the asyncio-native network backend, like :meth:`client`'s.
        """
        from anthropic import AsyncAnthropic, DefaultAsyncHttpxClient

        loop = asyncio.get_running_loop()
        clients = self._anthropic_clients.setdefault(loop, {})
        client = clients.get(api_key)
        if client is None:
            key = api_key or api_key_from(ANTHROPIC_KEY_VAR) or NO_KEY
            base = self.base_url.rstrip("/").removesuffix("/v1") if self.base_url else None
            options = {
                k: v for k, v in self.client_options.items() if k in ("timeout", "default_headers")
            }
            # The asyncio-native network backend, as for the openai client.
            options["http_client"] = http_client(DefaultAsyncHttpxClient)
            client = AsyncAnthropic(base_url=base, api_key=key, max_retries=0, **options)
            clients[api_key] = client
        return client

    async def aclose(self) -> None:
        """Close the clients made on the running loop."""
        loop = asyncio.get_running_loop()
        clients = self._clients.pop(loop, {})
        for client in clients.values():
            await client.close()
        for other in self._anthropic_clients.pop(loop, {}).values():
            await other.close()

    def __repr__(self) -> str:
        key = self.api_key
        keys = (
            repr(key)
            if isinstance(key, KeyPool)
            else fingerprint(key)
            if isinstance(key, str)
            else None
        )
        base_url = redact_url(self.base_url) if self.base_url else self.base_url
        return f"Upstream({self.name!r}, base_url={base_url!r}, keys={keys})"


ClientFactory = Callable[[Upstream, str | None], AsyncOpenAI]
"""Makes (or finds) the client of an upstream for one key (``None``: no key)."""


class UpstreamConfig(BaseModel):
    """One upstream as written in a config file; :meth:`build` makes the :class:`Upstream`.

    Keys come from ``api_key`` / ``api_keys`` (secret strings: their repr is
    masked) or from environment variables: ``api_key_env`` names one holding
    a key, or several separated by commas or whitespace. Several keys make a
    :class:`KeyPool` (``cooldown``, ``max_cooldown``, ``sticky``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_keys: list[SecretStr] = Field(default_factory=list)
    api_key_env: str | None = None
    models: dict[str, str] = Field(default_factory=dict)
    first_token_timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    idle_timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    total_timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    cooldown: float = Field(default=1.0, ge=0)
    max_cooldown: float = Field(default=60.0, ge=0)
    sticky: bool = True
    pool: bool | None = None  # None: a pool when there is more than one key
    prefill: Literal["prefix", "instruction", "none"] = "instruction"
    apis: list[ApiName] = Field(default_factory=lambda: _DEFAULT_APIS.copy(), min_length=1)

    def keys(self) -> list[str]:
        """Every key configured, environment variables read now."""
        keys = [k.get_secret_value() for k in ([self.api_key] if self.api_key else [])]
        keys += [k.get_secret_value() for k in self.api_keys]
        if self.api_key_env:
            keys += keys_from(self.api_key_env)
        return keys

    def build(self, *, on_key_removed: Callable[[str], None] | None = None) -> Upstream:
        """Make the :class:`Upstream`; raises ``ValueError`` if a pool has no key."""
        keys = self.keys()
        api_key: str | KeyPool | None = keys[0] if len(keys) == 1 else None
        if self.pool or (self.pool is None and len(keys) > 1):
            api_key = KeyPool(
                keys,
                cooldown=self.cooldown,
                max_cooldown=self.max_cooldown,
                sticky=self.sticky,
                on_key_removed=on_key_removed,
                name=self.name,
            )
        return Upstream(
            self.name,
            self.base_url,
            api_key,
            dict(self.models),
            self.first_token_timeout,
            self.idle_timeout,
            self.total_timeout,
            prefill=self.prefill,
            apis=tuple(dict.fromkeys(self.apis)),
        )
