"""The ``rxllm serve --config FILE`` file: upstreams, key pools and failover settings.

A TOML file::

    [failover]
    retries = 2              # per upstream, after its first attempt
    backoff = 0.25           # seconds, doubled per retry, with jitter
    max_total = 30           # seconds in which an attempt may start
    first_token_timeout = 15
    idle_timeout = 60

    [[upstreams]]            # tried in this order before the first token
    name = "openai"
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEYS"   # "k1,k2": a key pool
    models = { fast = "gpt-4o-mini" }

    [[upstreams]]
    name = "backup"
    base_url = "http://10.0.0.7:8000/v1"
    models = { "*" = "llama-3.1-70b" }

Keys belong in environment variables (``api_key_env``), not in the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.runtime.upstreams import UpstreamConfig

__all__ = ["FailoverOptions", "GatewayConfig", "load_config"]


class FailoverOptions(BaseModel):
    """Keyword arguments of :func:`pipeline.runtime.failover.failover`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retries: int = Field(default=2, ge=0)
    backoff: float = Field(default=0.25, ge=0)
    max_backoff: float = Field(default=4.0, ge=0)
    jitter: float = Field(default=0.5, ge=0, le=1)
    max_total: float = Field(default=30.0, gt=0)
    first_token_timeout: float | None = Field(default=None, gt=0)
    idle_timeout: float | None = Field(default=None, gt=0)
    total_timeout: float | None = Field(default=None, gt=0)

    def kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments."""
        return self.model_dump()


class GatewayConfig(BaseModel):
    """The whole config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upstreams: list[UpstreamConfig] = Field(min_length=1)
    failover: FailoverOptions = FailoverOptions()


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a config file; ``ValueError`` says what is wrong and where."""
    try:
        data = tomllib.loads(Path(path).read_text("utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read the config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"the config file {path} is not valid TOML: {exc}") from None
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"the config file {path} is not valid:\n{exc}") from None
