"""Bridges: async iterator to observable and back, with aiostream pipes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiostream import pipe, stream
from reactivex.subject import Subject

from pipeline.core.events import EventBase, Finished, TextDelta
from pipeline.runtime.async_bridges import BufferedObserver, from_async_iterable, from_observable


async def test_async_iterable_becomes_cold_observable() -> None:
    created = 0

    async def numbers() -> AsyncIterator[int]:
        nonlocal created
        created += 1
        for i in range(3):
            yield i

    source = from_async_iterable(numbers)
    assert created == 0
    got: list[int] = []
    done = asyncio.Event()
    source.subscribe(got.append, on_completed=done.set)
    await asyncio.wait_for(done.wait(), 1)
    assert got == [0, 1, 2]
    assert created == 1


async def test_dispose_cancels_the_reading_task_and_closes_the_iterator() -> None:
    closed = asyncio.Event()
    waiting = asyncio.Event()

    async def forever() -> AsyncIterator[int]:
        try:
            yield 1
            waiting.set()
            await asyncio.Event().wait()
            yield 2
        finally:
            closed.set()

    got: list[int] = []
    subscription = from_async_iterable(forever).subscribe(got.append)
    await asyncio.wait_for(waiting.wait(), 1)
    subscription.dispose()
    await asyncio.wait_for(closed.wait(), 1)
    assert got == [1]


async def test_iterator_error_goes_to_on_error() -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        raise ValueError("bad")

    errors: list[Exception] = []
    done = asyncio.Event()

    def on_error(exc: Exception) -> None:
        errors.append(exc)
        done.set()

    from_async_iterable(failing).subscribe(on_error=on_error)
    await asyncio.wait_for(done.wait(), 1)
    assert isinstance(errors[0], ValueError)


def test_subscribing_outside_an_event_loop_says_what_to_do() -> None:
    async def one() -> AsyncIterator[int]:
        yield 1

    with pytest.raises(RuntimeError, match="running event loop"):
        from_async_iterable(one).subscribe(print)


async def test_observable_as_aiostream_with_pipes() -> None:
    subject: Subject[int] = Subject()

    def times_ten(x: int, *_: int) -> int:
        return x * 10

    xs = from_observable(subject) | pipe.map(times_ten) | pipe.take(2)

    async def feed() -> None:
        await asyncio.sleep(0)
        for i in range(5):
            subject.on_next(i)

    task = asyncio.create_task(feed())
    assert await stream.list(xs) == [0, 10]
    await task
    assert not subject.observers, "leaving the iteration disposes the subscription"


async def test_observable_error_is_raised_by_the_iteration() -> None:
    subject: Subject[int] = Subject()
    xs = from_observable(subject)

    async def feed() -> None:
        await asyncio.sleep(0)
        subject.on_next(1)
        subject.on_error(ValueError("upstream"))

    task = asyncio.create_task(feed())
    with pytest.raises(ValueError, match="upstream"):
        async with xs.stream() as items:
            async for _ in items:
                pass
    await task


async def test_full_buffer_merges_text_deltas_and_drops_nothing() -> None:
    buffer: BufferedObserver[EventBase] = BufferedObserver(maxsize=4)
    pieces = [f"t{i} " for i in range(100)]
    for i, piece in enumerate(pieces):
        buffer.on_next(TextDelta(stream_id="s", seq=i, text=piece))
    buffer.on_next(Finished(stream_id="s", seq=100))
    buffer.on_completed()
    got = [e async for e in buffer]
    assert len(got) <= 6
    assert "".join(e.text for e in got if isinstance(e, TextDelta)) == "".join(pieces)
    assert isinstance(got[-1], Finished)
    assert buffer.merged > 0
    seqs = [e.seq for e in got]
    assert seqs == sorted(seqs)
