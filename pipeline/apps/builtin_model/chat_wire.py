"""The Chat Completions wire format: ``chat.completion.chunk`` frames and ``chat.completion``.

A stream is: per choice a first chunk with ``delta: {"role": "assistant",
"content": ""}`` (``null`` if only tools are called), then reasoning
(``delta.reasoning_content``), text (``delta.content``) and tool calls (a
first chunk with ``id``, ``type`` and ``function.name``, then
``function.arguments`` fragments), then a chunk with the ``finish_reason``.
With ``n`` > 1 the choices' chunks interleave. With
``stream_options.include_usage`` every chunk carries ``"usage": null`` and a
last chunk has ``choices: []`` and the usage. The stream ends with
``data: [DONE]``. A mid-stream error is ``event: error`` with
``data: {"error": {...}}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipeline.apps.builtin_model.answer_script import Answer
from pipeline.apps.builtin_model.wire_frames import Frame, Meta, dumps

__all__ = ["FINGERPRINT", "ChatWriter", "chat_completion", "chat_usage"]

FINGERPRINT = "fp_rxllm_mock"

_Step = tuple[dict[str, Any], str | None, bool]  # delta, finish reason, is a token


class ChatWriter:
    """Makes the ``chat.completion.chunk`` frames of one answer."""

    def __init__(self, answer: Answer, meta: Meta) -> None:
        self.answer = answer
        self.meta = meta
        self._base: dict[str, Any] = {
            "id": meta.id("chatcmpl"),
            "object": "chat.completion.chunk",
            "created": meta.created,
            "model": meta.model,
            "system_fingerprint": FINGERPRINT,
        }
        if meta.include_usage:
            self._base["usage"] = None

    def frames(self) -> Iterator[Frame]:
        """Yield every frame of the stream, ``[DONE]`` last."""
        steps = zip(*(self._steps(c) for c in range(self.answer.n)), strict=True)
        for row in steps:
            for choice, (delta, finish, token) in enumerate(row):
                chunk = {
                    **self._base,
                    "choices": [
                        {"index": choice, "delta": delta, "logprobs": None, "finish_reason": finish}
                    ],
                }
                yield Frame(dumps(chunk), token=token)
        if self.meta.include_usage:
            usage = chat_usage(self.answer, self.meta)
            yield Frame(dumps({**self._base, "choices": [], "usage": usage}))
        yield Frame("[DONE]", check=False)

    def error(self, error: dict[str, Any]) -> Frame:
        """Return the ``event: error`` frame that reports ``error``."""
        return Frame(dumps({"error": error}), event="error", check=False)

    def _steps(self, choice: int) -> Iterator[_Step]:
        answer = self.answer
        content = "" if answer.text is not None else None  # null when only tools are called
        yield {"role": "assistant", "content": content, "refusal": None}, None, False
        for piece in answer.reasoning:
            yield {"reasoning_content": piece}, None, True
        for piece in answer.text or ():
            yield {"content": piece}, None, True
        for call in answer.tool_calls:
            head = {
                "index": call.index,
                "id": call.id or self.meta.id("call", choice, call.index),
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            yield {"tool_calls": [head]}, None, False
            for fragment in call.fragments:
                part = {"index": call.index, "function": {"arguments": fragment}}
                yield {"tool_calls": [part]}, None, True
        yield {}, answer.finish_reason, False


def chat_usage(answer: Answer, meta: Meta) -> dict[str, Any]:
    """Return the ``usage`` object of an answer (completion tokens of every choice)."""
    completion = answer.tokens_per_choice * answer.n
    return {
        "prompt_tokens": meta.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": meta.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": len(answer.reasoning) * answer.n,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(answer: Answer, meta: Meta) -> dict[str, Any]:
    """Return the non-streamed ``chat.completion`` body of an answer."""
    choices = []
    for choice in range(answer.n):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(answer.text) if answer.text is not None else None,
            "refusal": None,
        }
        if answer.reasoning:
            message["reasoning_content"] = "".join(answer.reasoning)
        if answer.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id or meta.id("call", choice, call.index),
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in answer.tool_calls
            ]
        choices.append(
            {
                "index": choice,
                "message": message,
                "logprobs": None,
                "finish_reason": answer.finish_reason,
            }
        )
    return {
        "id": meta.id("chatcmpl"),
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
        "usage": chat_usage(answer, meta),
    }
