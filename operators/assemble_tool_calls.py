"""Tool-call assembly: argument fragments in, a partial parse on every delta, one verdict per call.

Every event passes through. Each ``tool_call.delta`` is replaced by a copy whose
``partial`` holds a partial parse of the call's arguments so far (missing
closers and an unfinished trailing string tolerated; the parser is jiter's).
When a choice finishes, a ``tool_call.completed`` (the parsed, and if asked
validated, arguments) or ``tool_call.invalid`` (the raw text kept, the error
said) is inserted just before its ``choice.finished``, one per open call of
that choice in index order; calls still open at the terminal event are closed
just before it. Inserted events take the next sequence numbers and every later
event is renumbered, so ``seq`` stays contiguous; with no tool calls every
event passes through as the same object.

    -call-'{"a": "x'-'y"}'-choice.finished-finished-|
    becomes
    -call-'{"a": "x'{a: x}-'y"}'{a: xy}-completed{a: xy}-choice.finished-finished-|

**What ``partial`` holds.** Re-parsing the whole prefix on every fragment would
cost time quadratic in the argument size, so the parse is throttled: every
fragment is parsed while the arguments are at most ``eager_chars`` long, and
after that only once they have grown by ``growth`` (a fraction) since the last
parse. Parse work is therefore at most about ``eager_chars`` per early fragment
plus ``(1 + 1/growth)`` times the argument size. Between re-parses, ``partial``
is the latest successful partial parse: the parse of a prefix at least
``1 / (1 + growth)`` as long as the arguments so far (exact below
``eager_chars``). A prefix that does not parse (it is not JSON) leaves the
previous value in place; ``partial`` is ``None`` until some prefix parses.
``partial=False`` turns this off and leaves deltas as they are.

**Decisions.** Arguments that are empty or only white space mean no arguments
and parse as ``{}`` (OpenAI sends ``""`` for some calls without parameters);
``arguments`` keeps the raw ``""``. ``NaN`` and ``Infinity`` are not JSON and
make a call invalid. A surrogate pair split across two chunks by an upstream
JSON decoder (only possible with chunks decoded by Python's :mod:`json`) is
joined in ``arguments``; a lone surrogate becomes U+FFFD for parsing. With a
pydantic model as the tool's schema, ``parsed`` is the validated model's
``model_dump(mode="json")`` (defaults filled, values coerced), so events stay
JSON. A call whose stream failed or was cancelled (a ``StreamError`` or
``Cancelled`` event, an upstream ``on_error``, or a completion with no
terminal event) is completed if its arguments parse, else invalid with an
error saying the stream ended first.

Example::

    events = source.pipe(extract_deltas(), assemble_tool_calls(request["tools"]))

Errors: a tool schema that is not a valid JSON schema raises
:class:`jsonschema.exceptions.SchemaError`, and a ``tools`` entry of another
kind :class:`TypeError`, when the operator is created. Bad arguments are data,
never errors; an exception raised by a validator other than its validation
error (a pydantic validator raising ``TypeError``, an unresolvable ``$ref``)
goes to ``on_error``. An upstream error is passed on after the open calls are
closed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import jiter
from pydantic import BaseModel, ValidationError

from operators._fused import Fusable, Link, Stage, StageBase, complete_after
from operators._stamp import replace
from pipeline.core.events import (
    ChoiceFinished,
    Event,
    Finished,
    ReasoningDelta,
    RefusalDelta,
    Started,
    StreamError,
    TextDelta,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallInvalid,
    ToolCallStarted,
    UsageReport,
    is_terminal,
)

__all__ = ["ToolSchema", "Tools", "assemble_tool_calls", "check_tools"]

ToolSchema: TypeAlias = Mapping[str, Any] | type[BaseModel] | None
"""A JSON schema, a pydantic model class, or ``None`` (a known tool, not validated)."""

Tools: TypeAlias = Sequence[Mapping[str, Any]] | Mapping[str, ToolSchema]
"""The request's ``tools`` list (Chat Completions or Responses shape), or name -> schema."""

