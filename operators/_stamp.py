"""Stamps new events with their stream id and the next sequence number."""

from __future__ import annotations

from typing import Any, TypeVar

from pipeline.events import EventBase

__all__ = ["Stamper"]

E = TypeVar("E", bound=EventBase)


class Stamper:
    """Event factory for one stream: ``stamp(TextDelta, choice, t, text="hi")``."""

    __slots__ = ("seq", "stream_id")

    def __init__(self, stream_id: str, seq: int = 0) -> None:
        self.stream_id = stream_id
        self.seq = seq

    def __call__(self, cls: type[E], choice: int, t: float, **fields: Any) -> E:
        seq = self.seq
        self.seq = seq + 1
        return cls(stream_id=self.stream_id, seq=seq, t=t, choice=choice, **fields)
