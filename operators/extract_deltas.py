"""Delta extraction: provider chunks in, normalized events out.

Accepts raw server-sent events (:class:`pipeline.core.sse_decoder.SSEMessage`, as the
sources emit them), parsed chunk dicts, or the ``openai`` SDK's pydantic chunk
objects; detects Chat Completions, Responses or Anthropic Messages from the
first item. Emits
``started`` first, then deltas, and ``finished`` when the upstream completes
(with or without ``[DONE]``). An error payload (``event: error``, a top-level
``error`` object, ``response.failed``) or a malformed chunk goes to
``on_error`` as :class:`pipeline.core.errors.UpstreamStreamError` /
:class:`pipeline.core.errors.MalformedChunkError`, after the events that arrived
before it; :func:`operators.map_errors` turns it into an event.

    -m1-m2-m3-[DONE]-|   becomes   -started-text-text-choice.finished-finished-|

Example::

    events = source.pipe(extract_deltas(), map_errors())
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jiter
from pydantic import BaseModel

from operators._anthropic_normalizer import ANTHROPIC_EVENT_TYPES, AnthropicNormalizer
from operators._chat_normalizer import ChatNormalizer, error_from_payload
from operators._fused import Fusable, Link, Stage, StageBase, complete_after
from operators._responses_normalizer import ResponsesNormalizer
from operators._stamp import Stamper
from pipeline.core.errors import MalformedChunkError, UpstreamError
from pipeline.core.events import Event, EventBase, Finished, Started
from pipeline.core.ids import new_stream_id
from pipeline.core.sse_decoder import SSEMessage

__all__ = ["Extractor", "RawChunk", "extract_deltas"]

RawChunk = SSEMessage | Mapping[str, Any] | BaseModel


class Extractor:
    """The state of one stream's extraction; usable without reactivex."""

    __slots__ = ("_anthropic", "_chat", "_done", "_responses", "_t", "stamp")

    def __init__(self, stream_id: str | None = None) -> None:
        self.stamp = Stamper(stream_id or new_stream_id())
        self._chat: ChatNormalizer | None = None
        self._responses: ResponsesNormalizer | None = None
        self._anthropic: AnthropicNormalizer | None = None
        self._done = False
        self._t = 0.0

    def feed(self, item: RawChunk, out: list[EventBase]) -> None:
        """Append the events of one raw item to ``out``; raise on an error payload.

        Events appended before an exception are valid and must be delivered.
        """
        if self._done:
            return
        if isinstance(item, SSEMessage):
            data = item.data
            self._t = t = item.t
            if data == "[DONE]":
                self._done = True
                return
            try:
                # Only keys are cached: chunk values are rarely repeated, and caching
                # them costs more than it saves (the parsed values are the same).
                chunk = jiter.from_json(data.encode(), cache_mode="keys")
            except ValueError as exc:
                raise MalformedChunkError(f"chunk is not valid JSON ({exc})", data) from None
            if item.event == "error":
                raise error_from_payload(chunk)
            if not isinstance(chunk, dict):
                raise MalformedChunkError("chunk is not a JSON object", data)
        elif isinstance(item, BaseModel):
            chunk = item.model_dump(mode="json", exclude_unset=True)
            t = self._t
        else:
            chunk = dict(item)
            t = self._t
        if self._chat is not None:
            self._chat.feed(chunk, t, out, self.stamp)
        elif self._responses is not None:
            self._responses.feed(chunk, t, out, self.stamp)
        elif self._anthropic is not None:
            self._anthropic.feed(chunk, t, out, self.stamp)
        else:
            self._start(chunk, t, out)

    def _start(self, chunk: dict[str, Any], t: float, out: list[EventBase]) -> None:
        kind = chunk.get("type")
        if kind in ANTHROPIC_EVENT_TYPES:
            self._anthropic = AnthropicNormalizer()
            message = chunk.get("message")
            message = message if isinstance(message, dict) else {}
            out.append(
                self.stamp(
                    Started,
                    0,
                    t,
                    api="anthropic",
                    model=message.get("model"),
                    response_id=message.get("id"),
                    usage=message.get("usage") if isinstance(message.get("usage"), dict) else None,
                )
            )
            self._anthropic.feed(chunk, t, out, self.stamp)
        elif isinstance(kind, str) and (kind.startswith("response.") or kind == "error"):
            self._responses = ResponsesNormalizer()
            response = chunk.get("response") or {}
            out.append(
                self.stamp(
                    Started,
                    0,
                    t,
                    api="responses",
                    model=response.get("model"),
                    response_id=response.get("id"),
                )
            )
            self._responses.feed(chunk, t, out, self.stamp)
        elif "choices" in chunk or chunk.get("object") == "chat.completion.chunk":
            self._chat = ChatNormalizer()
            model, rid = chunk.get("model"), chunk.get("id")
            out.append(self.stamp(Started, 0, t, api="chat", model=model, response_id=rid))
            self._chat.feed(chunk, t, out, self.stamp)
        elif "error" in chunk:
            raise error_from_payload(chunk["error"])
        else:
            raise MalformedChunkError(
                "neither a Chat Completions chunk, a Responses event nor an Anthropic Messages "
                "event",
                str(chunk),
            )

    def close(self) -> list[EventBase]:
        """The upstream ended: return the terminal ``finished`` event."""
        if self._chat is not None:
            first = self._chat.choices.get(0)
            reason = first.finish_reason if first is not None else None
        elif self._responses is not None:
            reason = self._responses.finish_reason
        elif self._anthropic is not None:
            reason = self._anthropic.finish_reason
        else:
            raise UpstreamError("the stream ended before any data arrived")
        return [self.stamp(Finished, 0, self._t, finish_reason=reason)]


class _Extract(StageBase):
    """One subscription of :func:`extract_deltas`: raw items in, events out."""

    __slots__ = ("downstream", "state")

    def __init__(self, downstream: Stage[Event], stream_id: str | None) -> None:
        super().__init__()
        self.downstream = downstream
        self.state = Extractor(stream_id)

    def on_next(self, item: RawChunk) -> None:
        if self.stopped:
            return
        events: list[EventBase] = []
        try:
            self.state.feed(item, events)
        except Exception as exc:
            for event in events:
                self.downstream.on_next(event)  # type: ignore[arg-type]
            self.downstream.on_error(exc)
            return
        for event in events:
            self.downstream.on_next(event)  # type: ignore[arg-type]

    def on_error(self, error: Exception) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.downstream.on_error(error)

    def on_completed(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        complete_after(self.downstream, self.state.close)  # type: ignore[arg-type]


class _ExtractDeltas(Fusable[RawChunk, Event]):
    name = "extract_deltas"

    def __init__(self, stream_id: str | None) -> None:
        self.stream_id = stream_id

    def stage(self, downstream: Stage[Event], link: Link) -> _Extract:
        return _Extract(downstream, self.stream_id)


def extract_deltas(
    stream_id: str | None = None,
) -> Fusable[RawChunk, Event]:
    """Normalize provider chunks into events; ``stream_id`` defaults to a new uuid.

    Errors: :class:`MalformedChunkError` for a chunk that is not JSON or not a
    known shape, :class:`UpstreamStreamError` for an error payload, and
    :class:`UpstreamError` for a stream that ended before any data.
    """
    return _ExtractDeltas(stream_id)
