"""AI SDK UI messages (``useChat``'s ``parts``) to Chat Completions messages.

What the AI SDK's ``convertToModelMessages`` and then its OpenAI chat
provider do, in one step:

* ``system``: its text parts joined.
* ``user``: text parts; file parts (``image/*`` as ``image_url`` with its
  URL, ``audio/wav`` and ``audio/mpeg`` data URLs as ``input_audio``,
  ``application/pdf`` data URLs as a ``file``, a ``file-...`` id as its
  ``file_id``); a message of one text part is a plain string. ``data-*``
  parts are the app's own: not sent, as the SDK drops them without a converter.
* ``assistant``: split into steps at ``step-start`` parts; each step is one
  assistant message (its text parts joined, its tool calls with their input
  as JSON text) followed by one
  ``tool`` message per tool part that has an outcome: ``output-available``
  (the output, JSON text unless it is a string), ``output-error`` (the error
  text), ``output-denied`` (the denial's reason). A tool part still
  ``input-streaming`` is left out; one whose input is complete but has no
  output yet is sent as a call without result, as the SDK does. Tools the
  provider ran (``providerExecuted``) are not sent back. Reasoning parts are
  not sent: Chat Completions takes none.
* A message with a string ``content`` and no ``parts`` is passed as it is.

What cannot be carried over (a file type the API cannot take, audio or a
PDF by URL, a file in an assistant message, an unknown role) is a 400
naming it, never dropped silently.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from pipeline.apps.server.api_errors import ApiError

__all__ = ["ui_to_chat_messages"]

_AUDIO = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/mpeg": "mp3", "audio/mp3": "mp3"}
_NO_RESULT_STATES = frozenset({"input-streaming"})


def ui_to_chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat Completions messages for ``useChat``'s UI messages; ``ApiError`` (400) if one can't."""
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        role = message.get("role")
        parts = message.get("parts")
        if not isinstance(parts, list):
            content = message.get("content")
            if role not in ("system", "user", "assistant") or not isinstance(content, str):
                raise ApiError(
                    400,
                    f"{where} needs a 'parts' list (or a string 'content') and a role of "
                    "system, user or assistant",
                    param=where,
                )
            out.append({"role": role, "content": content})
            continue
        for i, part in enumerate(parts):
            if not isinstance(part, Mapping):
                at = f"{where}.parts.{i}"
                raise ApiError(400, f"{at} must be an object with a 'type'", param=at)
        if role == "system":
            texts = [
                _text(part, f"{where}.parts.{i}")
                for i, part in enumerate(parts)
                if part.get("type") == "text"
            ]
            out.append({"role": "system", "content": "".join(texts)})
        elif role == "user":
            out.append(_user(parts, where))
        elif role == "assistant":
            out.extend(_assistant(parts, where))
        else:
            raise ApiError(
                400, f"{where}: unsupported message role {role!r}", param=f"{where}.role"
            )
    return out


def _text(part: Mapping[str, Any], at: str) -> str:
    text = part.get("text")
    if not isinstance(text, str):
        raise ApiError(400, f"{at}.text must be a string", param=f"{at}.text")
    return text


def _user(parts: list[Mapping[str, Any]], where: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for i, part in enumerate(parts):
        kind = part.get("type")
        at = f"{where}.parts.{i}"
        if kind == "text":
            content.append({"type": "text", "text": _text(part, at)})
        elif kind == "file":
            content.append(_file(part, at, i))
    if len(content) == 1 and content[0]["type"] == "text":
        return {"role": "user", "content": content[0]["text"]}
    return {"role": "user", "content": content}


def _file(part: Mapping[str, Any], at: str, index: int) -> dict[str, Any]:
    media = part.get("mediaType")
    url = part.get("url")
    if not isinstance(media, str) or not isinstance(url, str):
        raise ApiError(400, f"{at}: a file part needs 'mediaType' and 'url' strings", param=at)
    if media.startswith("image/"):
        return {"type": "image_url", "image_url": {"url": url}}
    if media in _AUDIO and url.startswith("data:"):
        data = url.partition(",")[2]
        return {"type": "input_audio", "input_audio": {"data": data, "format": _AUDIO[media]}}
    if media == "application/pdf" and url.startswith("file-"):
        return {"type": "file", "file": {"file_id": url}}
    if media == "application/pdf" and url.startswith("data:"):
        filename = part.get("filename")
        name = filename if isinstance(filename, str) else f"part-{index}.pdf"
        return {"type": "file", "file": {"filename": name, "file_data": url}}
    raise ApiError(
        400,
        f"{at}: a file of type {media!r} by this URL cannot be sent to a Chat Completions "
        "model (images can; wav/mp3 audio and PDFs as data: URLs)",
        param=at,
    )


def _steps(parts: list[Mapping[str, Any]]) -> Iterator[list[tuple[int, Mapping[str, Any]]]]:
    step: list[tuple[int, Mapping[str, Any]]] = []
    for i, part in enumerate(parts):
        if part.get("type") == "step-start":
            if step:
                yield step
            step = []
        else:
            step.append((i, part))
    if step:
        yield step


def _tool_name(part: Mapping[str, Any]) -> str | None:
    kind = part.get("type")
    if kind == "dynamic-tool":
        name = part.get("toolName")
        return name if isinstance(name, str) else None
    if isinstance(kind, str) and kind.startswith("tool-"):
        return kind[5:]
    return None


def _assistant(parts: list[Mapping[str, Any]], where: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for step in _steps(parts):
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        for i, part in step:
            kind = part.get("type")
            at = f"{where}.parts.{i}"
            name = _tool_name(part)
            if kind == "text":
                texts.append(_text(part, at))
            elif kind == "file":
                raise ApiError(
                    400,
                    f"{at}: a file in an assistant message cannot go to a Chat Completions model",
                    param=at,
                )
            elif name is not None:
                state = part.get("state")
                if state in _NO_RESULT_STATES:
                    continue
                call_id = part.get("toolCallId")
                if not isinstance(call_id, str):
                    raise ApiError(400, f"{at}: a tool part needs a 'toolCallId' string", param=at)
                if part.get("providerExecuted") is True:
                    continue  # the provider ran it and holds its result
                arguments = part.get("input")
                if arguments is None and state == "output-error":
                    arguments = part.get("rawInput")
                calls.append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": name,
                            "arguments": _json(arguments if arguments is not None else {}),
                        },
                    }
                )
                result = _result(part, state)
                if result is not None:
                    results.append({"role": "tool", "tool_call_id": call_id, "content": result})
            # reasoning, data-*, source-*: not sent to a Chat Completions model
        if not texts and not calls:
            continue
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
        if calls:
            message["tool_calls"] = calls
        out.append(message)
        out.extend(results)
    return out


def _result(part: Mapping[str, Any], state: Any) -> str | None:
    if state == "output-available":
        output = part.get("output")
        return output if isinstance(output, str) else _json(output)
    if state == "output-error":
        error = part.get("errorText")
        return error if isinstance(error, str) else _json(error)
    if state == "output-denied":
        approval = part.get("approval")
        reason = approval.get("reason") if isinstance(approval, Mapping) else None
        return reason if isinstance(reason, str) else "Tool call execution denied."
    return None


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
