"""How the built-in model uses the tools a request offers, in any of the APIs it speaks.

Given tools and no result yet, it calls one: the tool whose name (or, less
strongly, description) shares words with the last user message, else the
first tool; with several tools named in the prompt and parallel calls
allowed (the default), it calls each of them at once. Arguments are made
from the tool's JSON schema (:func:`sample_json`), seeded by the request's
``seed`` (0 when absent), the tool and the prompt, with the prompt's proper
nouns and quoted words as the strings' first choice and its numbers as the
numbers': the same request gets the same calls. Given results for the
calls it made since the last user message, it calls the tools named in the
prompt that are still uncalled (one step per tool when parallel calls are
off), then answers with text that quotes the results: an agent's tool loop
always ends.

``tool_choice`` is honoured: ``none`` never calls, a named tool is the one
called, ``required``/``any`` call even when the prompt names no tool.

The request shapes read: Chat Completions (``tools[].function``, ``role:
tool`` messages), the Responses API (flat ``tools``, ``function_call`` and
``function_call_output`` input items) and Anthropic Messages (``tools[]``
with ``input_schema``, ``tool_use`` and ``tool_result`` blocks).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.apps.builtin_model.schema_sample import sample_json

__all__ = ["ToolPlan", "ToolResult", "ToolSpec", "Turn", "plan_tools", "read_turn", "tool_specs"]

_GENERIC = frozenset(
    [
        "a",
        "an",
        "and",
        "by",
        "call",
        "do",
        "fetch",
        "find",
        "for",
        "from",
        "func",
        "function",
        "get",
        "in",
        "is",
        "list",
        "make",
        "me",
        "of",
        "on",
        "or",
        "run",
        "set",
        "the",
        "to",
        "tool",
        "what",
        "with",
    ]
)
_STOP = frozenset(
    [
        "about",
        "after",
        "also",
        "and",
        "any",
        "are",
        "can",
        "could",
        "does",
        "for",
        "from",
        "give",
        "have",
        "how",
        "into",
        "just",
        "like",
        "me",
        "more",
        "my",
        "please",
        "should",
        "tell",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "this",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)
_WORD = re.compile(r"[A-Za-z0-9]+")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")
_CAMEL = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool offered: its name, description and JSON schema of arguments."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolResult:
    """A tool's result sent back: the call it answers, the tool's name, the content as text."""

    call_id: str
    name: str
    content: str
    error: bool = False


@dataclass(frozen=True, slots=True)
class Turn:
    """The conversation since the last user message that has text."""

    prompt: str | None
    called: tuple[str, ...] = ()
    results: tuple[ToolResult, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """What to answer: tool calls (name, arguments JSON) or, when ``calls`` is empty, ``text``."""

    calls: tuple[tuple[str, str], ...] = ()
    text: str | None = None


def tool_specs(tools: Any) -> list[ToolSpec]:
    """The function tools of a request's ``tools``, in any of the three shapes (others skipped)."""
    specs: list[ToolSpec] = []
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, Mapping):
            continue
        function = tool.get("function")
        inner: Mapping[str, Any] = function if isinstance(function, Mapping) else tool
        name = inner.get("name")
        if not isinstance(name, str) or not name:
            continue
        if tool.get("type") not in (None, "function", "custom") and inner is tool:
            continue  # a built-in tool of the provider (web search...): nothing to call
        schema = inner.get("parameters", inner.get("input_schema"))
        description = inner.get("description")
        specs.append(
            ToolSpec(
                name,
                description if isinstance(description, str) else "",
                schema if isinstance(schema, Mapping) else {},
            )
        )
    return specs


def read_turn(body: Mapping[str, Any]) -> Turn:
    """The last user text, and the tool calls and results after it, of a request body."""
    messages = body.get("messages", body.get("input"))
    if isinstance(messages, str):
        return Turn(messages)
    prompt: str | None = None
    called: list[str] = []
    names: dict[str, str] = {}
    results: list[ToolResult] = []

    def user_text(text: str) -> None:
        nonlocal prompt
        prompt = text
        called.clear()
        results.clear()

    for item in messages if isinstance(messages, list) else ():
        if not isinstance(item, Mapping):
            continue
        kind, role, content = item.get("type"), item.get("role"), item.get("content")
        if kind == "function_call":  # Responses input items
            _call(item.get("call_id"), item.get("name"), names, called)
        elif kind == "function_call_output":
            call_id = str(item.get("call_id"))
            results.append(
                ToolResult(call_id, names.get(call_id, "tool"), _text(item.get("output")))
            )
        elif role == "tool":  # Chat Completions
            call_id = str(item.get("tool_call_id"))
            results.append(ToolResult(call_id, names.get(call_id, "tool"), _text(content)))
        elif role == "assistant":
            for call in item.get("tool_calls") or ():
                if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
                    _call(call.get("id"), call["function"].get("name"), names, called)
            for block in content if isinstance(content, list) else ():
                if isinstance(block, Mapping) and block.get("type") == "tool_use":  # Anthropic
                    _call(block.get("id"), block.get("name"), names, called)
        elif role == "user":
            text = _user_text(content)
            if text is not None:
                user_text(text)
            for block in content if isinstance(content, list) else ():
                if isinstance(block, Mapping) and block.get("type") == "tool_result":
                    call_id = str(block.get("tool_use_id"))
                    error = bool(block.get("is_error"))
                    text_ = _text(block.get("content"))
                    results.append(ToolResult(call_id, names.get(call_id, "tool"), text_, error))
    return Turn(prompt, tuple(called), tuple(results))


