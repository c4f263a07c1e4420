"""Marble diagrams of event streams, drawn as SVG: time left to right, one lane per row.

A marble diagram is reactive programming's picture of a stream: a horizontal
line per observable, a marble where a value came, a bar where it ended. This
module draws one from rxllm events (or from anything that was emitted at a
known time), with no dependency beyond the standard library, so it works in
a notebook, a test, a README image and a terminal without a browser::

    marbles(events)                  # one lane per kind: text, reasoning, tool_call #0, ...
    marbles(events, by="choice")     # one lane per choice
    marbles(events, by="stream")     # the classic single line
    MarbleDiagram([Lane("in", ...), Lane("out", ...)])   # any rows, e.g. an operator's in and out

In Jupyter a :class:`MarbleDiagram` shows itself (``_repr_svg_`` and
``_repr_html_``); hovering a marble shows its event (an SVG ``<title>``).

The SVG is deterministic (the same input gives the same bytes), well-formed
XML whatever the text holds (characters XML forbids are dropped, the rest
escaped), and self-contained (no script, no external reference).

Item shapes: an event is a circle coloured by its kind; a list of events (a
batch from :func:`operators.batch_flush`) is a rounded box with its count; a
terminal event also ends its lane: ``|`` for ``finished``, ``X`` for
``error``, a square for ``cancelled``. A dashed line marks the time to first
token.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, Literal

from pipeline.core.events import EventBase, is_content, is_terminal

__all__ = [
    "KIND_COLOURS",
    "Lane",
    "LaneEnd",
    "Marble",
    "MarbleDiagram",
    "marble_for",
    "marbles",
]

LaneEnd = Literal["completed", "error", "cancelled"]

KIND_COLOURS: dict[str, str] = {
    "started": "#8a8f98",
    "text": "#2f6fdf",
    "reasoning": "#8e5bd1",
    "refusal": "#d17a00",
    "tool_call.started": "#c99000",
    "tool_call.delta": "#e0a100",
    "tool_call.completed": "#2a9d4b",
    "tool_call.invalid": "#c62828",
    "usage": "#6b7280",
    "choice.finished": "#4b5563",
    "failover": "#e65100",
    "reasoning.signature": "#6d28d9",
    "citation": "#0f766e",
    "block.started": "#a16207",
    "block.delta": "#ca8a04",
    "stop_reason": "#4b5563",
    "finished": "#2a9d4b",
    "error": "#c62828",
    "cancelled": "#9ca3af",
    "batch": "#2f6fdf",
    "value": "#374151",
}
"""The fill of a marble per event ``type`` (and ``batch`` / ``value`` for other items)."""

# Characters XML 1.0 does not allow, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")

_LEFT = 118  # lane names: at least this, at most _LEFT_MAX
_LEFT_MAX = 230
_RIGHT = 24
_TOP = 30
_LANE = 38
_AXIS = 30
_RADIUS = 6
_CHAR = 6.0  # width of a label character at 10 px monospace
_LABEL_CHARS = 12


@dataclass(frozen=True)
class Marble:
    """One item on a lane: when it came (seconds), its kind, a short label, its hover text."""

    at: float
    kind: str
    label: str = ""
    detail: str = ""
    count: int | None = None  # a batch's size: drawn as a box


@dataclass(frozen=True)
class Lane:
    """A row of the diagram: its name, its marbles, and how and when it ended (if it did)."""

    name: str
    marbles: tuple[Marble, ...] = ()
    end: float | None = None
    end_kind: LaneEnd = "completed"

    @classmethod
    def of(
        cls,
        name: str,
        items: Iterable[tuple[float, Any]],
        *,
        end: float | None = None,
        end_kind: LaneEnd = "completed",
    ) -> Lane:
        """A lane from ``(time, item)`` pairs; each item drawn by :func:`marble_for`."""
        return cls(name, tuple(marble_for(item, at) for at, item in items), end, end_kind)


def _clean(text: str) -> str:
    return _NOT_XML.sub("", text)


def _short(text: str, limit: int = _LABEL_CHARS) -> str:
    text = text.replace("\n", "⏎").replace("\r", "").replace("\t", "→")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(event: EventBase) -> tuple[str, str]:
    """A short label and a one-line description of ``event``."""
    data = event.model_dump(exclude={"stream_id", "seq", "t", "choice", "type"}, mode="json")
    kind = getattr(event, "type", type(event).__name__)
    head = f"#{event.seq} {kind} at {event.t * 1000:.1f} ms"
    if event.choice:
        head += f" (choice {event.choice})"
    parts = [f"{key}={value!r}" for key, value in data.items() if value is not None]
    detail = head + ("\n" + "\n".join(parts) if parts else "")
    text = getattr(event, "text", None)
    if isinstance(text, str):
        label = repr(text)[1:-1]
    elif kind == "tool_call.started":
        label = str(getattr(event, "name", "") or "call")
    elif kind == "tool_call.delta":
        label = str(getattr(event, "arguments", ""))
    elif kind in ("tool_call.completed", "tool_call.invalid"):
        label = "✓" if kind == "tool_call.completed" else "✗"
    elif kind == "failover":
        label = f"→{getattr(event, 'to_upstream', '')}"
    elif kind in ("finished", "choice.finished"):
        label = str(getattr(event, "finish_reason", "") or "")
    elif kind == "error":
        label = str(getattr(event, "kind", ""))
    else:
        label = ""
    return label, detail


def marble_for(item: Any, at: float | None = None) -> Marble:
    """The marble of one emitted item at ``at`` seconds (an event's ``t`` if not given).

    An event gets its kind's colour; a list of events is a batch; anything
    else is a ``value`` labelled with its ``str``.
    """
    if isinstance(item, EventBase):
        label, detail = _describe(item)
        kind = str(getattr(item, "type", "value"))
        return Marble(item.t if at is None else at, kind, label, detail)
    if isinstance(item, list | tuple) and all(isinstance(x, EventBase) for x in item):
        events: Sequence[EventBase] = item
        lines = [_describe(e)[1].split("\n", 1)[0] for e in events]
        texts = "".join(str(getattr(e, "text", "")) for e in events)
        head = f"batch of {len(events)}" + (f" at {at * 1000:.1f} ms" if at is not None else "")
        detail = head + "\n" + "\n".join(lines)
        when = at if at is not None else (events[-1].t if events else 0.0)
        return Marble(when, "batch", repr(texts)[1:-1] if texts else "", detail, len(events))
    return Marble(0.0 if at is None else at, "value", str(item), str(item))


_STREAM_KINDS = frozenset(
    {"started", "usage", "choice.finished", "stop_reason", "finished", "error", "cancelled"}
)
_LANE_ORDER = ("stream", "failover", "reasoning", "text", "refusal", "citation", "tool_call")


def _lane_key(event: EventBase, by: str) -> str:
    """The lane of ``event``: the stream's own events, else one per kind (per call, per block)."""
    if by == "stream":
        return "events"
    if by == "choice":
        return f"choice {event.choice}"
    kind = str(getattr(event, "type", "value"))
    if kind in _STREAM_KINDS:
        return "stream"
    suffix = f" [{event.choice}]" if event.choice else ""
    family = kind.split(".", 1)[0]  # reasoning.signature goes with the reasoning
    if family in ("tool_call", "block"):
        return f"{family} #{getattr(event, 'index', 0)}{suffix}"
    return family + suffix


def _end_kind(event: EventBase) -> LaneEnd:
    kind = getattr(event, "type", "")
    return "error" if kind == "error" else "cancelled" if kind == "cancelled" else "completed"


def marbles(
    events: Iterable[EventBase],
    *,
    by: Literal["kind", "choice", "stream"] = "kind",
    title: str | None = None,
    width: int = 760,
) -> MarbleDiagram:
    """The marble diagram of ``events``, each at its ``t``.

    ``by="kind"``: a lane for the stream's own events (started, usage, the
    end), then one per kind of content (reasoning, text, refusal) and per
    tool call; ``by="choice"``: one lane per choice; ``by="stream"``: one lane.
    A terminal event ends every lane.

    Example::

        marbles(load_jsonl("answer.jsonl"), title="answer")   # shows itself in Jupyter

    Errors: ``ValueError`` for another ``by``.
    """
    if by not in ("kind", "choice", "stream"):
        raise ValueError(f"by must be 'kind', 'choice' or 'stream', not {by!r}")
    items = list(events)
    groups: dict[str, list[Marble]] = {}
    terminal: EventBase | None = None
    for event in items:
        groups.setdefault(_lane_key(event, by), []).append(marble_for(event))
        if is_terminal(event):
            terminal = event

    def order(name: str) -> tuple[int, str]:
        for i, prefix in enumerate(_LANE_ORDER):
            if name.startswith(prefix):
                return i, name
        return len(_LANE_ORDER), name

    end = terminal.t if terminal is not None else None
    end_kind = _end_kind(terminal) if terminal is not None else "completed"
    names = sorted(groups, key=order) if by == "kind" else list(groups)
    lanes = [Lane(name, tuple(groups[name]), end, end_kind) for name in names]
    ttft = next((e.t for e in items if is_content(e)), None)
    return MarbleDiagram(lanes, title=title, ttft=ttft, width=width)


@dataclass(frozen=True)
class MarbleDiagram:
    """Lanes drawn on one time axis; shows itself in Jupyter; :meth:`to_svg` for the markup.

    ``ttft`` (seconds) draws the time-to-first-token line; ``duration``
    fixes the axis' end (default: the latest time drawn).
    """

    lanes: Sequence[Lane]
    title: str | None = None
    ttft: float | None = None
    width: int = 760
    duration: float | None = None
    _cache: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def _repr_svg_(self) -> str:
        return self.to_svg()

    def _repr_html_(self) -> str:
        return f'<div class="rxllm-marbles">{self.to_svg()}</div>'

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the SVG to ``path``; return it."""
        target = Path(path)
        target.write_text(self.to_svg(), encoding="utf-8")
        return target

    def to_svg(self) -> str:
        """The diagram as one SVG document (a string)."""
        cached = self._cache.get("svg")
        if cached is None:
            cached = self._cache["svg"] = _render(self)
        return cached


def _nice_step(span: float, target: int = 6) -> float:
    raw = span / target
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def _format_time(t: float, span: float) -> str:
    if span < 2:
        return f"{t * 1000:.0f} ms"
    return f"{t:.1f} s" if span < 20 else f"{t:.0f} s"


def _attr(text: str) -> str:
    return escape(_clean(text), quote=True)


def _render(diagram: MarbleDiagram) -> str:
    lanes = list(diagram.lanes)
    times = [m.at for lane in lanes for m in lane.marbles]
    times += [lane.end for lane in lanes if lane.end is not None]
    span = diagram.duration or max([*times, diagram.ttft or 0.0, 0.0])
    span = span if span > 0 else 0.001
    longest = max((len(lane.name) for lane in lanes), default=0)
    left = int(min(max(_LEFT, 18 + _CHAR * longest), _LEFT_MAX))
    name_chars = int((left - 18) / _CHAR)
    width = max(diagram.width, left + _RIGHT + 100)
    plot = width - left - _RIGHT
    top = _TOP if diagram.title or diagram.ttft is not None else 12
    height = top + _LANE * max(len(lanes), 1) + _AXIS

    def x(t: float) -> float:
        return round(left + min(max(t, 0.0), span) / span * plot, 1)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="ui-monospace, Menlo, monospace" '
        'font-size="10" class="rxllm-marbles">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    if diagram.title:
        out.append(
            f'<text x="8" y="18" font-size="12" font-weight="bold" fill="#111827">'
            f"{_attr(diagram.title)}</text>"
        )
    # Time axis with ticks and a light grid.
    axis_y = top + _LANE * max(len(lanes), 1) + 4
    step = _nice_step(span)
    tick = 0.0
    while tick <= span + step * 1e-9:
        tx = x(tick)
        out.append(
            f'<line x1="{tx}" y1="{top}" x2="{tx}" y2="{axis_y}" stroke="#eef0f3"/>'
            f'<text x="{tx}" y="{axis_y + 14}" text-anchor="middle" fill="#6b7280">'
            f"{_format_time(tick, span)}</text>"
        )
        tick += step
    out.append(
        f'<line x1="{left}" y1="{axis_y}" x2="{left + plot}" y2="{axis_y}" stroke="#9ca3af"/>'
    )
    if diagram.ttft is not None:
        tx = x(diagram.ttft)
        out.append(
            f'<g class="ttft"><title>time to first token {diagram.ttft * 1000:.1f} ms</title>'
            f'<line x1="{tx}" y1="{top - 4}" x2="{tx}" y2="{axis_y}" stroke="#2f6fdf" '
            'stroke-dasharray="4 3"/>'
            f'<text x="{tx + 4}" y="{top - 6}" fill="#2f6fdf">TTFT '
            f"{diagram.ttft * 1000:.0f} ms</text></g>"
        )
    for row, lane in enumerate(lanes):
        y = top + _LANE * row + _LANE // 2 + 4
        out.append(f'<g class="lane" data-lane="{_attr(lane.name)}">')
        name = _attr(_short(lane.name, name_chars))
        out.append(f'<text x="8" y="{y + 3}" fill="#374151">{name}</text>')
        line_end = x(lane.end) if lane.end is not None else left + plot
        out.append(
            f'<line x1="{left}" y1="{y}" x2="{line_end}" y2="{y}" stroke="#9ca3af" '
            'stroke-width="1.5"/>'
        )
        label_end = -math.inf  # labels that would overlap the one before are left to the hover
        for marble in lane.marbles:
            markup, label_end = _marble(marble, x(marble.at), y, label_end, width - 2)
            out.append(markup)
        if lane.end is not None:
            out.append(_lane_end(lane.end_kind, x(lane.end), y))
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def _marble(marble: Marble, mx: float, y: int, label_end: float, edge: float) -> tuple[str, float]:
    """A marble's markup, and where its label ends (``label_end`` if it has none).

    The label starts at the marble, is cut to end before ``edge`` (the
    picture's right side), and is left out where it would overlap the one before.
    """
    colour = KIND_COLOURS.get(marble.kind, KIND_COLOURS["value"])
    parts = [
        f'<g class="marble" data-kind="{_attr(marble.kind)}" data-at="{marble.at:.6f}">',
        f"<title>{_attr(marble.detail or marble.label)}</title>",
    ]
    if marble.count is not None:
        half = 8 + 3 * len(str(marble.count))
        parts.append(
            f'<rect x="{mx - half / 2:.1f}" y="{y - 9}" width="{half}" height="18" rx="5" '
            f'fill="{colour}" stroke="#ffffff"/>'
            f'<text x="{mx:.1f}" y="{y + 3.5}" text-anchor="middle" fill="#ffffff">'
            f"{marble.count}</text>"
        )
    else:
        parts.append(
            f'<circle cx="{mx:.1f}" cy="{y}" r="{_RADIUS}" fill="{colour}" stroke="#ffffff" '
            'stroke-width="1"/>'
        )
    room = int((edge - (mx - 3)) / _CHAR)
    if marble.label and mx - _CHAR * 0.5 >= label_end and room >= 2:
        label = _short(marble.label, min(_LABEL_CHARS, room))
        parts.append(
            f'<text x="{mx - 3:.1f}" y="{y - 10}" fill="#111827" xml:space="preserve">'
            f"{_attr(label)}</text>"
        )
        label_end = mx + _CHAR * len(label) + 4
    parts.append("</g>")
    return "".join(parts), label_end


def _lane_end(kind: LaneEnd, ex: float, y: int) -> str:
    if kind == "error":
        return (
            f'<path class="end" d="M{ex - 5} {y - 5} L{ex + 5} {y + 5} M{ex - 5} {y + 5} '
            f'L{ex + 5} {y - 5}" stroke="#c62828" stroke-width="2.5"/>'
        )
    if kind == "cancelled":
        return (
            f'<rect class="end" x="{ex - 5}" y="{y - 5}" width="10" height="10" '
            'fill="none" stroke="#6b7280" stroke-width="2"/>'
        )
    return (
        f'<line class="end" x1="{ex}" y1="{y - 9}" x2="{ex}" y2="{y + 9}" stroke="#111827" '
        'stroke-width="2.5"/>'
    )
