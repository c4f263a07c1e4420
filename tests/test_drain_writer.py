"""The background writer the store and the Redis bus share, against an in-memory destination.

A destination that refuses a number of writes shows the retry; one that
raises a bug shows the writer living on; flush, close and dropping are
checked without any database or Redis. (The store's and the bus's own
tests run the same class against SQLite, PostgreSQL and Redis.)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque

import pytest

from pipeline.core.backoff import Backoff
from sinks._drain_writer import DrainWriter

log = logging.getLogger("tests.drain_writer")


class ListWriter(DrainWriter[list[int]]):
    """Writes numbers to a list, three at a time; the first ``failures`` writes fail."""

    _log = log
    _what = "the list writer"
    _task_name = "tests-list-writer"

    def __init__(self, failures: int = 0, bugs: int = 0, max_buffer: int = 100) -> None:
        self.drops: list[int] = []
        super().__init__(Backoff(0.001, 0.002), on_drop=self.drops.append)
        self.queue: deque[int] = deque()
        self.written: list[int] = []
        self.failures = failures
        self.bugs = bugs
        self.max_buffer = max_buffer
        self.retried: list[int] = []

    def put(self, item: int) -> bool:
        if self._closed or len(self.queue) >= self.max_buffer:
            self._drop("the list is full: dropping %d", item)
            return False
        self.queue.append(item)
        self._accept()
        self._wakeup.set()
        return True

    def _take(self) -> list[int]:
        return list(itertools.islice(self.queue, 3))

    async def _write(self, batch: list[int]) -> None:
        if self.bugs:
            self.bugs -= 1
            raise ValueError("a bug")
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the destination is down")
        self.written.extend(batch)

    def _commit(self, batch: list[int]) -> int:
        for _ in batch:
            self.queue.popleft()
        return self._done + len(batch)

    def _retryable(self, error: Exception) -> bool:
        return isinstance(error, ConnectionError)

    def _retrying(self, error: Exception, attempt: int, batch: list[int]) -> None:
        self.retried.append(attempt)


async def test_flush_waits_through_retries_and_everything_is_written_once_in_order() -> None:
    writer = ListWriter(failures=4)
    writer.start()
    for i in range(10):
        writer.put(i)
    await writer.flush()
    assert writer.written == list(range(10))
    assert writer.retries == 4 and writer.retried == [1, 2, 3, 4]  # attempts count up per batch
    assert writer.dropped == 0
    await writer.close(1.0)


async def test_a_bug_is_logged_and_the_writer_lives_on(caplog: pytest.LogCaptureFixture) -> None:
    writer = ListWriter(bugs=1)
    writer.start()
    writer.put(1)
    await writer.flush()
    assert writer.written == [1]
    assert "the list writer failed; retrying" in caplog.text
    await writer.close(1.0)


async def test_close_flushes_then_stops_and_later_puts_are_dropped() -> None:
    writer = ListWriter(failures=2)
    writer.start()
    writer.put(1)
    writer.put(2)
    await writer.close(5.0)
    assert writer.written == [1, 2]
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "tests-list-writer"]
    assert writer.put(3) is False and writer.dropped == 1 and writer.drops == [1]
    with pytest.raises(RuntimeError, match="not running"):
        await writer.flush()
    with pytest.raises(RuntimeError, match="already started"):
        writer.start()


async def test_close_gives_up_after_its_grace_on_a_destination_that_stays_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = ListWriter(failures=10**9)
    writer.start()
    writer.put(1)
    await writer.close(0.05)
    assert writer.written == [] and writer.retries > 0
    assert "could not write within" in caplog.text


async def test_a_full_buffer_drops_counts_and_warns_once_per_spell(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = ListWriter(max_buffer=2)
    accepted = [writer.put(i) for i in range(5)]  # not started: nothing drains
    assert accepted == [True, True, False, False, False]
    assert writer.dropped == 3 and writer.drops == [1, 1, 1]
    assert caplog.text.count("the list is full") == 1
    writer.start()
    await writer.flush()
    assert writer.written == [0, 1]
    await writer.close(1.0)
