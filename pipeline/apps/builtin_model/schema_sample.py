"""Deterministic JSON values that satisfy a JSON Schema: the built-in model's tool arguments.

:func:`sample_json` walks a tool's ``parameters`` schema and builds a value
for it from a seeded :class:`random.Random`: the same schema, seed and hints
give the same value, in every process. It honours what function-calling
schemas use: ``type`` (one or a list), ``enum``, ``const``, ``default`` (taken as it is),
``minimum``/``maximum`` (exclusive too) and ``multipleOf``,
``minLength``/``maxLength``, ``pattern`` (a small regular-expression
generator), ``format`` (date, time, date-time, email, uri, uuid, ipv4,
hostname), ``required``/``properties``/``additionalProperties``/
``minProperties``, ``items``/``prefixItems``/``minItems``/``maxItems``/
``uniqueItems``, ``anyOf``/``oneOf``/``allOf`` and local ``$ref`` (``$defs``,
``definitions``, any ``#/`` pointer), recursion included.

``hints`` are words taken from the prompt (``["Paris"]``): the free-form
strings take them, one each, in order, so ``get_weather(city)`` asked about
Paris is called with ``{"city": "Paris"}``; ``numbers`` are the prompt's
numbers, which the numbers take the same way (``add(a, b)`` asked "what is
2 plus 3?" gets ``{"a": 2, "b": 3}``).

Why not a library: the generators that exist are built for property tests
(hypothesis-jsonschema draws from a Hypothesis strategy, which is neither
meant for use outside a test nor reproducible from a seed) or draw from the
global ``random`` state and a fake-data library (jsf). Every value made here
is checked with ``jsonschema`` by the tests.
"""

from __future__ import annotations

import importlib
import math
import random
import string
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["sample_json"]

_MAX_DEPTH = 6  # past it, only what the schema requires
_FORMATS = {
    "date": "2024-05-17",
    "time": "14:30:00Z",
    "date-time": "2024-05-17T14:30:00Z",
    "email": "ada@example.com",
    "idn-email": "ada@example.com",
    "uri": "https://example.com/a",
    "url": "https://example.com/a",
    "iri": "https://example.com/a",
    "uri-reference": "/a",
    "uuid": "6f1c2f3e-8a4b-4c5d-9e6f-7a8b9c0d1e2f",
    "ipv4": "192.0.2.7",
    "ipv6": "2001:db8::7",
    "hostname": "example.com",
    "duration": "PT5M",
}
_WORDS = ("alpha", "bravo", "delta", "echo", "kilo", "lima", "nova", "oscar", "sierra", "tango")


def sample_json(
    schema: Any,
    *,
    seed: int | str = 0,
    hints: Sequence[str] = (),
    numbers: Sequence[float] = (),
) -> Any:
    """Return a value valid for ``schema`` (a JSON Schema as a dict), deterministic per ``seed``.

    ``hints`` are the free-form strings' first choices, ``numbers`` the
    numbers' (each used once, in order, where the schema allows it). A schema
    that allows nothing (``false``, an empty ``enum``) gives ``None``.
    """
    sampler = _Sampler(
        schema if isinstance(schema, Mapping) else {}, random.Random(str(seed)), hints, numbers
    )
    return sampler.value(schema, 0, "")


