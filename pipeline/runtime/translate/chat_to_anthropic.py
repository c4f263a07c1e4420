"""A Chat Completions request as an Anthropic Messages request.

What maps to what is the table in ``docs/apis.md``. A field that cannot be
carried raises :class:`~pipeline.core.errors.UntranslatableError` naming it.
Anthropic requires ``max_tokens``: without one, :data:`DEFAULT_MAX_TOKENS`.
Consecutive messages of one role are joined into one turn (tool results
become the ``tool_result`` blocks of a user turn).
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.core.errors import UntranslatableError

__all__ = ["BUDGETS", "DEFAULT_MAX_TOKENS", "chat_to_anthropic"]

#: ``max_tokens`` for a request that names none (Anthropic requires one).
DEFAULT_MAX_TOKENS = 4096

#: The thinking budget (tokens) for each reasoning effort.
BUDGETS = {"low": 1024, "medium": 4096, "high": 16384}

_PASS = frozenset({"model", "top_p", "mock"})
_IGNORED = frozenset({"stream", "stream_options", "store"})


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if content is None:
        return []
    if not isinstance(content, list):
        raise UntranslatableError(where, "must be a string or a list of parts")
    out: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            out.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            image = part.get("image_url") or {}
            url = image.get("url", "") if isinstance(image, dict) else str(image)
            out.append({"type": "image", "source": _image_source(url)})
        else:
            raise UntranslatableError(
                f"{where}[{i}]", f"is a {kind!r} part, which Anthropic Messages cannot take"
            )
    return out


def _image_source(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        media_type = head[len("data:") :].split(";")[0]
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _text(content: Any, where: str) -> str:
    blocks = _blocks(content, where)
    if any(b["type"] != "text" for b in blocks):
        raise UntranslatableError(where, "holds an image: only text can be carried here")
    return "\n\n".join(b["text"] for b in blocks)


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        raise UntranslatableError(where, "is not a function tool call")
    arguments = function.get("arguments") or "{}"
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        raise UntranslatableError(
            f"{where}.function.arguments",
            "is not JSON: Anthropic takes a tool's input as an object",
        ) from None
    return {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": parsed}


def _turns(messages: Any, out: dict[str, Any]) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        raise UntranslatableError("messages", "must be a list")
    system: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system.append(_text(message.get("content"), f"{where}.content"))
        elif role == "user":
            add("user", _blocks(message.get("content"), f"{where}.content"))
        elif role == "assistant":
            blocks = _blocks(message.get("content"), f"{where}.content")
            for j, call in enumerate(message.get("tool_calls") or ()):
                blocks.append(_tool_use(call, f"{where}.tool_calls[{j}]"))
            add("assistant", blocks)
        elif role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id"),
                "content": _text(message.get("content"), f"{where}.content"),
            }
            add("user", [result])
        else:
            raise UntranslatableError(f"{where}.role", f"{role!r} has no Anthropic equivalent")
    if system:
        out["system"] = "\n\n".join(system)
    return turns


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise UntranslatableError("tools", "must be a list")
    out = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function":
            raise UntranslatableError(f"tools[{i}]", "is not a function tool")
        converted: dict[str, Any] = {"name": function.get("name")}
        if function.get("description") is not None:
            converted["description"] = function["description"]
        converted["input_schema"] = function.get("parameters") or {"type": "object"}
        if function.get("strict") is not None:
            converted["strict"] = function["strict"]
        out.append(converted)
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    raise UntranslatableError("tool_choice", f"{choice!r} has no Anthropic equivalent")


def chat_to_anthropic(body: dict[str, Any]) -> dict[str, Any]:
    """The Anthropic Messages request for a Chat Completions request ``body``.

    Errors: :class:`UntranslatableError` naming the first field that cannot be carried.
    """
    out: dict[str, Any] = {}
    for key, value in body.items():
        if value is None or key in _IGNORED:
            continue
        if key in _PASS:
            out[key] = value
        elif key in ("max_tokens", "max_completion_tokens"):
            out["max_tokens"] = value
        elif key == "temperature":
            if not isinstance(value, int | float) or value > 1:
                raise UntranslatableError("temperature", "must be between 0 and 1 for Anthropic")
            out["temperature"] = value
        elif key == "stop":
            out["stop_sequences"] = [value] if isinstance(value, str) else list(value)
        elif key == "tools":
            out["tools"] = _tools(value)
        elif key == "tool_choice":
            out["tool_choice"] = _tool_choice(value)
        elif key == "reasoning_effort":
            if value in BUDGETS:
                out["thinking"] = {"type": "enabled", "budget_tokens": BUDGETS[value]}
            elif value not in ("none", "minimal"):
                raise UntranslatableError(
                    "reasoning_effort", f"{value!r} is not low, medium or high"
                )
        elif key == "response_format":
            kind = value.get("type") if isinstance(value, dict) else None
            if kind == "json_schema":
                schema = (value.get("json_schema") or {}).get("schema")
                out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
            elif kind != "text":
                raise UntranslatableError(
                    "response_format", f"{kind!r} has no Anthropic equivalent (use json_schema)"
                )
        elif key == "user":
            out["metadata"] = {"user_id": value}
        elif key == "n" and value == 1:
            continue
        elif key == "parallel_tool_calls":
            if value is False:
                out["_no_parallel"] = True
        elif key != "messages":
            raise UntranslatableError(key, "has no Anthropic Messages equivalent")
    out["messages"] = _turns(body.get("messages"), out)
    out.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
    if out.pop("_no_parallel", False):
        choice = out.setdefault("tool_choice", {"type": "auto"})
        choice["disable_parallel_tool_use"] = True
    thinking = out.get("thinking")
    if thinking is not None and out["max_tokens"] <= thinking["budget_tokens"]:
        # Anthropic wants the budget below max_tokens: the answer keeps its own allowance.
        out["max_tokens"] += thinking["budget_tokens"]
    return out