def plan_tools(body: Mapping[str, Any], model: str) -> ToolPlan | None:
    """What the built-in model does with the request's tools; ``None``: no tool is involved."""
    specs = tool_specs(body.get("tools"))
    turn = read_turn(body)
    if not specs and not turn.results:
        return None
    choice = _choice(body.get("tool_choice"))
    if specs and choice != "none":
        forced = next((s for s in specs if s.name == choice), None)
        wanted = [forced] if forced is not None else _matching(specs, turn.prompt or "")
        if not wanted and (choice == "required" or not turn.results):
            wanted = [specs[0]]
        pending = [s for s in wanted if s.name not in turn.called]
        if pending:
            if not _parallel(body):
                pending = pending[:1]
            seed = body.get("seed", 0)
            hints = _hints(turn.prompt or "", specs)
            calls = tuple(
                (
                    spec.name,
                    json.dumps(
                        sample_json(
                            spec.parameters or {"type": "object"},
                            seed=f"{seed}|{spec.name}|{turn.prompt}",
                            hints=hints,
                            numbers=_numbers(turn.prompt or ""),
                        )
                    ),
                )
                for spec in pending
            )
            return ToolPlan(calls=calls)
    if turn.results:
        return ToolPlan(text=_answer_from(turn.results, model))
    return None


def _call(call_id: Any, name: Any, names: dict[str, str], called: list[str]) -> None:
    if isinstance(name, str):
        called.append(name)
        if call_id is not None:
            names[str(call_id)] = name


def _text(content: Any) -> str:
    """A tool result's content as text (strings, parts with ``text``, else its JSON)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, Mapping)]
        if texts and all(isinstance(t, str) for t in texts):
            return " ".join(t for t in texts if isinstance(t, str))
    return json.dumps(content, ensure_ascii=False)


def _user_text(content: Any) -> str | None:
    """A user message's text; ``None`` for one holding only tool results (Anthropic)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts = [
        p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)
    ]
    if texts:
        return " ".join(texts)
    only_results = content and all(
        isinstance(p, Mapping) and p.get("type") == "tool_result" for p in content
    )
    return None if only_results else ""


def _choice(value: Any) -> str:
    """``auto``, ``none``, ``required`` or the name of the forced tool."""
    if isinstance(value, str):
        return "required" if value == "any" else value
    if isinstance(value, Mapping):
        kind = value.get("type")
        function = value.get("function")
        name = function.get("name") if isinstance(function, Mapping) else value.get("name")
        if isinstance(name, str) and kind in ("function", "tool"):
            return name
        if kind == "any":
            return "required"
        if isinstance(kind, str):
            return kind
    return "auto"


def _parallel(body: Mapping[str, Any]) -> bool:
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("disable_parallel_tool_use"):
        return False
    return body.get("parallel_tool_calls") is not False


def _words(text: str) -> set[str]:
    words = {w.lower() for w in _WORD.findall(text)}
    return words | {w[:-1] for w in words if w.endswith("s") and len(w) > 3}


def _name_words(name: str) -> set[str]:
    parts = [p.lower() for chunk in re.split(r"[_\-.\s]+", name) for p in _CAMEL.findall(chunk)]
    return {p for p in parts if p not in _GENERIC}


def _matching(specs: Sequence[ToolSpec], prompt: str) -> list[ToolSpec]:
    """Tools the prompt names: by name words (all of them), else the best by description."""
    words = _words(prompt)
    lowered = prompt.lower()
    named = [
        s
        for s in specs
        if s.name.lower() in lowered or (_name_words(s.name) and _name_words(s.name) <= words)
    ]
    if not named:
        named = [s for s in specs if _name_words(s.name) & words]
    if named:
        return named
    scored = [
        (len({w for w in _words(s.description) if len(w) > 3 and w not in _STOP} & words), i)
        for i, s in enumerate(specs)
    ]
    best = max(scored, default=(0, 0))
    return [specs[best[1]]] if best[0] > 0 else []


def _numbers(prompt: str) -> list[float]:
    """The numbers of the prompt, in order (integers as ``int``)."""
    found: list[float] = []
    for text in _NUMBER.findall(prompt):
        value = float(text)
        found.append(int(value) if value.is_integer() and "." not in text else value)
    return found


def _hints(prompt: str, specs: Sequence[ToolSpec]) -> list[str]:
    """Words a string argument should take: quoted ones, else proper nouns, else the last."""
    quoted = [a or b for a, b in re.findall(r'"([^"]{1,60})"|\'([^\']{1,60})\'', prompt)]
    if quoted:
        return quoted
    tokens = _WORD.findall(prompt)
    proper = [t for t in tokens[1:] if t[:1].isupper() and t.lower() not in _STOP and t != "I"]
    if proper:
        return list(dict.fromkeys(proper))
    tool_words = set().union(*(_name_words(s.name) for s in specs)) if specs else set()
    plain = [
        t for t in tokens if len(t) > 3 and t.lower() not in _STOP and t.lower() not in tool_words
    ]
    return plain[-1:]


def _answer_from(results: Sequence[ToolResult], model: str) -> str:
    said = []
    for result in results:
        content = " ".join(result.content.split())
        if len(content) > 300:
            content = content[:297] + "..."
        verb = "failed with" if result.error else "returned"
        said.append(f"{result.name} {verb} {content}")
    return (
        f"Here is what the tools said ({model}, the rxllm built-in model): " + "; ".join(said) + "."
    )
