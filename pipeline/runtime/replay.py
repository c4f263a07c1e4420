"""Replay: recorded events as a cold observable, at their original timing or any speed.

A recording is a list of events: a JSON Lines file written by
:class:`sinks.jsonl_recorder.JsonlRecorder` (read with :func:`load_jsonl`), a
stored transcript (``await store.events(stream_id)``), or any list.
:func:`replay` plays it through the same operators and sinks as a live stream:

* ``speed=1.0`` -- at its original timing: each event ``t`` seconds after
  the subscription;
* ``speed=2.0`` -- twice as fast (``t / speed``); ``0.5`` half as fast;
* ``speed=None`` (or ``inf``) -- as fast as possible: every event is emitted
  synchronously, during ``subscribe``;
* ``scheduler=TestScheduler()`` -- in virtual time, deterministically.

With ``speed=1.0`` and a 50 ms gap::

    recorded  started(t=0) "He"(t=0.05) "llo"(t=0.10) finished(t=0.10)
    replayed  s----He----(llo,F)|

Timers come from the scheduler (``schedule_relative``), never from
``asyncio.sleep`` or ``time``: the argument, else the scheduler given at
subscribe time, else an ``AsyncIOScheduler`` on the running loop, else
reactivex's ``TimeoutScheduler``. One timer is pending at a time; each fires
for the next due event and emits every event due by then, so the order of
the recording is kept even where times are equal or go backwards. Due times
are measured from the subscription on the scheduler's clock (an asyncio
scheduler's loop clock, a virtual-time scheduler's virtual clock), so late
timers never add up, and an event is never emitted before its due time
(delays are rounded up to the microsecond, the resolution of reactivex's
virtual time).
Disposing the subscription cancels the pending timer.

Events keep their ``seq`` and their recorded ``t`` (a replay at another
speed says when things happened in the recording, not in the replay);
``stream_id=`` re-stamps every event, since a replay is a new stream.

A raw recorded SSE body (a provider's ``text/event-stream``, like the files
in ``shared/streams``) carries no timing; :func:`replay_sse` runs it through
the standard chain, ``llm_stream(sse_body(path))``.

Example::

    events = load_jsonl("answer.jsonl")              # or: await store.events(stream_id)
    run = StreamRun(replay(events, speed=2.0, stream_id=new_stream_id()))
    reader = run.iterate()
    run.start()
    async for event in reader: ...

Errors: :class:`RecordingError` for a line that is not an event (it names the
file and line); ``OSError`` for a file that can't be read or written;
``ValueError`` for a speed that is not positive. Stored streams go to and
from recordings with :mod:`sinks.store.recordings`.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from reactivex import Observable, abc
from reactivex.disposable import Disposable, SerialDisposable
from reactivex.scheduler import VirtualTimeScheduler

from pipeline.core.errors import RxllmError
from pipeline.core.events import Event, dump_event, load_event
from pipeline.core.recording import Recording
from pipeline.core.scheduling import default_scheduler

__all__ = [
    "RecordingError",
    "load_jsonl",
    "replay",
    "replay_sse",
    "save_jsonl",
]

# Delays are rounded up to whole microseconds: reactivex's virtual-time schedulers
# keep time as datetimes (microsecond resolution), so a delay that is not a whole
# number of microseconds would land a hair early, forever. _EPSILON absorbs the
# float noise of that rounding (and asyncio's clock resolution).
_EPSILON = 1e-9
_TICK = 1e-6


class RecordingError(RxllmError, ValueError):
    """A recording can't be used: a line is not an event (``line`` says which), or it is empty."""

    def __init__(self, path: str, line: int | None, detail: str) -> None:
        where = path if line is None else f"{path}:{line}"
        super().__init__(
            f"{where}: {detail}; a recording has one JSON event per line, "
            "as sinks.jsonl_recorder.JsonlRecorder writes them"
        )
        self.path = path
        self.line = line


def load_jsonl(path: str | os.PathLike[str]) -> Recording:
    """Read a JSON Lines recording (blank lines skipped) into a list of events.

    The list is a :class:`~pipeline.core.recording.Recording`: in a notebook
    it shows itself as a marble diagram.

    Example::

        events = load_jsonl("answer.jsonl")

    Errors: :class:`RecordingError` naming the file and line of the first
    line that is not an event; ``OSError`` if the file can't be read.
    """
    events = Recording()
    with Path(path).open(encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                events.append(load_event(line))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(part) for part in first.get("loc", ()))
                detail = f"{where}: {first['msg']}" if where else first["msg"]
                raise RecordingError(
                    os.fspath(path), number, f"not an rxllm event ({detail})"
                ) from None
    return events


def save_jsonl(events: Iterable[Event], path: str | os.PathLike[str]) -> int:
    """Write ``events`` to ``path`` as JSON Lines (replacing it); return how many.

    Example::

        save_jsonl(await store.events(stream_id), "answer.jsonl")

    Errors: ``OSError`` if the file can't be written.
    """
    count = 0
    with Path(path).open("w", encoding="utf-8", newline="\n") as file:
        for event in events:
            file.write(dump_event(event) + "\n")
            count += 1
    return count


