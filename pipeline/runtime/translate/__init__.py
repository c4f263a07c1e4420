"""Requests translated between the APIs: Chat Completions, Responses, Anthropic Messages.

One module per direction (``anthropic_to_chat``, ``responses_to_chat``,
``chat_to_anthropic``); Chat Completions is the pivot, so a Responses request
reaches an Anthropic-only upstream through it. The answer needs no
translation back: every upstream's stream becomes the one event model, and
the route's dialect writes it in the route's API.

:func:`upstream_api` picks the API to call an upstream with: the route's own
when it speaks it (the body then goes as it is), else Chat Completions, else
Anthropic Messages. :func:`translate_request` raises
:class:`~pipeline.core.errors.UntranslatableError` naming the first field
that cannot be carried. The mapping table is ``docs/apis.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.core.errors import UntranslatableError
from pipeline.runtime.translate.anthropic_to_chat import anthropic_to_chat
from pipeline.runtime.translate.chat_to_anthropic import chat_to_anthropic
from pipeline.runtime.translate.responses_to_chat import responses_to_chat

__all__ = [
    "anthropic_to_chat",
    "chat_to_anthropic",
    "responses_to_chat",
    "translate_request",
    "upstream_api",
]

_PREFERENCE = ("chat", "anthropic")


def upstream_api(route_api: str, apis: Sequence[str]) -> str | None:
    """The API to call an upstream speaking ``apis`` with, for a ``route_api`` request.

    ``None``: no translation reaches it (a Responses-only upstream for another API).
    """
    if route_api in apis:
        return route_api
    for api in _PREFERENCE:
        if api in apis:
            return api
    return None


def translate_request(body: dict[str, Any], source: str, target: str) -> dict[str, Any]:
    """``body`` (a ``source`` API request) as a ``target`` API request.

    Errors: :class:`UntranslatableError` naming the first field that cannot
    be carried, or the whole request when there is no way from one to the other.
    """
    if source == target:
        return body
    chat = body
    if source == "anthropic":
        chat = anthropic_to_chat(body)
    elif source == "responses":
        chat = responses_to_chat(body)
    elif source != "chat":
        raise UntranslatableError("(request)", f"comes from an unknown API {source!r}")
    if target == "chat":
        return chat
    if target == "anthropic":
        return chat_to_anthropic(chat)
    raise UntranslatableError("(request)", f"cannot be translated from {source} to {target}")