_Check: TypeAlias = Callable[[bytes, Any], Any]

# Kinds that pass through untouched while no event has been inserted (exact types:
# a subclass takes the general path).
_UNTOUCHED: frozenset[type] = frozenset(
    {TextDelta, ReasoningDelta, RefusalDelta, UsageReport, Started}
)


class _Invalid(Exception):
    """The arguments do not validate; the message says why."""


def _parse_partial(data: bytes) -> Any:
    """Parse a prefix of JSON; raise ``ValueError`` if it is not one."""
    return jiter.from_json(data, partial_mode="trailing-strings", allow_inf_nan=False)


def _parse(data: bytes) -> Any:
    """Parse complete JSON; raise ``ValueError`` (with the position) if it is not."""
    return jiter.from_json(data, allow_inf_nan=False)


def _utf8(text: str) -> tuple[str, bytes]:
    """Encode ``text``, joining split surrogate pairs and replacing lone surrogates."""
    try:
        return text, text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
        return text, text.encode(errors="replace")


def _json_path(loc: tuple[int | str, ...]) -> str:
    return "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def _checker(name: str, schema: ToolSchema) -> _Check | None:
    if schema is None:
        return None
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        model = schema

        def check_model(data: bytes, parsed: Any) -> Any:
            try:
                return model.model_validate_json(data).model_dump(mode="json")
            except ValidationError as exc:
                errors = "; ".join(
                    f"{_json_path(e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
                )
                raise _Invalid(f"arguments do not validate against {name!r}: {errors}") from None

        return check_model
    if isinstance(schema, Mapping):
        # Imported here: only needed (and only required) when a JSON schema is given.
        from jsonschema.exceptions import SchemaError, best_match
        from jsonschema.validators import validator_for

        spec = dict(schema)
        cls = validator_for(spec)
        try:
            cls.check_schema(spec)
        except SchemaError as exc:  # its str() holds the whole metaschema: say only what is wrong
            raise ValueError(
                f"the parameters of tool {name!r} are not a valid JSON schema: "
                f"{exc.message} (at {exc.json_path})"
            ) from None
        validator = cls(spec)

        def check_schema(data: bytes, parsed: Any) -> Any:
            error = best_match(validator.iter_errors(parsed))
            if error is None:
                return parsed
            raise _Invalid(
                f"arguments do not match the schema of {name!r} at {error.json_path}: "
                f"{error.message}"
            )

        return check_schema
    raise TypeError(
        f"the schema of tool {name!r} must be a JSON schema dict, a pydantic model class "
        f"or None, not {type(schema).__name__}"
    )


def _checkers(tools: Tools | None) -> dict[str, _Check | None] | None:
    if tools is None:
        return None
    if isinstance(tools, Mapping):
        return {name: _checker(name, schema) for name, schema in tools.items()}
    checks: dict[str, _Check | None] = {}
    for tool in tools:
        if not isinstance(tool, Mapping):
            raise TypeError(f"a tool must be a dict, not {type(tool).__name__}")
        if tool.get("type", "function") != "function":
            continue  # built-in and custom tools have no JSON arguments to check
        fn = tool.get("function", tool)  # Chat Completions nests it; Responses does not
        if not isinstance(fn, Mapping):
            raise TypeError(f"a function tool's 'function' must be an object, not {fn!r}")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise TypeError(f"a function tool has no name: {tool!r}")
        params = fn.get("parameters")
        # No ``parameters`` declares a function without parameters: an object.
        checks[name] = _checker(name, {"type": "object"} if params is None else params)
    return checks


def check_tools(tools: Tools | None) -> None:
    """Check ``tools`` as :func:`assemble_tool_calls` will read them, before any request.

    Errors: ``TypeError`` for a tool that is not a dict, a function tool
    without a name, or a schema of the wrong type; ``ValueError`` for a
    schema that is not a valid JSON schema (the message says where, without
    the metaschema).
    """
    _checkers(tools)


