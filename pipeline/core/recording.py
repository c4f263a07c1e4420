"""A list of events that shows itself: a marble diagram in Jupyter, a timeline in a terminal.

:class:`Recording` is a plain ``list`` of events (everything a list does, it
does) with a picture: ``load_jsonl`` and ``Store.events`` return one, so a
recording or a stored transcript shows as a marble diagram when it is the
value of a notebook cell. For any other list of events, ``Recording(events)``
or ``marbles(events)``; ``%load_ext pipeline`` makes every list of events show
itself.

Example::

    events = load_jsonl("answer.jsonl")   # a Recording
    events                                 # in Jupyter: its marble diagram
    print(events.timeline())               # in a terminal
"""

from __future__ import annotations

from typing import Any, Literal

from pipeline.core.events import Event
from pipeline.core.marbles import MarbleDiagram, marbles
from pipeline.core.stream_timing import StreamTiming, stream_timing
from pipeline.core.text_timeline import text_timeline

__all__ = ["Recording", "load_ipython_extension"]


class Recording(list[Event]):
    """A list of events with :meth:`marbles`, :meth:`timing` and :meth:`timeline`."""

    def marbles(
        self, *, by: Literal["kind", "choice", "stream"] = "kind", title: str | None = None
    ) -> MarbleDiagram:
        """Its marble diagram (see :func:`pipeline.core.marbles.marbles`)."""
        return marbles(self, by=by, title=title)

    def timing(self) -> StreamTiming:
        """Its time to first token, gaps and rate."""
        return stream_timing(self)

    def timeline(self, *, width: int = 72) -> str:
        """Its timeline as text (see :func:`pipeline.core.text_timeline.text_timeline`)."""
        return text_timeline(self, width=width)

    def _repr_svg_(self) -> str | None:
        return self.marbles().to_svg() if self else None

    def _repr_html_(self) -> str | None:
        return self.marbles()._repr_html_() if self else None


def _html_of_events(value: Any) -> str | None:
    """The diagram of a non-empty list of events; ``None`` (no HTML) for anything else."""
    from pipeline.core.events import EventBase

    if isinstance(value, list) and value and all(isinstance(x, EventBase) for x in value):
        return marbles(value)._repr_html_()
    return None


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext pipeline``: every list of events shows as its marble diagram."""
    ipython.display_formatter.formatters["text/html"].for_type(list, _html_of_events)
