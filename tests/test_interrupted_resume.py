"""A stream the store holds as ``interrupted`` ends with a terminal event on the events route.

Regression test: its events were served without a terminal one, so a
browser's ``EventSource`` reconnected forever.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from reactivex.subject import Subject

from pipeline.core.events import Event, Started, TextDelta
from pipeline.runtime.multicast import StreamRun
from sinks.store import Store
from tests.serving import ServeProcess

pytestmark = pytest.mark.slow  # starts rxllm serve


async def test_an_interrupted_stream_read_from_the_store_gets_a_terminal_event(
    tmp_path: Path,
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'transcripts.db'}"
    store = Store(db)
    await store.open()
    source: Subject[Event] = Subject()
    run = StreamRun(source, stream_id="cut-short")
    store.attach(run, request={"model": "m"})
    run.start()
    source.on_next(Started(stream_id="cut-short", seq=0, t=0.0))
    source.on_next(TextDelta(stream_id="cut-short", seq=1, t=0.1, text="Hel"))
    await store.close()  # the stream is still live: stored as interrupted
    with ServeProcess("--db", db, log_path=tmp_path / "serve.log") as proc:
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as http:
            transcript = await http.get("/v1/transcripts/cut-short")
            assert transcript.json()["status"] == "interrupted"
            response = await http.get("/v1/streams/cut-short/events")
    events = [
        json.loads(line[len("data: ") :])
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]
    assert [e["type"] for e in events] == ["started", "text", "cancelled"]
    assert events[-1]["seq"] == 2
    assert events[-1]["reason"].startswith("interrupted")
