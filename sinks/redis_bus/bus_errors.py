"""Errors of the Redis live-event bus.

The tree (under :class:`pipeline.core.errors.RxllmError`)::

    RxllmError
    └── BusError                    the Redis live-event bus failed
        ├── BusStreamNotFoundError  Redis holds no such stream (never published,
        │                           expired, or Redis restarted without its data)
        ├── BusGapError             the events asked for are no longer all in Redis
        │                           (trimmed, dropped on overflow, lost in a restart)
        └── BusUnavailableError     Redis could not be reached in time

Each says what to do: read the stream from the transcript store instead.
"""

from __future__ import annotations

from pipeline.core.errors import RxllmError

__all__ = ["BusError", "BusGapError", "BusStreamNotFoundError", "BusUnavailableError"]


class BusError(RxllmError):
    """Base class of the bus's errors."""


class BusStreamNotFoundError(BusError, LookupError):
    """Redis holds no stream with this id (or it was deleted while being read)."""

    def __init__(self, stream_id: str, *, while_reading: bool = False) -> None:
        when = "disappeared while it was being read" if while_reading else "is not in Redis"
        super().__init__(
            f"stream {stream_id!r} {when}: it never started, it ended and expired, or "
            "Redis restarted without its data; read it from the transcript store"
        )
        self.stream_id = stream_id
        self.while_reading = while_reading


class BusGapError(BusError):
    """Redis no longer holds every event after ``after``: the next one it has is ``available``.

    ``expected`` is the ``seq`` that should have come next. Read the events
    from ``expected`` to ``available - 1`` from the transcript store, then go
    on from Redis after ``available - 1``.
    """

    def __init__(self, stream_id: str, expected: int, available: int) -> None:
        super().__init__(
            f"stream {stream_id!r}: Redis has no event {expected} (the next it holds is "
            f"{available}): it was trimmed, dropped while Redis was unreachable, or lost "
            "in a restart; read the missing events from the transcript store"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.available = available


class BusUnavailableError(BusError):
    """Redis could not be reached (the cause is chained); retry later or use the store."""

    def __init__(self, what: str, error: BaseException) -> None:
        # The error's text names host and port, never a password (redis-py's messages).
        super().__init__(f"Redis is unreachable, could not {what}: {type(error).__name__}")
        self.what = what
