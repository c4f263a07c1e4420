"""The transcript store under a flood: a store that is behind slows the flood, not the others.

Regression test: streams flooding one-word tokens (a reader whose socket
buffers took megabytes) filled the store's bounded buffer faster than the
database wrote it, and the store dropped most of their events although the
database was up. Now a stream over its share of a long backlog holds its own
flow gate until the writer catches up; while writes fail, nobody is held and
the buffer drops and counts as before.

A real SQLite file and a real HTTP source reading an upstream of our own that
writes thousands of messages at a time (:mod:`tests.flood_upstream`). The
database is made slow deterministically: its writes wait until the test lets
them go. Nothing waits on a clock except the guards against a hang.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI
from reactivex.subject import Subject

from pipeline.core.events import Event, EventBase, Started, TextDelta
from pipeline.runtime import sources
from pipeline.runtime.http_backend import http_client
from pipeline.runtime.multicast import StreamRun
from pipeline.runtime.standard_chain import llm_stream
from sinks.metrics import Metrics
from sinks.store import Store, StoreSettings
from sinks.store.batch_writer import BatchWriter
from tests.flood_upstream import FloodUpstream
from tests.store_rows import stored_events
from tests.test_store_faults import Retries, locked

FRAMES = 20_000
GUARD = 60.0  # seconds: reached only if the behaviour under test is missing


def flood_settings() -> StoreSettings:
    return StoreSettings(
        max_buffer=2_000,  # holds from 1,000 queued, releases at 500
        batch_size=50,
        flush_interval=0.02,
        lock_timeout=0.05,
        retry_initial=0.01,
        retry_max=0.05,
        close_timeout=30.0,
    )


@pytest.fixture
async def client() -> AsyncIterator[AsyncOpenAI]:
    with FloodUpstream(chunk_size=1, burst=1_000, frames=FRAMES) as upstream:
        async with AsyncOpenAI(
            base_url=upstream.base_url, api_key="k", max_retries=0, http_client=http_client()
        ) as openai:
            yield openai


@pytest.fixture
def slow_writes(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Writes wait until the returned event is set: a database that is up but behind."""
    go = asyncio.Event()
    original = BatchWriter._write

    async def slow(self: BatchWriter, batch: Any) -> None:
        await go.wait()
        await original(self, batch)

    monkeypatch.setattr(BatchWriter, "_write", slow)
    return go


def flooding(store: Store, client: AsyncOpenAI) -> tuple[StreamRun, list[EventBase]]:
    """A stream reading the flood, stored, with a sink that records what it saw."""
    source = sources.chat_completions(
        client, model="flood", messages=[{"role": "user", "content": "go"}]
    )
    run = StreamRun(llm_stream(source, stream_id="flood"), "flood", errors_mapped=True)
    store.attach(run, {"model": "flood"})
    seen: list[EventBase] = []
    run.subscribe(seen.append)
    return run, seen


def quiet(store: Store) -> tuple[StreamRun, Subject[Event]]:
    """A stream driven by hand, a token now and then."""
    subject: Subject[Event] = Subject()
    run = StreamRun(subject, "quiet")
    store.attach(run, {"model": "quiet"})
    run.start()
    subject.on_next(Started(stream_id="quiet", seq=0))
    return run, subject


async def until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + GUARD
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.01)


async def stored_count(store: Store, stream_id: str) -> int:
    """How many events of ``stream_id`` the rows hold (a run counts each of its events)."""
    return len(await stored_events(store.engine, stream_id))


async def test_a_flood_into_a_slow_store_holds_its_own_stream_and_loses_nothing(
    tmp_path: Path, client: AsyncOpenAI, slow_writes: asyncio.Event
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'flood.db'}"
    metrics = Metrics()
    hold_hook = metrics.set_store_streams_held
    async with Store(url, settings=flood_settings(), on_hold=hold_hook) as store:
        other, say = quiet(store)
        run, seen = flooding(store, client)
        run.start()
        await until(lambda: run.flow.held or store.dropped > 0 or run.terminal is not None)
        assert store.dropped == 0
        assert run.flow.held  # the flood holds itself...
        assert b"rxllm_store_streams_held 1.0" in metrics.exposition()[0]  # ...and says so
        assert run.terminal is None
        say.on_next(TextDelta(stream_id="quiet", seq=1, text="still"))
        assert not other.flow.held  # ...not the stream beside it
        assert store.pending <= flood_settings().max_buffer

        slow_writes.set()  # the database catches up
        await asyncio.wait_for(run.wait(), GUARD)
        await store.flush()
        assert store.dropped == 0
        assert not run.flow.held
        exposition = metrics.exposition()[0]
        assert b"rxllm_store_streams_held 0.0" in exposition
        assert b"rxllm_store_holds_total 0.0" not in exposition  # counted, at least once
        assert b"rxllm_store_holds_total " in exposition
        assert seen[-1].type == "finished"
        assert await stored_count(store, "flood") == len(seen)
        assert len(seen) > FRAMES  # every token was an event, and every event is stored


async def test_a_store_that_goes_down_releases_the_streams_it_held(
    tmp_path: Path, client: AsyncOpenAI, slow_writes: asyncio.Event
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'flood.db'}"
    retries = Retries()
    async with Store(url, settings=flood_settings(), on_retry=retries) as store:
        run, seen = flooding(store, client)
        run.start()
        await until(lambda: run.flow.held or run.terminal is not None)
        assert run.flow.held
        async with locked(url):  # the writes now fail: the database is down, not behind
            slow_writes.set()
            await retries.wait()
            assert not run.flow.held  # an outage must not stall the stream
            await asyncio.wait_for(run.wait(), GUARD)  # it runs to its end meanwhile
            assert store.dropped > 0  # the bounded buffer kept what it could
        await store.flush()
        assert await stored_count(store, "flood") == len(seen) - store.dropped


async def test_while_writes_fail_a_flood_is_dropped_and_counted_and_nobody_is_held(
    tmp_path: Path, client: AsyncOpenAI
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'flood.db'}"
    retries = Retries()
    async with Store(url, settings=flood_settings(), on_retry=retries) as store:
        other, say = quiet(store)
        async with locked(url):
            say.on_next(TextDelta(stream_id="quiet", seq=1, text="first"))
            await retries.wait()  # the writer has seen the database fail
            run, seen = flooding(store, client)
            run.start()
            await asyncio.wait_for(run.wait(), GUARD)
            assert store.dropped > 0
            assert store.pending == flood_settings().max_buffer
            assert not run.flow.held and not other.flow.held
        await store.flush()
        assert await stored_count(store, "flood") == len(seen) - store.dropped
