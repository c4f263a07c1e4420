"""The database lost mid-run: an error logged, a hook (the metric), events kept till it is back.

Regression test: a SQLite database whose directory was deleted while the
server ran was still written through the open connection, without an error,
and every later transcript was lost.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from reactivex.subject import Subject

from pipeline.core.events import Event, Finished, Started, TextDelta
from pipeline.runtime.multicast import StreamRun
from sinks.store import Store, StoreSettings


def stream(store: Store, stream_id: str, text: str) -> None:
    source: Subject[Event] = Subject()
    run = StreamRun(source, stream_id=stream_id)
    store.attach(run, request={"model": "m"})
    run.start()
    source.on_next(Started(stream_id=stream_id, seq=0, t=0.0))
    source.on_next(TextDelta(stream_id=stream_id, seq=1, t=0.1, text=text))
    source.on_next(Finished(stream_id=stream_id, seq=2, t=0.2, finish_reason="stop"))
    source.on_completed()


async def test_a_deleted_database_directory_is_reported_and_nothing_later_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "db"
    available: list[bool] = []
    settings = StoreSettings(flush_interval=0.02)
    store = Store(
        f"sqlite+aiosqlite:///{folder / 't.db'}", settings=settings, on_available=available.append
    )
    await store.open()
    try:
        stream(store, "before", "kept in the old file")
        await store.flush()
        shutil.rmtree(folder)
        stream(store, "during", "waits in memory")
        for _ in range(200):
            if available == [False]:
                break
            await asyncio.sleep(0.02)
        assert available == [False]
        assert "is gone with its directory" in caplog.text
        assert store.pending > 0  # kept, not written to the deleted file
        folder.mkdir()
        await asyncio.wait_for(store.flush(), 30)
        assert available == [False, True]
        during = await store.get("during")
        assert during is not None and during.status == "finished"
        assert during.content == "waits in memory"
        assert store.dropped == 0
    finally:
        await store.close()
