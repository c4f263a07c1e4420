"""Settings of ``rxllm serve``: from command-line flags, with environment fallbacks."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from pipeline.runtime.api_keys import API_KEY_VAR, BASE_URL_VAR, SERVE_KEY_VAR, api_key

__all__ = ["ServerSettings"]


@dataclass(frozen=True)
class ServerSettings:
    """Everything the server needs; secrets are kept out of ``repr``.

    ``upstream`` is a base URL, speaking the APIs of ``upstream_apis``
    (``chat``, ``responses``, ``anthropic``; default the first two); ``config`` a TOML file of
    upstreams, key pools and failover settings (:mod:`pipeline.apps.server.config_file`);
    with neither, the built-in model is started in-process, so the server
    runs with no key.

    ``redis_url`` turns on the live-event bus (:mod:`sinks.redis_bus`): several
    processes sharing Redis (and the store's database) resume and cancel each
    other's streams. ``instance`` names this process there and as the store's
    owner (default with Redis: ``host:port``).

    ``orphan_timeout`` is the grace (seconds) a stream started with ``POST
    /v1/streams`` gets while nobody reads it. ``first_token_timeout``,
    ``idle_timeout`` and ``total_timeout`` replace the defaults of
    :class:`pipeline.apps.server.config_file.FailoverOptions` (and the config
    file's ``[failover]`` values) for every upstream.

    ``allow_request_options`` lets a request body carry the OpenAI SDK's
    ``timeout`` and ``extra_query`` (the gateway's own upstream timeout and
    the upstream URL's query); without it they are a 400. ``body_timeout``
    and ``header_timeout`` (seconds) bound how long a client may take to
    send a request body and its headers; ``max_connections`` bounds the
    open connections (default: what the process's file limit leaves room for).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    upstream: str | None = None
    upstream_apis: tuple[str, ...] = ("chat", "responses")
    config: str | None = None
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    auth_token: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    db_url: str | None = None
    store: bool = True
    heartbeat: float = 15.0
    send_timeout: float = 10.0
    flush_interval: float = 0.0
    replay_size: int = 4096
    max_body: int = 4 * 1024 * 1024
    orphan_timeout: float = 5.0
    first_token_timeout: float | None = None
    idle_timeout: float | None = None
    total_timeout: float | None = None
    allow_request_options: bool = False
    body_timeout: float = 30.0
    header_timeout: float = 10.0
    max_connections: int | None = None
    mock_tokens_per_second: float = 30.0
    redis_url: str | None = field(default=None, repr=False)
    instance: str | None = None

    @classmethod
    def from_env(cls, **overrides: object) -> ServerSettings:
        """Defaults, then ``RXLLM_*`` / ``OPENAI_*`` variables, then ``overrides`` (not None)."""
        env = os.environ
        values: dict[str, object] = {
            "upstream": env.get("RXLLM_UPSTREAM") or env.get(BASE_URL_VAR),
            "upstream_apis": env.get("RXLLM_UPSTREAM_API"),
            "model": env.get("RXLLM_MODEL"),
            "config": env.get("RXLLM_CONFIG"),
            "api_key": api_key(SERVE_KEY_VAR, API_KEY_VAR, env=env),
            "auth_token": env.get("RXLLM_AUTH_TOKEN"),
            "db_url": env.get("RXLLM_DB_URL"),
            "redis_url": env.get("RXLLM_REDIS_URL"),
            "instance": env.get("RXLLM_INSTANCE"),
        }
        origins = env.get("RXLLM_CORS_ORIGINS")
        if origins:
            values["cors_origins"] = tuple(o.strip() for o in origins.split(",") if o.strip())
        values.update({k: v for k, v in overrides.items() if v is not None})
        apis = values.get("upstream_apis")
        if isinstance(apis, str):
            from pipeline.runtime.upstreams import parse_apis

            values["upstream_apis"] = parse_apis(apis)
        return cls(**{k: v for k, v in values.items() if v is not None})  # type: ignore[arg-type]
