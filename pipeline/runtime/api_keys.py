"""API keys from the environment: which variables, read in one place.

* ``OPENAI_API_KEY`` (and ``OPENAI_BASE_URL``): the OpenAI SDK's own
  variables. A client rxllm makes without a key sends ``OPENAI_API_KEY``, or
  a placeholder for local servers that want none (the SDK refuses to make a
  client without any key).
* ``RXLLM_UPSTREAM_API_KEY``: ``rxllm serve``'s key for its upstream; it
  wins over ``OPENAI_API_KEY``.
* ``ANTHROPIC_API_KEY``: the anthropic SDK's own, for an upstream speaking
  Anthropic Messages that was given no key.
* A config file's ``api_key_env`` names a variable holding one key, or
  several separated by commas or whitespace (a key pool).

Every function takes ``env`` (default: ``os.environ``), so tests pass a dict.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = [
    "ANTHROPIC_KEY_VAR",
    "API_KEY_VAR",
    "BASE_URL_VAR",
    "NO_KEY",
    "SERVE_KEY_VAR",
    "api_key",
    "client_key",
    "keys_from",
    "upstream_in_env",
]

API_KEY_VAR = "OPENAI_API_KEY"
ANTHROPIC_KEY_VAR = "ANTHROPIC_API_KEY"
BASE_URL_VAR = "OPENAI_BASE_URL"
SERVE_KEY_VAR = "RXLLM_UPSTREAM_API_KEY"
NO_KEY = "unused"
"""The key sent when none is configured: local servers want none, the SDK wants one."""


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def api_key(*names: str, env: Mapping[str, str] | None = None) -> str | None:
    """The first of the variables ``names`` set and not empty (default: ``OPENAI_API_KEY``)."""
    values = _env(env)
    for name in names or (API_KEY_VAR,):
        value = values.get(name)
        if value:
            return value
    return None


def keys_from(name: str, env: Mapping[str, str] | None = None) -> list[str]:
    """The keys in variable ``name``: one, or several separated by commas or whitespace."""
    return _env(env).get(name, "").replace(",", " ").split()


def client_key(key: str | None, env: Mapping[str, str] | None = None) -> str:
    """The key a client sends: ``key``, else ``OPENAI_API_KEY``, else :data:`NO_KEY`."""
    return key or api_key(env=env) or NO_KEY


def upstream_in_env(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment names an upstream (``OPENAI_BASE_URL`` or ``OPENAI_API_KEY``)."""
    values = _env(env)
    return bool(values.get(BASE_URL_VAR) or values.get(API_KEY_VAR))