def _clock(scheduler: abc.SchedulerBase) -> Callable[[], float]:
    """The scheduler's clock in seconds, the one its timers run on.

    An asyncio scheduler's ``now`` is wall-clock time, but its timers run on
    the loop's monotonic clock: measure with the latter.
    """
    if isinstance(scheduler, VirtualTimeScheduler):
        virtual = scheduler

        def virtual_clock() -> float:
            clock = virtual.clock
            return float(clock) if isinstance(clock, int | float) else virtual.to_seconds(clock)

        return virtual_clock
    loop = getattr(scheduler, "_loop", None)
    if isinstance(loop, asyncio.AbstractEventLoop):
        return loop.time
    return lambda: scheduler.to_seconds(scheduler.now)


def replay(
    events: Iterable[Event] | str | os.PathLike[str],
    *,
    speed: float | None = 1.0,
    scheduler: abc.SchedulerBase | None = None,
    stream_id: str | None = None,
) -> Observable[Event]:
    """Replay recorded events as a cold observable: each at ``t / speed`` after subscribing.

    ``events`` is a list of events or the path of a JSON Lines recording
    (read now, once). ``speed=None`` or ``inf`` emits everything during
    ``subscribe``. ``stream_id`` re-stamps every event (``seq`` and ``t``
    are kept). See the module docstring for the scheduler and the timing.

    Example::

        scheduler = TestScheduler()
        replay(load_jsonl("answer.jsonl"), scheduler=scheduler).subscribe(print)
        scheduler.start()

    Errors: ``ValueError`` if ``speed`` is not a positive number;
    :class:`RecordingError` / ``OSError`` for a recording file.
    """
    if speed is not None and (math.isnan(speed) or speed <= 0):
        raise ValueError(f"speed must be a positive number (or None: no delay), got {speed!r}")
    if isinstance(events, str | os.PathLike):
        items: list[Event] = load_jsonl(events)
    else:
        items = list(events)
    if stream_id is not None:
        items = [event.model_copy(update={"stream_id": stream_id}) for event in items]
    factor = None if speed is None or math.isinf(speed) else 1.0 / speed
    due_times = None if factor is None else [max(event.t, 0.0) * factor for event in items]

    def subscribe(
        observer: abc.ObserverBase[Event], scheduler_: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        if due_times is None:
            return _emit_now(items, observer)
        due = due_times
        _scheduler = scheduler or scheduler_ or default_scheduler()
        now = _clock(_scheduler)
        start = now()
        lock = threading.RLock()
        timer = SerialDisposable()
        position = 0
        stopped = False

        def schedule_next(minimum: float = 0.0) -> None:
            # Called with the lock held.
            delay = max(_ceil_tick(start + due[position] - now()), minimum)
            timer.disposable = _scheduler.schedule_relative(delay, emit_due)

        def emit_due(_: abc.SchedulerBase, __: Any = None) -> None:
            nonlocal position
            with lock:
                if stopped:
                    return
                elapsed = now() - start
                if due[position] > elapsed + _EPSILON:
                    schedule_next(_TICK)  # the timer fired early on our clock: wait the rest
                    return
                while position < len(items) and due[position] <= elapsed + _EPSILON:
                    event = items[position]
                    position += 1
                    observer.on_next(event)
                    if stopped:  # the observer disposed us
                        return
                if position < len(items):
                    schedule_next()
                else:
                    observer.on_completed()

        def complete(_: abc.SchedulerBase, __: Any = None) -> None:
            with lock:
                if not stopped:
                    observer.on_completed()

        def dispose() -> None:
            nonlocal stopped
            with lock:
                stopped = True
                timer.dispose()

        with lock:
            if items:
                schedule_next()
            else:
                timer.disposable = _scheduler.schedule(complete)
        return Disposable(dispose)

    return Observable(subscribe)


def _ceil_tick(delay: float) -> float:
    """``delay`` rounded up to a whole microsecond (0 if not positive)."""
    if delay <= 0:
        return 0.0
    return math.ceil(delay / _TICK - _EPSILON / _TICK) * _TICK


def _emit_now(items: Sequence[Event], observer: abc.ObserverBase[Event]) -> abc.DisposableBase:
    """Emit ``items`` synchronously; an observer may stop it through ``dispose``."""
    disposed = False

    def dispose() -> None:
        nonlocal disposed
        disposed = True

    subscription = Disposable(dispose)
    for event in items:
        if disposed:
            return subscription
        observer.on_next(event)
    observer.on_completed()
    return subscription


def replay_sse(
    path: str | os.PathLike[str] | bytes,
    *,
    stream_id: str | None = None,
    tools: Any = None,
) -> Observable[Event]:
    """Replay a raw recorded SSE body (no timing) through the standard chain.

    The same as ``llm_stream(sse_body(path), stream_id=..., tools=...)``:
    events are emitted synchronously, all with ``t = 0``.

    Example::

        replay_sse("../shared/streams/openai_chat_text-usage_1.sse").subscribe(print)

    Errors: an unreadable file becomes a terminal ``error`` event (``map_errors``).
    """
    from pipeline.runtime.sources import sse_body
    from pipeline.runtime.standard_chain import llm_stream

    return llm_stream(sse_body(path), stream_id=stream_id, tools=tools)
