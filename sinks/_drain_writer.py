"""The background writer of the transcript store and the Redis bus: queue, drain, retry.

Producers put records from ``on_next``: a put appends to an in-memory queue
and returns, never awaits. One task drains the queue in batches; a batch
leaves the queue only once it is written, and a batch the destination could
not take for a reason that may pass (a lock, a lost connection, a restart)
is written again after a backoff (:class:`pipeline.core.backoff.Backoff`)
for as long as it takes::

    put ──▶ queue ──▶ task: wait (a wake-up or a timer) ─▶ take a batch ─▶ write ─▶ commit
                                                               ▲             │ may pass
                                                               └─ backoff ◀──┘

Records are numbered as they are accepted; :meth:`DrainWriter.flush` waits
until every record numbered up to the last one accepted is written, and
:meth:`DrainWriter.close` flushes for a grace period, then cancels the task
and awaits it. Records put while the destination is down queue up to a
bound the subclass keeps; past it they are dropped, counted in
:attr:`DrainWriter.dropped` and passed to ``on_drop``, with one warning per
spell. An error that is not retryable is the subclass's to handle inside
:meth:`DrainWriter._write`; one that escapes is a bug: it is logged and the
task goes on after a pause.

A subclass says what a batch is and where it goes: :meth:`_take`,
:meth:`_write`, :meth:`_commit` and :meth:`_retryable`, and may hook
:meth:`_retrying`, :meth:`_written`, :meth:`_wait_timeout`,
:meth:`_before_drain`, :meth:`_after_drain` and :meth:`_has_work`.
(:class:`sinks.store.batch_writer.BatchWriter` and
:class:`sinks.redis_bus.publisher.RedisPublisher` are the two.)
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from pipeline.core.backoff import Backoff
from sinks._waiters import Waiters

__all__ = ["DrainWriter", "DropHook", "RetrySettings"]

DropHook = Callable[[int], None]
"""Called with the number of records just dropped (``prometheus_client.Counter.inc`` fits)."""

B = TypeVar("B")


class RetrySettings(BaseModel):
    """The retry fields of a drain writer's settings (the store's and the bus's extend it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    retry_initial: float = Field(default=0.05, gt=0, description="first backoff after a failure")
    retry_max: float = Field(default=2.0, gt=0, description="cap of the exponential backoff")

    @property
    def retry_backoff(self) -> Backoff:
        """The backoff between retries: ``retry_initial`` doubling up to ``retry_max``."""
        return Backoff(self.retry_initial, self.retry_max)


class DrainWriter(ABC, Generic[B]):
    """A queue drained by one background task, with retries; see the module docstring.

    ``backoff`` spaces the retries of a batch (its ``cap`` is also the pause
    after a bug); ``on_drop`` hears of dropped records.
    """

    _log: ClassVar[logging.Logger]
    """Where the subclass's lines go (its module's logger)."""
    _what: ClassVar[str]
    """The writer's name in messages: ``"the transcript store writer"``."""
    _task_name: ClassVar[str]

    def __init__(self, backoff: Backoff, *, on_drop: DropHook | None = None) -> None:
        self._backoff = backoff
        self._on_drop = on_drop
        self._accepted = 0  # the number of the last record accepted
        self._done = 0  # every record numbered up to this one is written
        self._waiters = Waiters()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._overflowing = False
        self.dropped = 0
        self.failed = 0
        self.retries = 0

    # -- what a subclass says -------------------------------------------------

    @abstractmethod
    def _take(self) -> B:
        """The next batch to write (it stays queued until :meth:`_commit`)."""

    @abstractmethod
    async def _write(self, batch: B) -> None:
        """Write ``batch``; raise a :meth:`_retryable` error to have it written again."""

    @abstractmethod
    def _commit(self, batch: B) -> int:
        """Take the written ``batch`` off the queue; return the number now written up to."""

    @abstractmethod
    def _retryable(self, error: Exception) -> bool:
        """Whether a write that failed with ``error`` may succeed later."""

    def _retrying(self, error: Exception, attempt: int, batch: B) -> None:
        """A write failed with a retryable ``error``; retry ``attempt`` comes after a backoff."""

    def _written(self, retries: int) -> None:
        """A batch was written, after ``retries`` failed attempts."""

    def _has_work(self, target: int) -> bool:
        """Whether a drain that started at record ``target`` goes on."""
        return self._done < target

    def _wait_timeout(self) -> float:
        """Seconds the task sleeps when not woken up (then drains anyway)."""
        return self._backoff.cap

    async def _before_drain(self) -> None:
        """Called each time the task wakes up, before it drains."""

    async def _after_drain(self) -> None:
        """Called after each drain."""

    # -- the hot path -------------------------------------------------------------

    def _accept(self) -> int:
        """Number a new record; returns its number."""
        self._accepted += 1
        return self._accepted

    def _drop(self, message: str, *args: object) -> None:
        """Count one dropped record; the first of a spell logs ``message % args``."""
        self.dropped += 1
        if not self._overflowing:
            self._overflowing = True
            self._log.warning(message, *args)
        if self._on_drop is not None:
            try:
                self._on_drop(1)
            except Exception:
                self._log.exception("%s: the on_drop hook failed", self._what)

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Start the task on the running loop."""
        if self._task is not None:
            raise RuntimeError(f"{self._what} has already started")
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._task_name)
        self._task.add_done_callback(self._on_task_done)

    async def flush(self) -> None:
        """Wait until everything put before this call is written (retrying as needed).

        Errors: ``RuntimeError`` if the task is not running.
        """
        if self._task is None or self._task.done():
            raise RuntimeError(f"{self._what} is not running")
        target = self._accepted
        if self._done >= target:
            return
        future = self._waiters.until(target)
        self._wakeup.set()
        await future

    async def close(self, grace: float) -> None:
        """Flush (for at most ``grace`` seconds), then cancel the task and await it."""
        task = self._task
        if task is None or self._closed:
            self._closed = True
            return
        try:
            async with asyncio.timeout(grace):
                await self.flush()
        except TimeoutError:
            self._lost(grace)
        except RuntimeError:
            self._log.exception("%s had stopped", self._what)
        finally:
            self._closed = True
            task.cancel()
            await asyncio.wait([task])

    def _lost(self, grace: float) -> None:
        """:meth:`close` could not write everything within ``grace`` seconds: say what is lost."""
        self._log.error("%s could not write within %.1f s", self._what, grace)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        self._waiters.fail(RuntimeError(f"{self._what} stopped"))

    # -- the task -----------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._wakeup.is_set():
                try:
                    async with asyncio.timeout(self._wait_timeout()):
                        await self._wakeup.wait()
                except TimeoutError:
                    pass
            self._wakeup.clear()
            try:
                await self._before_drain()
                await self._drain()
                await self._after_drain()
            except Exception:  # a bug: keep the writer alive, say so, try again later
                self._log.exception("%s failed; retrying", self._what)
                await asyncio.sleep(self._backoff.cap)

    async def _drain(self) -> None:
        attempt = 0
        # What is accepted now; what arrives meanwhile waits for the next wake-up
        # (unless _has_work says otherwise).
        target = self._accepted
        while self._has_work(target):
            batch = self._take()
            try:
                await self._write(batch)
            except Exception as error:
                if not self._retryable(error):
                    raise
                attempt += 1
                self.retries += 1
                self._retrying(error, attempt, batch)
                await asyncio.sleep(self._backoff.delay(attempt))
                continue
            self._done = self._commit(batch)
            self._waiters.reached(self._done)
            self._written(attempt)
            attempt = 0
