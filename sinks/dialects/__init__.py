"""Dialects of the SSE responder: how a stream's events are written as SSE frames.

* ``rxllm`` (:class:`RxllmDialect`) -- every event as itself (``event: <type>``,
  its JSON as ``data``);
* ``openai`` (:class:`OpenAIDialect`) -- Chat Completions ``chat.completion.chunk``
  objects, so any OpenAI client can read a processed stream;
* ``vercel`` (:class:`VercelDialect`) -- the Vercel AI SDK UI message stream
  (v1), so a Next.js ``useChat`` front end works against a Python back end.

A dialect keeps per-stream state: make one per response, by class or with
:func:`make_dialect`. Every frame carries ``id: <seq>`` of the event it came
from, for ``Last-Event-ID``.

Example::

    dialect = make_dialect("openai", include_usage=True)
    frames = b"".join(dialect.encode(event) for event in events)

Errors: :func:`make_dialect` raises ``ValueError`` for an unknown name.
"""

from __future__ import annotations

from typing import Any

from sinks.dialects.anthropic_messages import AnthropicDialect
from sinks.dialects.chat_completions import OpenAIDialect, chat_usage
from sinks.dialects.dialect_base import Dialect, data_frame
from sinks.dialects.responses_api import ResponsesDialect
from sinks.dialects.rxllm_events import RxllmDialect
from sinks.dialects.vercel_ui import VercelDialect

__all__ = [
    "DIALECTS",
    "AnthropicDialect",
    "Dialect",
    "OpenAIDialect",
    "ResponsesDialect",
    "RxllmDialect",
    "VercelDialect",
    "chat_usage",
    "data_frame",
    "make_dialect",
]

#: The dialects by name.
DIALECTS: dict[str, type[Dialect]] = {
    "rxllm": RxllmDialect,
    "openai": OpenAIDialect,
    "vercel": VercelDialect,
    "responses": ResponsesDialect,
    "anthropic": AnthropicDialect,
}


def make_dialect(name: str, **options: Any) -> Dialect:
    """A new dialect by name (``rxllm``, ``openai``, ``vercel``, ``responses``,
    ``anthropic``) with its options.

    Errors: ``ValueError`` for an unknown name; ``TypeError`` for an option
    the dialect does not take.
    """
    cls = DIALECTS.get(name)
    if cls is None:
        raise ValueError(f"unknown SSE dialect {name!r}: use one of {', '.join(sorted(DIALECTS))}")
    return cls(**options)
