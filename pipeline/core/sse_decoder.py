"""Incremental decoder of ``text/event-stream`` bodies: bytes to messages.

Follows the WHATWG event-stream rules: lines end with ``\\n``, ``\\r`` or
``\\r\\n`` (a ``\\r\\n`` split across two chunks is one line break); a blank
line dispatches; ``data`` lines join with ``\\n``; comments (``:``) are
skipped; a message with no ``data`` is not dispatched. A chunk may split the
input anywhere, including inside a UTF-8 sequence: lines are decoded only when
complete.

    decoder = SSEDecoder()
    for chunk in body_chunks:
        for message in decoder.decode(chunk):
            ...
    messages = decoder.flush()  # a last message with no blank line after it
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["SSEDecoder", "SSEMessage"]


class SSEMessage(NamedTuple):
    """One server-sent event as it arrived; ``t`` is its arrival offset in seconds."""

    data: str
    event: str | None = None
    id: str | None = None
    t: float = 0.0


_new_message = tuple.__new__  # SSEMessage(...) without its Python-level __new__


class SSEDecoder:
    """Turns chunks of bytes into :class:`SSEMessage` items; see the module docstring."""

    __slots__ = ("_buf", "_data", "_event", "_id")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None

    def decode(self, chunk: bytes, t: float = 0.0) -> list[SSEMessage]:
        """Feed ``chunk``; return the messages it completes, stamped with ``t``."""
        buf = self._buf + chunk if self._buf else chunk
        if not buf:
            return []
        if b"\r" in buf:
            lines = buf.splitlines(keepends=True)
            last = lines[-1]
            # An unterminated last line, or one ending in "\r" that may be the first
            # half of a "\r\n", waits for more input.
            if last[-1:] == b"\r" or last[-1:] != b"\n":
                self._buf = last
                lines.pop()
            else:
                self._buf = b""
            out: list[SSEMessage] = []
            for raw in lines:
                self._line(raw.rstrip(b"\r\n"), t, out)
            return out
        # Only "\n" line breaks (the usual case): the text after the last one waits.
        if (
            buf[-2:] == b"\n\n"
            and buf[:6] == b"data: "
            and buf.find(b"\n") == len(buf) - 2
            and not self._data
            and self._event is None
        ):
            # The commonest frame, "data: <payload>\n\n", alone: one message.
            self._buf = b""
            payload = buf[6:-2].decode("utf-8", "replace")
            return [_new_message(SSEMessage, (payload, None, self._id, t))]
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        out = []
        data = self._data
        for raw in lines:
            if not raw:
                if data:
                    out.append(SSEMessage("\n".join(data), self._event, self._id, t))
                    data.clear()
                self._event = None
            elif raw[:6] == b"data: ":
                data.append(raw[6:].decode("utf-8", "replace"))
            else:
                self._line(raw, t, out)
        return out

    def flush(self, t: float = 0.0) -> list[SSEMessage]:
        """End of input: treat what is buffered as complete and dispatch it."""
        out: list[SSEMessage] = []
        if self._buf:
            raw, self._buf = self._buf, b""
            self._line(raw.rstrip(b"\r\n"), t, out)
        self._line(b"", t, out)
        return out

    def _line(self, raw: bytes, t: float, out: list[SSEMessage]) -> None:
        if not raw:
            if self._data:
                out.append(SSEMessage("\n".join(self._data), self._event, self._id, t))
                self._data.clear()
            self._event = None
            return
        if raw[0] == 0x3A:  # ":" -- a comment (heartbeat)
            return
        line = raw.decode("utf-8", errors="replace")
        name, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        # "retry" and unknown fields are ignored