class _Call:
    __slots__ = ("choice", "id", "index", "name", "parsed_size", "partial", "parts", "size")

    def __init__(self, choice: int, index: int) -> None:
        self.choice = choice
        self.index = index
        self.id: str | None = None
        self.name: str | None = None
        self.parts: list[str] = []
        self.size = 0  # characters received
        self.parsed_size = 0  # characters at the last partial parse
        self.partial: Any = None


class _Assembler:
    """The state of one subscription."""

    __slots__ = ("checks", "eager", "growth", "last", "offset", "open", "partial")

    def __init__(
        self, checks: dict[str, _Check | None] | None, partial: bool, eager: int, growth: float
    ) -> None:
        self.checks = checks
        self.partial = partial
        self.eager = eager
        self.growth = growth
        self.open: dict[int, dict[int, _Call]] = {}  # choice -> index -> call
        self.offset = 0  # events inserted so far
        self.last: Event | None = None

    def _call(self, choice: int, index: int) -> _Call:
        calls = self.open.setdefault(choice, {})
        call = calls.get(index)
        if call is None:
            call = calls[index] = _Call(choice, index)
        return call

    def _renumber(self, event: Event) -> Event:
        return replace(event, {"seq": event.seq + self.offset}) if self.offset else event

    def feed(self, event: Event) -> list[Event]:
        self.last = event
        if isinstance(event, ToolCallDelta):
            call = self._call(event.choice, event.index)
            call.parts.append(event.arguments)
            size = call.size = call.size + len(event.arguments)
            if not self.partial:
                return [self._renumber(event)]
            if size <= self.eager or size - call.parsed_size >= call.parsed_size * self.growth:
                self._reparse(call)
            return [replace(event, {"partial": call.partial, "seq": event.seq + self.offset})]
        if isinstance(event, ToolCallStarted):
            call = self._call(event.choice, event.index)
            call.id = call.id or event.id
            call.name = call.name or event.name
        elif isinstance(event, ChoiceFinished):
            calls = self.open.pop(event.choice, None)
            if calls:
                out = self._close([calls[i] for i in sorted(calls)], event, event.seq, None)
                out.append(self._renumber(event))
                return out
        elif is_terminal(event) and self.open:
            ended = (
                None
                if isinstance(event, Finished)
                else "failed"
                if isinstance(event, StreamError)
                else "was cancelled"
            )
            out = self._close(self._pop_all(), event, event.seq, ended)
            out.append(self._renumber(event))
            return out
        return [self._renumber(event)]

    def close(self, ended: str) -> list[Event]:
        """The upstream ended without a terminal event: close what is open."""
        if not self.open or self.last is None:
            return []
        # The last event went out as ``last.seq + offset``: the verdicts come after it.
        return self._close(self._pop_all(), self.last, self.last.seq + 1, ended)

    def _pop_all(self) -> list[_Call]:
        calls = [
            c for _, by_index in sorted(self.open.items()) for _, c in sorted(by_index.items())
        ]
        self.open.clear()
        return calls

    def _reparse(self, call: _Call) -> None:
        text = "".join(call.parts)
        call.parts = [text]
        call.parsed_size = call.size
        if text and "\ud800" <= text[-1] <= "\udbff":
            text = text[:-1]  # half a split surrogate pair: wait for the other half
        # Not (yet) a JSON prefix: keep the latest good parse. The error, if it
        # persists, is reported by the call's ``tool_call.invalid`` at the end.
        # (try/except, not contextlib.suppress: this runs for most fragments.)
        try:  # noqa: SIM105
            call.partial = _parse_partial(_utf8(text)[1])
        except ValueError:
            pass

    def _close(self, calls: list[_Call], at: Event, seq: int, ended: str | None) -> list[Event]:
        """One verdict per call, stamped like ``at``; they go out from ``seq + offset`` on."""
        out: list[Event] = []
        for call in calls:
            text, data = _utf8("".join(call.parts))
            common: dict[str, Any] = {
                "stream_id": at.stream_id,
                "seq": seq + self.offset,
                "t": at.t,
                "choice": call.choice,
                "index": call.index,
                "id": call.id,
                "name": call.name,
                "arguments": text,
            }
            result = self._verdict(call, data, ended)
            if isinstance(result, _Invalid):
                out.append(ToolCallInvalid(error=str(result), **common))
            else:
                out.append(ToolCallCompleted(parsed=result, **common))
            self.offset += 1
        return out

    def _verdict(self, call: _Call, data: bytes, ended: str | None) -> Any:
        """Return the parsed arguments, or an :class:`_Invalid` saying why not."""
        check: _Check | None = None
        if self.checks is not None:
            if call.name is None:
                return _Invalid("the tool call has no name, so it matches none of the tools")
            if call.name not in self.checks:
                known = ", ".join(map(repr, self.checks)) or "none"
                return _Invalid(f"unknown tool {call.name!r} (known tools: {known})")
            check = self.checks[call.name]
        if not data.strip():
            data = b"{}"
        try:
            parsed = _parse(data)
        except ValueError as exc:
            if ended is not None:
                return _Invalid(f"the stream {ended} before the arguments were complete ({exc})")
            return _Invalid(f"arguments are not valid JSON: {exc}")
        if check is None:
            return parsed
        try:
            return check(data, parsed)
        except _Invalid as exc:
            return exc


