"""An Anthropic Messages request as a Chat Completions request.

What maps to what is the table in ``docs/apis.md``. A field that cannot be
carried raises :class:`~pipeline.core.errors.UntranslatableError` naming it;
nothing is dropped silently, except what only means something to Anthropic
and is documented so: ``cache_control`` (a caching hint) and the thinking
blocks of earlier turns (Anthropic's signed record of its own reasoning,
which another provider can neither read nor verify).
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.core.errors import UntranslatableError

__all__ = ["anthropic_to_chat", "effort_for_budget"]

_SIMPLE = {"model": "model", "max_tokens": "max_tokens", "temperature": "temperature"}
_PASS = frozenset({"top_p", "mock"})  # same name and meaning (mock: the built-in model's script)
_IGNORED = frozenset({"stream", "cache_control"})
_DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})


def effort_for_budget(budget: int) -> str:
    """A thinking budget (tokens) as a reasoning effort: low, medium or high."""
    return "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"


def _text_of(blocks: Any, where: str) -> str:
    """The text of a string or a list of text blocks (the system prompt, a tool result)."""
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise UntranslatableError(where, "must be a string or a list of blocks")
    parts = []
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get("type") != "text":
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise UntranslatableError(
                f"{where}[{i}]", f"is a {kind!r} block: only text can be carried here"
            )
        parts.append(str(block.get("text", "")))
    return "\n\n".join(parts)


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise UntranslatableError(where, "is an image without a source")
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif source.get("type") == "url":
        url = str(source.get("url"))
    else:
        raise UntranslatableError(
            f"{where}.source", f"of type {source.get('type')!r} has no Chat Completions equivalent"
        )
    return {"type": "image_url", "image_url": {"url": url}}


def _user(content: Any, where: str) -> list[dict[str, Any]]:
    """One user turn: its tool results first (as ``tool`` messages), then the rest."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise UntranslatableError(where, "must be a string or a list of blocks")
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        at = f"{where}[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(_image(block, at))
        elif kind == "tool_result":
            text = _text_of(block.get("content", ""), f"{at}.content")
            if block.get("is_error"):
                text = f"(error) {text}"
            tools.append(
                {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}
            )
        else:
            raise UntranslatableError(
                at, f"is a {kind!r} block, which Chat Completions cannot take"
            )
    out = list(tools)
    if parts:
        text_only = all(p["type"] == "text" for p in parts)
        body: Any = "\n\n".join(p["text"] for p in parts) if text_only else parts
        out.append({"role": "user", "content": body})
    return out


def _assistant(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    if not isinstance(content, list):
        raise UntranslatableError(where, "must be a string or a list of blocks")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
        elif kind in _DROPPED_BLOCKS:
            continue
        else:
            raise UntranslatableError(
                f"{where}[{i}]", f"is a {kind!r} block, which Chat Completions cannot take"
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise UntranslatableError("tools", "must be a list")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise UntranslatableError(
                f"tools[{i}]",
                f"is Anthropic's server tool {kind!r}: no Chat Completions upstream runs it",
            )
        function: dict[str, Any] = {"name": tool.get("name")}
        if tool.get("description") is not None:
            function["description"] = tool["description"]
        function["parameters"] = tool.get("input_schema") or {"type": "object"}
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any, out: dict[str, Any]) -> None:
    if not isinstance(choice, dict):
        raise UntranslatableError("tool_choice", "must be an object")
    kind = choice.get("type")
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    else:
        raise UntranslatableError(
            "tool_choice.type", f"{kind!r} has no Chat Completions equivalent"
        )
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False


def _thinking(thinking: Any, out: dict[str, Any]) -> None:
    if not isinstance(thinking, dict):
        raise UntranslatableError("thinking", "must be an object")
    kind = thinking.get("type")
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        out["reasoning_effort"] = effort_for_budget(budget if isinstance(budget, int) else 0)
    elif kind not in ("disabled", "adaptive"):  # adaptive: the model decides, as it does there
        raise UntranslatableError("thinking.type", f"{kind!r} has no Chat Completions equivalent")


def _output_config(config: Any, out: dict[str, Any]) -> None:
    if not isinstance(config, dict):
        raise UntranslatableError("output_config", "must be an object")
    for key, value in config.items():
        if value is None:
            continue
        if key == "effort":
            out["reasoning_effort"] = {"xhigh": "high", "max": "high"}.get(value, value)
        elif key == "format":
            if not isinstance(value, dict) or value.get("type") != "json_schema":
                raise UntranslatableError("output_config.format", "must be a json_schema format")
            out["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": value.get("schema"), "strict": True},
            }
        else:
            raise UntranslatableError(f"output_config.{key}", "has no Chat Completions equivalent")


def anthropic_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The Chat Completions request for an Anthropic Messages request ``body``.

    Errors: :class:`UntranslatableError` naming the first field that cannot be carried.
    """
    out: dict[str, Any] = {}
    messages: list[dict[str, Any]] = []
    for key, value in body.items():
        if key in _SIMPLE:
            out[_SIMPLE[key]] = value
        elif key in _PASS:
            out[key] = value
        elif key in _IGNORED or value is None:
            continue
        elif key == "system":
            messages.insert(0, {"role": "system", "content": _text_of(value, "system")})
        elif key == "stop_sequences":
            out["stop"] = list(value)
        elif key == "tools":
            out["tools"] = _tools(value)
        elif key == "tool_choice":
            _tool_choice(value, out)
        elif key == "thinking":
            _thinking(value, out)
        elif key == "output_config":
            _output_config(value, out)
        elif key == "metadata":
            for name, item in (value or {}).items():
                if name != "user_id":
                    raise UntranslatableError(
                        f"metadata.{name}", "has no Chat Completions equivalent"
                    )
                out["user"] = item
        elif key == "service_tier" and value == "auto":
            continue
        elif key != "messages":
            raise UntranslatableError(key, "has no Chat Completions equivalent")
    turns = body.get("messages")
    if not isinstance(turns, list):
        raise UntranslatableError("messages", "must be a list")
    for i, turn in enumerate(turns):
        where = f"messages[{i}].content"
        role = turn.get("role") if isinstance(turn, dict) else None
        if role == "user":
            messages.extend(_user(turn.get("content"), where))
        elif role == "assistant":
            messages.append(_assistant(turn.get("content"), where))
        else:
            raise UntranslatableError(f"messages[{i}].role", f"{role!r} is not user or assistant")
    out["messages"] = messages
    return out
