"""The store's sink: an observer that queues a stream's events for the writer.

``on_next`` feeds the event to an :class:`pipeline.core.result.Accumulator`
(O(1)) and appends it to the writer's bounded queue (O(1)); it never awaits,
never blocks and never raises into the stream. The first event queues the
stream's row (with the request, scrubbed); the terminal event queues its
final update, exactly once. If the stream fails without a terminal event
(``on_error``, or completion without one) the final update says ``error``;
if the store closes first, ``interrupted``.

The accumulator sees every event, so the final message is whole even when
the buffer overflowed and some events were not stored. With the stream's
flow gate (``flow``), the writer holds it while this stream has more than
its share of a long backlog queued (:mod:`sinks.store.batch_writer`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from reactivex import abc

from pipeline.core.events import Event, EventBase
from pipeline.core.flow_control import FlowGate
from pipeline.core.ids import new_stream_id
from pipeline.core.redaction import redact_value
from pipeline.core.result import Accumulator
from sinks.store.batch_writer import BatchWriter, StreamClose, StreamOpen, StreamShare, now
from sinks.store.tables import Status

__all__ = ["TranscriptSink", "scrub_request"]

log = logging.getLogger(__name__)


def scrub_request(request: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A JSON-safe copy of ``request`` without credentials.

    Keys in :data:`pipeline.core.redaction.SECRET_NAMES` (``api_key``,
    ``Authorization``, ``headers``...) are dropped at any depth; user info and
    ``?key=`` / ``?token=`` values in URLs are masked; objects that are not
    JSON become ``"<TypeName>"`` (:func:`pipeline.core.redaction.redact_value`).
    Message contents are stored as they are.
    """
    if request is None:
        return None
    scrubbed = redact_value(request)
    assert isinstance(scrubbed, dict)
    return scrubbed


class TranscriptSink(abc.ObserverBase[Event]):
    """Queues one stream's events and final update; made by ``Store.attach``."""

    def __init__(
        self,
        writer: BatchWriter,
        request: dict[str, Any] | None = None,
        *,
        on_done: Callable[[TranscriptSink], None] | None = None,
        flow: FlowGate | None = None,
    ) -> None:
        self._writer = writer
        self._share = StreamShare(flow)
        self._request = request
        self._on_done = on_done
        self._accumulator = Accumulator()
        self._stream_id: str | None = None
        self._created_at = now()
        self._last_t = 0.0
        self._done = False
        self.subscription: abc.DisposableBase | None = None

    @property
    def stream_id(self) -> str | None:
        """The stream's id, known from its first event."""
        return self._stream_id

    @property
    def done(self) -> bool:
        """Whether the final update has been queued."""
        return self._done

    def on_next(self, value: Event) -> None:
        if self._done:
            return
        try:
            stream_id = self._stream_id
            if stream_id is None:
                stream_id = self._begin(value)
            self._accumulator.add(value)
            self._last_t = value.t
            self._writer.put_event(stream_id, value, self._share)
            if value.ends_stream:
                self._finish(_status_of(value), terminal=value)
        except Exception:  # never break the stream; the store's own bug is logged
            log.exception("the transcript store failed to queue an event")

    def on_error(self, error: Exception) -> None:
        if self._done:
            return
        self._ensure_begun()
        info = {"kind": "internal", "message": f"{type(error).__name__}: {error}"[:1000]}
        self._finish("error", error=info)

    def on_completed(self) -> None:
        if self._done:
            return
        self._ensure_begun()
        message = "the stream completed without a terminal event"
        self._finish("error", error={"kind": "internal", "message": message})

    def interrupt(self, reason: str = "the transcript store closed") -> None:
        """Finalize now as ``interrupted`` (the store is closing) and detach."""
        if self._done:
            return
        if self._stream_id is not None:
            self._finish("interrupted", error={"kind": "interrupted", "message": reason})
        else:
            self._done = True
            if self._on_done is not None:
                self._on_done(self)
        if self.subscription is not None:
            self.subscription.dispose()

    def _ensure_begun(self) -> None:
        if self._stream_id is None:
            self._stream_id = new_stream_id()
            self._writer.put_control(self._open_record(self._stream_id))

    def _begin(self, event: EventBase) -> str:
        stream_id = event.stream_id or new_stream_id()
        self._stream_id = stream_id
        self._created_at = now()
        self._writer.put_control(self._open_record(stream_id))
        return stream_id

    def _open_record(self, stream_id: str) -> StreamOpen:
        model = self._request.get("model") if self._request else None
        return StreamOpen(
            stream_id=stream_id,
            created_at=self._created_at,
            model=model if isinstance(model, str) else None,
            request=self._request,
        )

    def _finish(
        self,
        status: Status,
        *,
        terminal: EventBase | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        self._done = True
        assert self._stream_id is not None
        self._writer.put_control(
            StreamClose(
                stream_id=self._stream_id,
                created_at=self._created_at,
                status=status,
                accumulator=self._accumulator,
                finished_at=now(),
                terminal=terminal,
                error=error,
                duration=self._last_t,
            )
        )
        if self._on_done is not None:
            self._on_done(self)


def _status_of(event: EventBase) -> Status:
    kind = getattr(event, "type", "")
    if kind == "finished":
        return "finished"
    if kind == "cancelled":
        return "cancelled"
    return "error"