class _Assemble(StageBase):
    """One subscription of :func:`assemble_tool_calls`."""

    __slots__ = ("downstream", "state")

    def __init__(self, downstream: Stage[Event], state: _Assembler) -> None:
        super().__init__()
        self.downstream = downstream
        self.state = state

    def on_next(self, event: Event) -> None:
        if self.stopped:
            return
        state = self.state
        if not state.offset and type(event) in _UNTOUCHED:
            # Nothing to do for it (what ``feed`` does, without its checks).
            state.last = event
            self.downstream.on_next(event)
            return
        try:
            events = state.feed(event)
        except Exception as exc:
            self.downstream.on_error(exc)
            return
        for item in events:
            self.downstream.on_next(item)

    def on_error(self, error: Exception) -> None:
        if self.stopped:
            return
        self.stopped = True
        try:
            events = self.state.close("failed")
        except Exception as exc:
            error.add_note(f"and closing the open tool calls failed: {exc!r}")
            events = []
        for item in events:
            self.downstream.on_next(item)
        self.downstream.on_error(error)

    def on_completed(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        complete_after(self.downstream, functools.partial(self.state.close, "ended"))


class _AssembleToolCalls(Fusable[Event, Event]):
    name = "assemble_tool_calls"

    def __init__(self, new_state: Callable[[], _Assembler]) -> None:
        self.new_state = new_state  # a subscription's state, the operator's parameters bound

    def stage(self, downstream: Stage[Event], link: Link) -> _Assemble:
        return _Assemble(downstream, self.new_state())


def assemble_tool_calls(
    tools: Tools | None = None,
    *,
    partial: bool = True,
    eager_chars: int = 1024,
    growth: float = 0.25,
) -> Fusable[Event, Event]:
    """Fill in ``partial`` on tool-call deltas and close every call with a verdict.

    ``tools``, if given, validates each call's arguments against its tool's
    schema (a call to a tool not listed is invalid). ``eager_chars`` and
    ``growth`` throttle the partial parse (see the module docstring).

    Errors: :class:`jsonschema.exceptions.SchemaError` for a bad tool schema and
    :class:`TypeError` for a ``tools`` entry of the wrong kind, raised here;
    :class:`ValueError` for ``growth <= 0`` or ``eager_chars < 0``.
    """
    if growth <= 0 or eager_chars < 0:
        raise ValueError("growth must be > 0 and eager_chars >= 0")
    return _AssembleToolCalls(
        functools.partial(_Assembler, _checkers(tools), partial, eager_chars, growth)
    )
