"""Recordings in and out of the transcript store: a stored stream to JSON Lines and back."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from pipeline.core.ids import new_stream_id
from pipeline.runtime.replay import RecordingError, load_jsonl, replay, save_jsonl
from sinks.store.transcript_store import Store

__all__ = ["export_transcript", "import_recording"]


async def export_transcript(store: Store, stream_id: str, path: str | os.PathLike[str]) -> int:
    """Write the stored events of ``stream_id`` to a JSON Lines file; return how many.

    Example::

        await export_transcript(store, stream_id, "answer.jsonl")

    Errors: ``LookupError`` if the store has no stream ``stream_id``;
    ``OSError`` if the file can't be written; database errors.
    """
    events = await store.events(stream_id)
    if not events and await store.get(stream_id) is None:
        raise LookupError(f"the transcript store has no stream {stream_id!r}")
    return await asyncio.to_thread(save_jsonl, events, path)


async def import_recording(
    store: Store,
    path: str | os.PathLike[str],
    *,
    request: Mapping[str, Any] | None = None,
    stream_id: str | None = None,
) -> str:
    """Store a JSON Lines recording as a new stream; return its id.

    The events are re-stamped with ``stream_id`` (default: a new random id)
    and written through the store's sink, so the stream is finalized (its
    final message, status, timings) like a live one and shows in
    ``store.list()``; the call returns once it is written. ``request`` is
    stored with it (scrubbed).

    Example::

        stream_id = await import_recording(store, "answer.jsonl")
        transcript = await store.get(stream_id)

    Errors: :class:`RecordingError` for a bad or empty file, ``OSError`` for
    one that can't be read; database errors from the flush.
    """
    events = await asyncio.to_thread(load_jsonl, path)
    if not events:
        raise RecordingError(os.fspath(path), None, "the recording is empty")
    new_id = stream_id or new_stream_id()
    sink = store.sink(request)
    replay(events, speed=None, stream_id=new_id).subscribe(sink)
    await store.flush()
    return new_id