class _Sampler:
    def __init__(
        self,
        root: Mapping[str, Any],
        rng: random.Random,
        hints: Sequence[str],
        numbers: Sequence[float],
    ) -> None:
        self.root = root
        self.rng = rng
        self.hints = [h for h in hints if h]
        self.numbers = list(numbers)

    # -- schema plumbing -------------------------------------------------------

    def resolve(self, schema: Any, depth: int = 0) -> Mapping[str, Any]:
        """``schema`` with ``$ref`` followed and ``allOf`` merged in."""
        if not isinstance(schema, Mapping):
            return {}  # true, or not a schema: anything goes
        ref = schema.get("$ref")
        if isinstance(ref, str) and depth < 32:
            target = self.pointer(ref)
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**self.resolve(target, depth + 1), **rest}
        parts = schema.get("allOf")
        if isinstance(parts, list) and parts:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in parts:
                merged = _merge(merged, self.resolve(part, depth + 1))
            schema = merged
        return dict(schema)

    def pointer(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}  # a remote reference: not followed
        node: Any = self.root
        for token in ref[1:].lstrip("/").split("/") if ref != "#" else ():
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                return {}
        return node

    # -- values ----------------------------------------------------------------

    def value(self, raw: Any, depth: int, name: str) -> Any:
        if raw is False:
            return None
        schema = self.resolve(raw)
        if "const" in schema:
            return schema["const"]
        if "default" in schema:
            return schema["default"]
        enum = schema.get("enum")
        if isinstance(enum, list):
            return self.rng.choice(enum) if enum else None
        branches = schema.get("anyOf") or schema.get("oneOf")
        if isinstance(branches, list) and branches:
            rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
            # A real value rather than null, where a branch allows one.
            usable = [b for b in branches if self.resolve(b).get("type") != "null"] or branches
            return self.value(
                _merge(dict(rest), self.resolve(self.rng.choice(usable))), depth, name
            )
        kind = _kind(schema)
        if kind == "object":
            return self.object(schema, depth)
        if kind == "array":
            return self.array(schema, depth, name)
        if kind == "integer":
            return self.number(schema, integer=True)
        if kind == "number":
            return self.number(schema, integer=False)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self.string(schema, name)

    def object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = [r for r in schema.get("required") or [] if isinstance(r, str)]
        out: dict[str, Any] = {}
        for key in required:
            out[key] = self.value(properties.get(key, self.extra_schema(schema)), depth + 1, key)
        least = schema.get("minProperties", 0)
        most = schema.get("maxProperties")
        for key, sub in properties.items():
            if key in out or (isinstance(most, int) and len(out) >= most):
                continue
            if depth < _MAX_DEPTH and (len(out) < least or self.rng.random() < 0.6):
                out[key] = self.value(sub, depth + 1, key)
        extra = self.extra_schema(schema)
        n = 1
        while isinstance(least, int) and len(out) < least and extra is not False:
            key = f"{_WORDS[n % len(_WORDS)]}{n}"
            n += 1
            if key not in out:
                out[key] = self.value(extra, depth + 1, key)
        return out

    @staticmethod
    def extra_schema(schema: Mapping[str, Any]) -> Any:
        extra = schema.get("additionalProperties", True)
        return extra if extra is not True else {}

    def array(self, schema: Mapping[str, Any], depth: int, name: str) -> list[Any]:
        least = _int(schema.get("minItems"), 0)
        most = _int(schema.get("maxItems"), None)
        prefix = schema.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        items = schema.get("items", {})
        if isinstance(items, list):  # draft 4-7 tuple form
            prefix, items = items, schema.get("additionalItems", {})
        wanted = least if depth >= _MAX_DEPTH else max(least, self.rng.randint(1, 3))
        if most is not None:
            wanted = min(wanted, most)
        if items is False:
            wanted = min(wanted, len(prefix))
        out: list[Any] = []
        tries = 0
        while len(out) < wanted and tries < wanted * 8 + 8:
            tries += 1
            index = len(out)
            sub = prefix[index] if index < len(prefix) else items
            item = self.value(sub, depth + 1, name)
            if schema.get("uniqueItems") and any(_same(item, seen) for seen in out):
                continue
            out.append(item)
        return out

    def number(self, schema: Mapping[str, Any], *, integer: bool) -> int | float:
        low, high = _bounds(schema, integer)
        step = _num(schema.get("multipleOf"))
        if self.numbers:  # the prompt's next number, if it fits
            given = self.numbers.pop(0)
            fits = low <= given <= high and (not integer or float(given).is_integer())
            if fits and (step is None or step <= 0 or (given / step) == int(given / step)):
                return int(given) if integer else given
        if step is not None and step > 0:
            first, last = math.ceil(low / step), math.floor(high / step)
            start = (
                self.rng.randint(first, max(first, min(last, first + 20))) if first <= last else 0
            )
            for k in (*range(start, last + 1), *range(first, start)):
                value = k * step
                if integer and not float(value).is_integer():
                    continue
                quotient = value / step
                if quotient == int(quotient):  # as validators check a float multipleOf
                    return int(value) if integer or isinstance(step, int) else value
                if k - start > 50:
                    break
        if integer:
            return self.rng.randint(int(low), int(high))
        return min(max(round(self.rng.uniform(low, high), 2), low), high)

    def string(self, schema: Mapping[str, Any], name: str) -> str:
        least = _int(schema.get("minLength"), 0)
        most = _int(schema.get("maxLength"), None)
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            text = _from_pattern(pattern, self.rng)
            if text is not None:
                return text
        form = schema.get("format")
        text = _FORMATS[form] if isinstance(form, str) and form in _FORMATS else self.words(name)
        if len(text) < least:
            text += "x" * (least - len(text))
        if most is not None:
            text = text[:most]
        return text

    def words(self, name: str) -> str:
        if self.hints:  # each hint once, in order: the first string takes the first
            return self.hints.pop(0)
        word = self.rng.choice(_WORDS)
        return f"{name}-{word}" if name else word


