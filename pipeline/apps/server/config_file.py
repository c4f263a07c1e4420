"""The ``rxllm serve --config FILE`` file: upstreams, key pools and failover settings.

A TOML file::

    [failover]
    retries = 2              # per upstream, after its first attempt
    backoff = 0.25           # seconds, doubled per retry, with jitter
    max_total = 30           # seconds in which an attempt may start
    max_wait = 2             # longest wait for a Retry-After; longer: a 429 at once
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

The ``[failover]`` table holds the fields of
:class:`pipeline.runtime.failover_options.FailoverOptions`. Keys belong in
environment variables (``api_key_env``), not in the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.runtime.failover_options import FailoverOptions
from pipeline.runtime.upstreams import UpstreamConfig

__all__ = ["GatewayConfig", "load_config"]


class GatewayConfig(BaseModel):
    """The whole config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upstreams: list[UpstreamConfig] = Field(min_length=1)
    failover: FailoverOptions = FailoverOptions()  # the [failover] table


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
