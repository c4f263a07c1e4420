"""A Responses API request as a Chat Completions request.

What maps to what is the table in ``docs/apis.md``. A field that cannot be
carried raises :class:`~pipeline.core.errors.UntranslatableError` naming it.
Reasoning items of earlier turns are dropped (the provider's own record of
its reasoning, which another provider cannot read), and so is
``reasoning.summary`` (a Chat Completions upstream sends the reasoning it
sends, summarized or not): both documented.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.errors import UntranslatableError

__all__ = ["responses_to_chat"]

_SIMPLE = {"model": "model", "max_output_tokens": "max_tokens"}
_PASS = frozenset(
    {"temperature", "top_p", "parallel_tool_calls", "user", "metadata", "store", "mock"}
)
_IGNORED = frozenset({"stream", "stream_options"})
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


def _content(content: Any, where: str) -> Any:
    """A message's content: a string, or Chat Completions parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise UntranslatableError(where, "must be a string or a list of parts")
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS:
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal", ""))})
        elif kind == "input_image" and part.get("image_url"):
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise UntranslatableError(
                f"{where}[{i}]", f"is a {kind!r} part, which Chat Completions cannot take"
            )
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _output_text(output: Any, where: str) -> str:
    if isinstance(output, str):
        return output
    content = _content(output, where)
    if not isinstance(content, str):
        raise UntranslatableError(where, "holds an image: a tool result can only carry text here")
    return content


def _items(items: Any, messages: list[dict[str, Any]]) -> None:
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
        return
    if not isinstance(items, list):
        raise UntranslatableError("input", "must be a string or a list of items")
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise UntranslatableError(where, "must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise UntranslatableError(f"{where}.role", f"{role!r} is not a message role")
            content = _content(item.get("content"), f"{where}.content")
            if role == "assistant" and not isinstance(content, str):
                content = "".join(p.get("text", "") for p in content)
            messages.append({"role": role, "content": content})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            text = _output_text(item.get("output", ""), f"{where}.output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
        elif kind == "reasoning":
            continue
        else:
            raise UntranslatableError(
                where, f"is a {kind!r} item, which Chat Completions cannot take"
            )


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise UntranslatableError("tools", "must be a list")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise UntranslatableError(
                f"tools[{i}]",
                f"is the built-in tool {kind!r}: no Chat Completions upstream runs it",
            )
        function = {
            k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool
        }
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    raise UntranslatableError("tool_choice", f"{choice!r} has no Chat Completions equivalent")


def _text(text: Any, out: dict[str, Any]) -> None:
    if not isinstance(text, dict):
        raise UntranslatableError("text", "must be an object")
    for key, value in text.items():
        if key == "verbosity":
            out["verbosity"] = value
        elif key == "format":
            kind = value.get("type") if isinstance(value, dict) else None
            if kind == "json_schema":
                schema = {
                    k: value[k] for k in ("name", "schema", "strict", "description") if k in value
                }
                out["response_format"] = {"type": "json_schema", "json_schema": schema}
            elif kind == "json_object":
                out["response_format"] = {"type": "json_object"}
            elif kind != "text":
                raise UntranslatableError(
                    "text.format", f"{kind!r} has no Chat Completions equivalent"
                )
        else:
            raise UntranslatableError(f"text.{key}", "has no Chat Completions equivalent")


def responses_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The Chat Completions request for a Responses API request ``body``.

    Errors: :class:`UntranslatableError` naming the first field that cannot be carried.
    """
    out: dict[str, Any] = {}
    messages: list[dict[str, Any]] = []
    for key, value in body.items():
        if value is None or key in _IGNORED:
            continue
        if key in _SIMPLE:
            out[_SIMPLE[key]] = value
        elif key in _PASS:
            out[key] = value
        elif key == "instructions":
            messages.insert(0, {"role": "system", "content": str(value)})
        elif key == "tools":
            out["tools"] = _tools(value)
        elif key == "tool_choice":
            out["tool_choice"] = _tool_choice(value)
        elif key == "reasoning":
            effort = value.get("effort") if isinstance(value, dict) else None
            if effort is not None:
                out["reasoning_effort"] = effort
        elif key == "text":
            _text(value, out)
        elif (key == "truncation" and value == "disabled") or (key == "include" and not value):
            continue
        elif key != "input":
            raise UntranslatableError(key, "has no Chat Completions equivalent")
    _items(body.get("input"), messages)
    out["messages"] = messages
    return out
