"""Stream ids: the one place a new one is made.

A stream id is 32 lowercase hex digits of a random UUID (``uuid4().hex``):
unique without coordination between processes, safe in a URL, a Redis key,
an SSE ``id`` and a file name.
"""

from __future__ import annotations

import uuid

__all__ = ["new_stream_id"]


def new_stream_id() -> str:
    """A new stream id: 32 hex digits of a random UUID."""
    return uuid.uuid4().hex
