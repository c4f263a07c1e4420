"""The ``rxllm serve --config FILE`` file: upstreams, key pools and failover settings.

A TOML file::

    [failover]
    retries = 2              # per upstream, after its first attempt
    backoff = 0.25           # seconds, doubled per retry, with jitter
    max_total = 30           # seconds in which an attempt may start
    max_wait = 2             # longest wait for a Retry-After; longer: a 429 at once
    first_token_timeout = 15  # defaults: 60, 30, 600 seconds (never none)
    idle_timeout = 60
    continue_after_first_token = true   # a cut answer goes on (docs/continuation.md)
    max_continuations = 1
    total_timeout = 600

    [routes."/api/chat"]     # a route's own timeouts win over the upstreams'
    first_token_timeout = 10

    [[upstreams]]            # tried in this order before the first token
    name = "openai"
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEYS"   # "k1,k2": a key pool
    models = { fast = "gpt-4o-mini" }

    [[upstreams]]
    name = "claude"
    base_url = "https://api.anthropic.com"
    apis = ["anthropic"]              # the APIs it speaks (default ["chat", "responses"])
    api_key_env = "ANTHROPIC_API_KEY"
    models = { fast = "claude-haiku-4-5" }

    [[upstreams]]
    name = "backup"
    base_url = "http://10.0.0.7:8000/v1"
    apis = ["chat"]
    models = { "*" = "llama-3.1-70b" }
    prefill = "prefix"       # how a cut answer is sent back: prefix, instruction, none

    [[tools]]                # offered to the model on /api/chat (useChat), run by the page
    name = "get_weather"
    description = "The current weather of a city"
    parameters = { type = "object", properties = { city = { type = "string" } } }

The ``[failover]`` table holds the fields of
:class:`pipeline.runtime.failover_options.FailoverOptions`. Keys belong in
environment variables (``api_key_env``), not in the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from jsonschema import SchemaError, validators
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.runtime.failover_options import FailoverOptions
from pipeline.runtime.upstreams import UpstreamConfig

__all__ = [
    "DEFAULT_TIMEOUTS",
    "GatewayConfig",
    "RouteOptions",
    "ToolDeclaration",
    "load_config",
    "with_default_timeouts",
]

DEFAULT_TIMEOUTS = {"first_token_timeout": 60.0, "idle_timeout": 30.0, "total_timeout": 600.0}
"""The server's upstream timeouts (seconds) where nothing else sets one: to the first
token (the upstream may think a while), without an event after it, for a whole attempt."""


def with_default_timeouts(options: FailoverOptions) -> FailoverOptions:
    """``options`` with :data:`DEFAULT_TIMEOUTS` for the timeouts it leaves unset."""
    unset = {k: v for k, v in DEFAULT_TIMEOUTS.items() if getattr(options, k) is None}
    return options.replace(**unset)


class RouteOptions(BaseModel):
    """One route's timeouts (seconds): they win over the upstreams' and the defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    first_token_timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    idle_timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    total_timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    def timeouts(self) -> dict[str, float]:
        """The timeouts this route sets, by name."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ToolDeclaration(BaseModel):
    """A function tool the deployment offers the model on ``/api/chat`` (a ``[[tools]]`` table).

    ``parameters`` is the JSON schema of its arguments, checked when the file
    is read. The tool runs in the browser (``useChat``'s ``onToolCall``), not here.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    @field_validator("parameters")
    @classmethod
    def _a_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            validators.validator_for(value).check_schema(value)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON schema: {exc.message}") from None
        return value

    def openai(self) -> dict[str, Any]:
        """The tool as a Chat Completions request's ``tools`` item."""
        function = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


class GatewayConfig(BaseModel):
    """The whole config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upstreams: list[UpstreamConfig] = Field(min_length=1)
    failover: FailoverOptions = FailoverOptions()  # the [failover] table
    tools: list[ToolDeclaration] = Field(default_factory=list)  # the [[tools]] tables
    routes: dict[str, RouteOptions] = Field(default_factory=dict)  # [routes."/path"] tables


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
