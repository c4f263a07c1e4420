"""A sink that draws a stream as it comes: a marble diagram updated in place in a notebook.

Subscribe it to a run (or any observable of events); in Jupyter it shows a
diagram at once and redraws it in place as events arrive, through an IPython
display handle (IPython is optional: without it the sink only collects)::

    view = LiveMarbles(title="replayed at 2x")
    run = StreamRun(replay(recording, speed=2.0))
    run.subscribe(view)
    run.start()
    await run.wait()
    view.events                         # what it saw

Redraws are spaced by stream time, not wall time: at most one per
``every`` seconds of the events' ``t`` (and one at the end), so a fast replay
is not drawn a hundred times a second and the same stream is drawn the same
way every time.
"""

from __future__ import annotations

from typing import Any, Literal

from reactivex import abc

from pipeline.core.events import Event, is_terminal
from pipeline.core.marbles import MarbleDiagram, marbles
from pipeline.core.recording import Recording

__all__ = ["LiveMarbles"]


def _display(diagram: MarbleDiagram) -> Any:
    """Show ``diagram`` with a display id; its handle, or ``None`` without IPython."""
    try:
        from IPython.display import display
    except ImportError:  # IPython is optional: collect only
        return None
    return display(diagram, display_id=True)  # type: ignore[no-untyped-call]


class LiveMarbles(abc.ObserverBase[Event]):
    """An observer of events that keeps a marble diagram of them up to date on screen."""

    def __init__(
        self,
        *,
        title: str | None = None,
        by: Literal["kind", "choice", "stream"] = "kind",
        every: float = 0.05,
        display: bool = True,
    ) -> None:
        self.events = Recording()
        self.title = title
        self.by = by
        self.every = every
        self.updates = 0
        self._drawn_at: float | None = None
        self._handle: Any = None
        if display:
            self._handle = _display(self.diagram())

    def diagram(self) -> MarbleDiagram:
        """The diagram of the events so far."""
        return marbles(self.events, by=self.by, title=self.title)

    def _repr_html_(self) -> str:
        return self.diagram()._repr_html_()

    def _redraw(self) -> None:
        self.updates += 1
        if self._handle is not None:
            self._handle.update(self.diagram())

    def on_next(self, value: Event) -> None:
        self.events.append(value)
        due = self._drawn_at is None or value.t - self._drawn_at >= self.every
        if due or is_terminal(value):
            self._drawn_at = value.t
            self._redraw()

    def on_error(self, error: Exception) -> None:
        self._redraw()

    def on_completed(self) -> None:
        self._redraw()