def _kind(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if isinstance(k, str)]
        kind = next((k for k in kinds if k != "null"), kinds[0] if kinds else None)
    if isinstance(kind, str):
        return kind
    if any(k in schema for k in ("properties", "required", "additionalProperties")):
        return "object"
    if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems")):
        return "array"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return "number"
    return "string"


def _bounds(schema: Mapping[str, Any], integer: bool) -> tuple[float, float]:
    """The range a number may take: the schema's bounds (exclusive ones moved in), else 1..100."""
    tiny = 1 if integer else 0.01
    low, high = _num(schema.get("minimum")), _num(schema.get("maximum"))
    ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if ex_low is True and low is not None:  # draft 4: a flag beside minimum
        low += tiny
    elif (bound := _num(ex_low)) is not None:
        low = bound + tiny if low is None else max(low, bound + tiny)
    if ex_high is True and high is not None:
        high -= tiny
    elif (bound := _num(ex_high)) is not None:
        high = bound - tiny if high is None else min(high, bound - tiny)
    if low is None and high is None:
        low, high = 1.0, 100.0
    elif low is None:
        assert high is not None
        low = min(0.0, high) if high >= 0 else high - 100
    elif high is None:
        high = low + 100
    if integer:
        low, high = math.ceil(low), math.floor(high)
    return low, max(low, high)


def _num(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value) if isinstance(value, float) else value
    return None


def _int(value: Any, default: int | None) -> Any:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
    )


def _merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if key == "properties" and isinstance(out.get(key), Mapping) and isinstance(value, Mapping):
            out[key] = {**out[key], **value}
        elif key == "required" and isinstance(out.get(key), list) and isinstance(value, list):
            out[key] = list(dict.fromkeys([*out[key], *value]))
        else:
            out[key] = value
    return out


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


# -- patterns ------------------------------------------------------------------

_parser: Any = importlib.import_module("re._parser")
_constants: Any = importlib.import_module("re._constants")
_CATEGORIES = {
    "CATEGORY_DIGIT": string.digits,
    "CATEGORY_WORD": string.ascii_letters + string.digits + "_",
    "CATEGORY_SPACE": " ",
    "CATEGORY_NOT_DIGIT": string.ascii_letters,
    "CATEGORY_NOT_WORD": "-.",
    "CATEGORY_NOT_SPACE": string.ascii_letters,
}


def _from_pattern(pattern: str, rng: random.Random) -> str | None:
    """A string the regular expression ``pattern`` matches, or ``None`` if it cannot tell."""
    import re

    try:
        tree = _parser.parse(pattern)
        text = _emit(tree, rng, {})
    except Exception:  # an unsupported construct: the caller falls back
        return None
    return text if re.search(pattern, text) else None


def _emit(tree: Any, rng: random.Random, groups: dict[int, str]) -> str:
    out: list[str] = []
    for op, arg in tree:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "NOT_LITERAL":
            out.append("a" if chr(arg) != "a" else "b")
        elif name == "ANY":
            out.append(rng.choice(string.ascii_lowercase))
        elif name == "IN":
            out.append(_one_of(arg, rng))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, sub = arg
            top = low + 3 if high == _constants.MAXREPEAT else min(high, low + 3)
            for _ in range(rng.randint(low, top)):
                out.append(_emit(sub, rng, groups))
        elif name == "SUBPATTERN":
            group, _, _, sub = arg
            text = _emit(sub, rng, groups)
            if group is not None:
                groups[group] = text
            out.append(text)
        elif name == "ATOMIC_GROUP":
            out.append(_emit(arg, rng, groups))
        elif name == "BRANCH":
            out.append(_emit(rng.choice(arg[1]), rng, groups))
        elif name == "GROUPREF":
            out.append(groups.get(arg, ""))
        elif name in ("AT", "ASSERT", "ASSERT_NOT"):
            continue
        elif name == "CATEGORY":
            out.append(rng.choice(_CATEGORIES.get(str(arg), "a")))
        else:
            raise ValueError(f"unsupported pattern construct {name}")
    return "".join(out)


def _one_of(items: Any, rng: random.Random) -> str:
    chars: list[str] = []
    negate = False
    for op, arg in items:
        name = str(op)
        if name == "NEGATE":
            negate = True
        elif name == "LITERAL":
            chars.append(chr(arg))
        elif name == "RANGE":
            low, high = arg
            chars.extend(chr(c) for c in range(low, min(high, low + 60) + 1))
        elif name == "CATEGORY":
            chars.extend(_CATEGORIES.get(str(arg), "a"))
    if negate:
        pool = [c for c in string.ascii_letters + string.digits if c not in chars]
        return rng.choice(pool)
    return rng.choice(chars)
