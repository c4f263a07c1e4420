"""The dialect interface and the frame writer the dialects share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

from pipeline.core.events import EventBase

__all__ = ["Dialect", "data_frame"]


def data_frame(seq: int | None, data: bytes) -> bytes:
    r"""One SSE frame ``id: <seq>`` / ``data: <data>``, for ``data`` with no line break.

    ``data`` must be compact JSON (which escapes every control character) or
    a fixed token such as ``[DONE]``; anything else goes through
    :func:`sinks.sse_response.encode_event`. ``seq`` ``None`` writes no ``id``.

        >>> data_frame(3, b"[DONE]")
        b'id: 3\ndata: [DONE]\n\n'
    """
    if seq is None:
        return b"data: %b\n\n" % data
    return b"id: %d\ndata: %b\n\n" % (seq, data)


class Dialect(ABC):
    """Turns one stream's events into SSE frames; make one per response (it keeps state).

    :meth:`encode` returns the frames for one event (zero or more, as bytes,
    each with ``id: <seq>``); :attr:`done` is true once a terminal event has
    been encoded, after which :meth:`encode` returns nothing. :meth:`close`
    returns the frames that end a stream which stopped without a terminal
    event (nothing otherwise). :attr:`headers` are the response headers the
    dialect needs.
    """

    name: ClassVar[str]
    headers: Mapping[str, str] = MappingProxyType({})

    def __init__(self) -> None:
        self.done = False

    @abstractmethod
    def encode(self, event: EventBase) -> bytes:
        """The frames for ``event``, concatenated (``b""`` for none)."""

    def close(self) -> bytes:
        """The frames that end a stream with no terminal event; ``b""`` after one."""
        return b""
