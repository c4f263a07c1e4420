"""Stamps new events with their stream id and the next sequence number.

The hot events (text, reasoning and refusal deltas, tool-call argument
deltas) have a fast constructor that skips pydantic validation when every
value already has its field's exact type (``str``, ``int``, ``float``): the
object it makes is the one validation would make (same ``__dict__`` in the
same order, same ``model_fields_set``). Any other value (a ``bool`` index, an
``int`` time, a ``str`` subclass) goes through validation as before, so
coercions and validation errors are unchanged. An import-time self-check
compares both paths and switches the fast one off if pydantic's internals
ever differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from pipeline.core.events import (
    EventBase,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
)

__all__ = ["Stamper", "build", "replace"]

E = TypeVar("E", bound=EventBase)

_new = object.__new__
_set_dict = object.__setattr__


def _slot_setter(name: str) -> Any:
    for klass in BaseModel.__mro__:
        if name in vars(klass):
            return vars(klass)[name].__set__
    raise AttributeError(name)  # pragma: no cover - pydantic always has these slots


_set_fields_set = _slot_setter("__pydantic_fields_set__")
_set_extra = _slot_setter("__pydantic_extra__")
_set_private = _slot_setter("__pydantic_private__")


def build(cls: type[E], values: dict[str, Any], fields_set: set[str]) -> E:
    """Make a ``cls`` event from ``values`` without validation.

    ``values`` must hold every field, in the model's field order, each already
    of its exact type; ``fields_set`` the names the caller gave (not defaults).
    """
    event: E = _new(cls)
    _set_dict(event, "__dict__", values)
    _set_fields_set(event, fields_set)
    _set_extra(event, None)
    _set_private(event, None)
    return event


def replace(event: E, update: Mapping[str, Any]) -> E:
    """Exactly ``event.model_copy(update=update)``, without its generic overhead."""
    if not _FAST or event.__pydantic_extra__ is not None or event.__pydantic_private__ is not None:
        return event.model_copy(update=update)
    values = event.__dict__.copy()
    values.update(update)
    fields_set = event.__pydantic_fields_set__.copy()
    fields_set.update(update)
    return build(type(event), values, fields_set)


def _fast_path_works() -> bool:
    """Whether :func:`build` and :func:`replace` make what pydantic makes."""

    def same(a: BaseModel, b: BaseModel) -> bool:
        return (
            type(a) is type(b)
            and list(a.__dict__.items()) == list(b.__dict__.items())
            and a.__pydantic_fields_set__ == b.__pydantic_fields_set__
            and a.__pydantic_extra__ == b.__pydantic_extra__
            and a.__pydantic_private__ == b.__pydantic_private__
            and repr(a) == repr(b)
            and a.model_dump_json() == b.model_dump_json()
        )

    try:
        stamper = Stamper("s", 3)
        text = stamper.text(TextDelta, 1, 0.5, "hi")
        args = stamper.tool_delta(1, 0.5, 2, '{"a"')
        copy = replace(args, {"partial": {"a": None}, "seq": 9})
        return (
            same(text, TextDelta(stream_id="s", seq=3, t=0.5, choice=1, text="hi"))
            and same(
                args,
                ToolCallDelta(stream_id="s", seq=4, t=0.5, choice=1, index=2, arguments='{"a"'),
            )
            and same(copy, args.model_copy(update={"partial": {"a": None}, "seq": 9}))
        )
    except Exception:  # pragma: no cover - a pydantic whose internals differ
        return False


class Stamper:
    """Event factory for one stream: ``stamp(TextDelta, choice, t, text="hi")``."""

    __slots__ = ("_fast", "seq", "stream_id")

    def __init__(self, stream_id: str, seq: int = 0) -> None:
        self.stream_id = stream_id
        self.seq = seq
        self._fast = type(stream_id) is str and _FAST

    def __call__(self, cls: type[E], choice: int, t: float, **fields: Any) -> E:
        seq = self.seq
        self.seq = seq + 1
        return cls(stream_id=self.stream_id, seq=seq, t=t, choice=choice, **fields)

    def text(
        self,
        cls: type[TextDelta] | type[ReasoningDelta] | type[RefusalDelta],
        choice: int,
        t: float,
        text: str,
    ) -> TextDelta | ReasoningDelta | RefusalDelta:
        """``self(cls, choice, t, text=text)`` for the three text delta classes, faster."""
        seq = self.seq
        self.seq = seq + 1
        kind = _TEXT_TYPES.get(cls)
        if (
            kind is not None
            and self._fast
            and type(choice) is int
            and type(t) is float
            and type(text) is str
        ):
            # build(), inline: a text delta is made for nearly every chunk.
            event = _new(cls)
            _set_dict(
                event,
                "__dict__",
                {
                    "stream_id": self.stream_id,
                    "seq": seq,
                    "t": t,
                    "choice": choice,
                    "type": kind,
                    "text": text,
                },
            )
            _set_fields_set(event, {"stream_id", "seq", "t", "choice", "text"})
            _set_extra(event, None)
            _set_private(event, None)
            return event
        return cls(stream_id=self.stream_id, seq=seq, t=t, choice=choice, text=text)

    def tool_delta(self, choice: int, t: float, index: int, arguments: str) -> ToolCallDelta:
        """``self(ToolCallDelta, choice, t, index=index, arguments=arguments)``, faster."""
        seq = self.seq
        self.seq = seq + 1
        if (
            self._fast
            and type(choice) is int
            and type(t) is float
            and type(index) is int
            and type(arguments) is str
        ):
            return build(
                ToolCallDelta,
                {
                    "stream_id": self.stream_id,
                    "seq": seq,
                    "t": t,
                    "choice": choice,
                    "type": "tool_call.delta",
                    "index": index,
                    "arguments": arguments,
                    "partial": None,
                },
                {"stream_id", "seq", "t", "choice", "index", "arguments"},
            )
        return ToolCallDelta(
            stream_id=self.stream_id, seq=seq, t=t, choice=choice, index=index, arguments=arguments
        )


_TEXT_TYPES: dict[type[EventBase], str] = {
    TextDelta: "text",
    ReasoningDelta: "reasoning",
    RefusalDelta: "refusal",
}
_FAST = True
_FAST = _fast_path_works()
