"""The ``rxllm`` dialect: every event as itself."""

from __future__ import annotations

import re

from pipeline.core.events import EventBase, event_json, is_terminal
from sinks.dialects.dialect_base import Dialect

__all__ = ["RxllmDialect"]

_BREAKS = re.compile(r"[\r\n]")


class RxllmDialect(Dialect):
    """Each event is one frame: ``id: <seq>``, ``event: <type>``, ``data: <event JSON>``.

    The JSON is :func:`pipeline.core.events.event_json`'s (the event's
    ``model_dump_json()``): :func:`pipeline.core.events.load_event` reads it back.

        id: 1
        event: text
        data: {"stream_id":"s","seq":1,"t":0.01,"choice":0,"type":"text","text":"Hi"}
    """

    name = "rxllm"

    def __init__(self) -> None:
        super().__init__()
        self._names: dict[str, bytes] = {}

    def encode(self, event: EventBase) -> bytes:
        if self.done:
            return b""
        kind: str = getattr(event, "type", "message")
        name = self._names.get(kind)
        if name is None:
            name = self._names[kind] = _BREAKS.sub("", kind).encode()
        if is_terminal(event):
            self.done = True
        data = event_json(event)
        return b"id: %d\nevent: %b\ndata: %b\n\n" % (event.seq, name, data)
