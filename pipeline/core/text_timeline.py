"""A stream's timeline as compact text, for a terminal: TTFT, gaps, a strip, runs of events.

::

    stream 3f2a9c01  mock-model  finished (stop)  28 events in 0.660 s
    TTFT 153 ms · 24 content events · 44.0/s · gaps p50 20 ms · p95 21 ms · max 210 ms at 0.570 s
    0 ms [s   ▂▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄       ▂▄▄▄▄▄|] 660 ms
        t ms    gap  seq  event
         0.0           0  started          mock-model
       153.2  153.2    1  text x12         'Streaming sends each token as soo…'
       570.0  210.0   13  text x11   ◀ gap 'd appear after a fraction of a se…'
       660.0     ...

Consecutive events of one kind are one line (a *run*), ended by another kind
or by a gap longer than ``gap_factor`` times the median gap (and at least
``min_gap`` seconds): that gap is flagged. The strip has one column per
slice of time: the density of content events in it, ``s`` where the stream
started, ``F`` at a failover, and the end: ``|`` finished, ``X`` error,
``C`` cancelled.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.core.events import EventBase, is_content, is_terminal
from pipeline.core.stream_timing import stream_timing

__all__ = ["text_timeline"]

_LEVELS = " ▁▂▃▄▅▆▇█"
_END_MARK = {"finished": "|", "error": "X", "cancelled": "C"}


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # C0, C1, line separators


def _one_line(text: str) -> str:
    """``text`` on one line: a line break shows as ``⏎``, other control characters go."""
    text = text.replace("\r\n", "⏎").replace("\n", "⏎").replace("\r", "⏎")
    return _CONTROL.sub("", text)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _kind(event: EventBase) -> str:
    kind = str(getattr(event, "type", type(event).__name__))
    if kind.startswith("tool_call."):
        return f"{kind} #{getattr(event, 'index', 0)}"
    return kind


def _note(event: EventBase) -> str:
    kind = str(getattr(event, "type", ""))
    if kind == "started":
        return str(getattr(event, "model", "") or "")
    if kind == "tool_call.started":
        return str(getattr(event, "name", "") or "")
    if kind == "tool_call.completed":
        return str(getattr(event, "arguments", ""))
    if kind == "tool_call.invalid":
        return str(getattr(event, "error", ""))
    if kind == "failover":
        e = event
        return f"{getattr(e, 'from_upstream', '')} → {getattr(e, 'to_upstream', '')}: " + str(
            getattr(e, "reason", "")
        )
    if kind in ("finished", "choice.finished"):
        return str(getattr(event, "finish_reason", "") or "")
    if kind == "error":
        return f"{getattr(event, 'kind', '')}: {getattr(event, 'message', '')}"
    if kind == "cancelled":
        return str(getattr(event, "reason", ""))
    if kind == "usage":
        usage = getattr(event, "usage", {}) or {}
        return " ".join(f"{k}={v}" for k, v in usage.items() if isinstance(v, int | float))
    return ""


def _piece(event: EventBase) -> str:
    text = getattr(event, "text", None)
    if isinstance(text, str):
        return text
    arguments = getattr(event, "arguments", None)
    if getattr(event, "type", "") == "tool_call.delta" and isinstance(arguments, str):
        return arguments
    return ""


@dataclass
class _Run:
    kind: str
    start: float
    end: float
    seq: int
    gap: float | None
    flagged: bool
    count: int
    pieces: list[str]
    note: str


def _quote(text: str, width: int) -> str:
    shown = repr(text)
    return shown if len(shown) <= width else shown[: width - 2] + "…" + shown[0]


def text_timeline(
    events: Iterable[EventBase],
    *,
    width: int = 72,
    gap_factor: float = 4.0,
    min_gap: float = 0.05,
) -> str:
    """The timeline of ``events`` as lines of text (ending with a newline).

    Example::

        print(text_timeline(load_jsonl("answer.jsonl")))
    """
    items = list(events)
    timing = stream_timing(items)
    lines: list[str] = []
    if not items:
        return "no events\n"
    first = items[0]
    started = next((e for e in items if getattr(e, "type", "") == "started"), None)
    terminal = next((e for e in reversed(items) if is_terminal(e)), None)
    model = getattr(started, "model", None) or "?"
    end = "no terminal event"
    if terminal is not None:
        end = str(getattr(terminal, "type", ""))
        reason = getattr(terminal, "finish_reason", None) or getattr(terminal, "kind", None)
        if reason:
            end += f" ({reason})"
    duration = timing.duration or 0.0
    head = f"stream {first.stream_id[:12]}  {model}  {end}"
    lines.append(f"{_one_line(head)}  {len(items)} events in {duration:.3f} s")
    gaps = timing.gaps
    largest = timing.largest_gap()
    rate = timing.tokens_per_second
    summary = [f"TTFT {_ms(timing.ttft)}", f"{len(timing.content_times)} content events"]
    if rate is not None:
        summary.append(f"{rate:.1f}/s")
    if gaps:
        summary.append(
            f"gaps p50 {_ms(timing.gap_quantile(0.5))} · p95 {_ms(timing.gap_quantile(0.95))}"
        )
    if largest is not None:
        summary.append(f"max {_ms(largest[0])} at {largest[1]:.3f} s")
    lines.append(" · ".join(summary))
    lines.append(_strip(items, duration, max(width - 20, 10)))

    threshold = max(min_gap, gap_factor * statistics.median(gaps)) if gaps else min_gap
    runs: list[_Run] = []
    previous_content: float | None = None
    for event in items:
        kind = _kind(event)
        content = is_content(event)
        gap = None
        if content:  # since the content event before, or the stream's start for the first
            gap = event.t - (0.0 if previous_content is None else previous_content)
        flagged = gap is not None and previous_content is not None and gap > threshold
        if content:
            previous_content = event.t
        last = runs[-1] if runs else None
        if last is not None and content and last.kind == kind and not flagged:
            last.end = event.t
            last.count += 1
            last.pieces.append(_piece(event))
            continue
        runs.append(
            _Run(kind, event.t, event.t, event.seq, gap, flagged, 1, [_piece(event)], _note(event))
        )
    lines.append(f"{'t ms':>9} {'gap':>7} {'seq':>4}  event")
    for run in runs:
        label = run.kind + (f" x{run.count}" if run.count > 1 else "")
        text = "".join(run.pieces)
        note = _quote(text, max(width - 44, 12)) if text else _one_line(run.note)
        flag = "◀ gap " if run.flagged else ""
        shown = "" if run.gap is None else f"{run.gap * 1000:.1f}"
        lines.append(
            f"{run.start * 1000:9.1f} {shown:>7} {run.seq:>4}  {label:<22} {flag}{note}".rstrip()
        )
    return "\n".join(lines) + "\n"


def _strip(items: list[EventBase], duration: float, columns: int) -> str:
    """One character per slice of time: content density, s, F and the end."""
    span = duration if duration > 0 else 1e-3
    counts = [0] * columns
    marks: dict[int, str] = {}

    def column(t: float) -> int:
        return min(columns - 1, max(0, int(t / span * columns)))

    for event in items:
        kind = str(getattr(event, "type", ""))
        if is_content(event):
            counts[column(event.t)] += 1
        elif kind == "started":
            marks.setdefault(column(event.t), "s")
        elif kind == "failover":
            marks[column(event.t)] = "F"
        elif kind in _END_MARK:
            marks[column(event.t)] = _END_MARK[kind]
    peak = max(counts) or 1
    cells = []
    for i, count in enumerate(counts):
        if i in marks:
            cells.append(marks[i])
        elif count:
            cells.append(_LEVELS[max(1, round(count / peak * (len(_LEVELS) - 1)))])
        else:
            cells.append(" ")
    return f"{'0 ms':>6} [{''.join(cells)}] {_ms(duration)}"
