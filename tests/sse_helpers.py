"""Pieces the SSE responder's tests share: a live stream, a text event, loop turns, a receive."""

from __future__ import annotations

import asyncio
from typing import Any

from reactivex.subject import Subject
from starlette.types import Message

from pipeline.core.events import TextDelta
from pipeline.runtime.multicast import StreamRun


def text(seq: int) -> TextDelta:
    """Text delta ``seq`` of stream ``s`` (its text ``t<seq>``)."""
    return TextDelta(stream_id="s", seq=seq, text=f"t{seq}")


def live() -> tuple[StreamRun, Subject[Any]]:
    """A run of stream ``s`` over a subject the test feeds by hand."""
    source: Subject[Any] = Subject()
    return StreamRun(source, stream_id="s"), source


async def never_disconnect() -> Message:
    """An ASGI ``receive`` whose client never leaves."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def until(predicate: Any) -> None:
    """Let the loop run until ``predicate()`` (a bounded number of turns, no clock)."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never came true")
