"""Recording sink: a stream's events to a JSON Lines file, one event per line.

Each line is :func:`pipeline.core.events.dump_event` of one event (its ``type``,
``stream_id``, ``seq`` and ``t``, the offset from the stream's start, kept),
so :func:`pipeline.runtime.replay.load_jsonl` and :func:`pipeline.runtime.replay.replay` play
the file back at its original timing.

Every line is flushed to the operating system as it is written (not
``fsync``-ed): a crash mid-stream leaves every event received so far, and a
reader may follow the file while the stream runs. The file is opened at the
first event (an unstarted stream leaves no file) and closed at the terminal
event, at ``on_error`` or ``on_completed``, whichever comes first.

The sink never raises into the stream: an ``OSError`` (the directory is
missing, the disk is full) is logged, kept in :attr:`JsonlRecorder.error`,
and the sink detaches; the other sinks go on.

Example::

    run = StreamRun(llm_stream(sources.chat_completions(client, **request)), errors_mapped=True)
    recorder = record_to(run, "answer.jsonl")     # or run.subscribe(JsonlRecorder(path))
    run.start()
    await run.wait()
    assert recorder.error is None

Errors: none raised; see :attr:`JsonlRecorder.error`.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TextIO

from reactivex import abc

from pipeline.core.events import Event, dump_event, is_terminal
from pipeline.runtime.multicast import StreamRun

__all__ = ["JsonlRecorder", "record_to"]

log = logging.getLogger(__name__)


class JsonlRecorder(abc.ObserverBase[Event]):
    """An observer that writes each event as one JSON line to ``path``.

    ``append=True`` adds to an existing file instead of replacing it.
    Subscribe it to a :class:`pipeline.runtime.multicast.StreamRun` (``run.subscribe``)
    or to any observable of events; :func:`record_to` does the former and
    lets the sink dispose its own subscription when it fails.
    """

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False) -> None:
        self.path = Path(path)
        self.append = append
        self.error: OSError | None = None
        self.events_written = 0
        self.subscription: abc.DisposableBase | None = None
        self._file: TextIO | None = None
        self._done = False
        # Events of one stream never overlap (the observer contract), but a stream
        # replayed on a thread scheduler may end while another thread closes us.
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        """Whether the recording is over: terminal event seen, stream ended, or failed."""
        return self._done

    def on_next(self, value: Event) -> None:
        """Write ``value`` as one line and flush it; close the file at a terminal event."""
        with self._lock:
            if self._done:
                return
            try:
                if self._file is None:
                    self._file = self.path.open(
                        "a" if self.append else "w", encoding="utf-8", newline="\n"
                    )
                self._file.write(dump_event(value) + "\n")
                self._file.flush()
                self.events_written += 1
            except OSError as exc:
                self._fail(exc)
                return
            if is_terminal(value):
                self._close()

    def on_error(self, error: Exception) -> None:
        """Close the file: the stream failed without a terminal event."""
        with self._lock:
            self._close()

    def on_completed(self) -> None:
        """Close the file (already closed if a terminal event came)."""
        with self._lock:
            self._close()

    def close(self) -> None:
        """Close the file now and ignore any later event (idempotent)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        self._done = True
        file, self._file = self._file, None
        if file is None:
            return
        try:
            file.close()
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self.error = exc
        log.error("recording to %s failed; the recorder detaches: %s", self.path, exc)
        self._done = True
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:
                log.debug("closing the broken recording %s failed too", self.path, exc_info=True)
        if self.subscription is not None:
            self.subscription.dispose()


def record_to(
    run: StreamRun, path: str | os.PathLike[str], *, append: bool = False
) -> JsonlRecorder:
    """Record ``run`` to ``path`` (call before ``run.start()``); return the recorder.

    Example::

        recorder = record_to(run, "answer.jsonl")
    """
    recorder = JsonlRecorder(path, append=append)
    recorder.subscription = run.subscribe(recorder)
    return recorder
