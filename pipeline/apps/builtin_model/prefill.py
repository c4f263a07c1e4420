"""How the mock continues an answer it was given the start of (a "prefill").

A cut answer is continued by sending the request again with the answer so far
at the start of the assistant's turn. The mock recognizes both ways of doing
that and continues its scripted answer from where the given text ends, the
same way every time, so a continuation is testable without a real model:

* **prefix**: the last message is an ``assistant`` message (with ``prefix:
  true``, as DeepSeek and Mistral take it, or without, as Anthropic takes a
  prefill). The mock continues after the longest common start of its answer
  and that text: exactly where it ends, as those APIs do.
* **instruction**: the last message is a ``user`` or ``system`` message (the
  instruction to continue, whatever its words) right after an ``assistant``
  message whose text is a proper start of the mock's answer. The mock then
  repeats the last ``continue_overlap`` words of that text before going on
  (0: none), as a model asked to continue often does; anything else is an
  ordinary conversation and is answered as usual.

In both, the answer is the one for the last ``user`` message before the
assistant message. Reasoning and tool calls are sent again whole (a model
thinks again; the caller drops what it already has).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.apps.builtin_model.answer_script import Answer, split_tokens

__all__ = ["Prefill", "continue_answer", "find_prefill"]

_WORD = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class Prefill:
    """The start of the assistant's turn given in a request."""

    text: str
    prefix: bool  # True: a trailing assistant message; False: followed by an instruction
    prompt: str | None  # the last user message before it


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _role(message: Any) -> str | None:
    return message.get("role") if isinstance(message, dict) else None


def _last_user(messages: Sequence[Any], before: int) -> str | None:
    for message in reversed(messages[:before]):
        if _role(message) == "user":
            return _text(message.get("content"))
    return None


def find_prefill(body: Mapping[str, Any]) -> Prefill | None:
    """The prefill of a Chat Completions request, if it has one; see the module docstring."""
    messages = body.get("messages")
    if not isinstance(messages, list) or len(messages) < 2:
        return None
    last = len(messages) - 1
    if _role(messages[last]) == "assistant":
        text = _text(messages[last].get("content"))
        return Prefill(text, True, _last_user(messages, last))
    if _role(messages[last]) in ("user", "system") and _role(messages[last - 1]) == "assistant":
        text = _text(messages[last - 1].get("content"))
        if text:
            return Prefill(text, False, _last_user(messages, last - 1))
    return None


def _common(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def continue_answer(answer: Answer, prefill: Prefill, overlap_words: int = 0) -> Answer | None:
    """``answer`` from where ``prefill`` ends; ``None`` if it does not continue it.

    An instruction continues only a text that is a proper start of the
    answer's text; ``overlap_words`` of its last words are said again.
    """
    if answer.text is None:
        if not prefill.prefix:
            return None
        return answer  # only tool calls: sent again whole
    full = "".join(answer.text)
    if prefill.prefix:
        start = _common(full, prefill.text)
    else:
        if len(prefill.text) >= len(full) or not full.startswith(prefill.text):
            return None
        start = len(prefill.text)
        if overlap_words > 0:
            words = list(_WORD.finditer(prefill.text))
            if words:
                start = words[max(0, len(words) - overlap_words)].start()
    rest = full[start:]
    return Answer(
        text=tuple(split_tokens(rest)) if rest else (),
        reasoning=answer.reasoning,
        tool_calls=answer.tool_calls,
        n=answer.n,
        finish_reason=answer.finish_reason,
    )
