"""Marble diagrams: the SVG of a stream, of an operator's input and output, live in a notebook."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators import assemble_tool_calls, batch_flush
from pipeline.core.events import (
    Cancelled,
    ChoiceFinished,
    Event,
    Failover,
    Finished,
    ReasoningDelta,
    Started,
    StreamError,
    TextDelta,
    ToolCallDelta,
    ToolCallStarted,
    UsageReport,
)
from pipeline.core.marbles import Lane, MarbleDiagram, marble_for, marbles
from pipeline.core.recording import Recording, load_ipython_extension
from pipeline.runtime.operator_marbles import operator_marbles
from pipeline.runtime.replay import load_jsonl, replay, save_jsonl
from sinks.live_marbles import LiveMarbles

SVG = "{http://www.w3.org/2000/svg}"


def stream(words: list[str], *, start: float = 0.2, gap: float = 0.02) -> list[Event]:
    events: list[Event] = [Started(stream_id="s", seq=0, t=0.0, model="m")]
    t = start
    for word in words:
        events.append(TextDelta(stream_id="s", seq=len(events), t=t, text=word))
        t += gap
    events.append(ChoiceFinished(stream_id="s", seq=len(events), t=t, finish_reason="stop"))
    events.append(Finished(stream_id="s", seq=len(events), t=t, finish_reason="stop"))
    return events


def tool_stream() -> list[Event]:
    """Reasoning, then two tool calls' fragments, before assembly (no partial, no completed)."""
    events: list[Event] = [Started(stream_id="s", seq=0, t=0.0)]

    def add(cls: Any, t: float, **fields: Any) -> None:
        events.append(cls(stream_id="s", seq=len(events), t=t, **fields))

    add(ReasoningDelta, 0.05, text="Let me see")
    add(ToolCallStarted, 0.10, index=0, id="a", name="get_weather")
    add(ToolCallStarted, 0.11, index=1, id="b", name="get_time")
    for i, (index, fragment) in enumerate(
        [(0, '{"city": '), (1, '{"tz": "Eu'), (0, '"Paris"}'), (1, 'rope/Paris"}')]
    ):
        add(ToolCallDelta, 0.12 + 0.01 * i, index=index, arguments=fragment)
    add(ChoiceFinished, 0.20, finish_reason="tool_calls")
    add(UsageReport, 0.20, usage={"total_tokens": 12})
    add(Finished, 0.20, finish_reason="tool_calls")
    return events


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def marbles_of(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == "marble"]


def lanes_of(root: ET.Element) -> dict[str, list[ET.Element]]:
    return {
        str(g.get("data-lane")): marbles_of(g)
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "lane"
    }


def test_one_marble_per_event_and_one_lane_per_kind() -> None:
    events = tool_stream()
    root = parse(marbles(events).to_svg())
    assert len(marbles_of(root)) == len(events)
    lanes = lanes_of(root)
    assert list(lanes) == ["stream", "reasoning", "tool_call #0", "tool_call #1"]
    assert [m.get("data-kind") for m in lanes["tool_call #1"]] == [
        "tool_call.started",
        "tool_call.delta",
        "tool_call.delta",
    ]
    assert [m.get("data-kind") for m in lanes["stream"]] == [
        "started",
        "choice.finished",
        "usage",
        "finished",
    ]
    # Hovering shows the event: its seq, kind, time and fields.
    title = lanes["tool_call #0"][1].find(f"{SVG}title")
    assert title is not None and title.text is not None
    assert title.text.startswith("#4 tool_call.delta at 120.0 ms")
    assert "arguments='{\"city\": '" in title.text


def test_marbles_sit_at_their_time_and_every_lane_ends_at_the_terminal_event() -> None:
    events = stream(["a", "b", "c"], start=0.5, gap=0.25)  # ends at 1.25 s
    diagram = marbles(events, width=760)
    root = parse(diagram.to_svg())
    xs = [float(m.get("data-at", "nan")) for m in marbles_of(root)]
    assert sorted(xs) == sorted(e.t for e in events)
    circles = [m.find(f"{SVG}circle") for m in lanes_of(root)["text"]]
    cx = [float(c.get("cx", "nan")) for c in circles if c is not None]
    assert cx[1] - cx[0] == pytest.approx(cx[2] - cx[1], abs=0.2)  # equal gaps, equal spacing
    ends = [e for e in root.iter() if e.get("class") == "end"]
    assert len(ends) == len(diagram.lanes) == 2  # stream and text
    ttft = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "ttft")
    assert "TTFT 500 ms" in "".join(ttft.itertext())


@pytest.mark.parametrize(
    ("terminal", "shape"),
    [
        (Finished(stream_id="s", seq=2, t=0.3), "line"),
        (StreamError(stream_id="s", seq=2, t=0.3, kind="timeout", message="idle"), "path"),
        (Cancelled(stream_id="s", seq=2, t=0.3, reason="client gone"), "rect"),
    ],
)
def test_the_end_of_a_lane_says_how_the_stream_ended(terminal: Event, shape: str) -> None:
    events: list[Event] = [
        Started(stream_id="s", seq=0),
        TextDelta(stream_id="s", seq=1, t=0.1, text="hi"),
        terminal,
    ]
    root = parse(marbles(events).to_svg())
    ends = [e for e in root.iter() if e.get("class") == "end"]
    assert ends and {e.tag for e in ends} == {f"{SVG}{shape}"}


def test_lanes_per_choice_and_a_single_lane() -> None:
    events: list[Event] = [Started(stream_id="s", seq=0)]
    for i in range(6):
        events.append(TextDelta(stream_id="s", seq=i + 1, t=0.1 * i, text=str(i), choice=i % 2))
    events.append(Finished(stream_id="s", seq=7, t=0.6))
    assert list(lanes_of(parse(marbles(events, by="choice").to_svg()))) == ["choice 0", "choice 1"]
    single = lanes_of(parse(marbles(events, by="stream").to_svg()))
    assert list(single) == ["events"] and len(single["events"]) == len(events)
    with pytest.raises(ValueError, match="by must be"):
        marbles(events, by="colour")  # type: ignore[arg-type]


def test_a_failover_has_its_own_lane() -> None:
    events: list[Event] = [
        Started(stream_id="s", seq=0),
        Failover(
            stream_id="s", seq=1, t=0.05, from_upstream="a", to_upstream="b", attempt=2, reason="x"
        ),
        TextDelta(stream_id="s", seq=2, t=0.2, text="hi"),
        Finished(stream_id="s", seq=3, t=0.2),
    ]
    lanes = lanes_of(parse(marbles(events).to_svg()))
    assert [m.get("data-kind") for m in lanes["failover"]] == ["failover"]


@given(st.text(max_size=40))
def test_any_text_makes_well_formed_svg_with_no_markup_of_its_own(text: str) -> None:
    events: list[Event] = [
        Started(stream_id="s", seq=0, model=text),
        TextDelta(stream_id="s", seq=1, t=0.1, text=text),
        StreamError(stream_id="s", seq=2, t=0.2, kind="upstream", message=text),
    ]
    svg = marbles(events, title=text).to_svg()
    root = parse(svg)
    assert {e.tag for e in root.iter()} <= {
        f"{SVG}{tag}" for tag in ("svg", "rect", "text", "line", "g", "title", "circle", "path")
    }
    assert len(marbles_of(root)) == 3


def test_the_same_events_draw_the_same_bytes(tmp_path: Path) -> None:
    events = tool_stream()
    svg = marbles(events, title="t").to_svg()
    assert marbles(list(events), title="t").to_svg() == svg
    saved = marbles(events, title="t").save(tmp_path / "d.svg")
    assert saved.read_text(encoding="utf-8") == svg


def test_a_recording_and_a_stored_list_show_themselves(tmp_path: Path) -> None:
    events = stream(["Hello", " world"])
    path = tmp_path / "r.jsonl"
    save_jsonl(events, path)
    recording = load_jsonl(path)
    assert isinstance(recording, Recording) and recording == events
    html = recording._repr_html_()
    assert html is not None and "<svg" in html
    assert len(marbles_of(parse(recording._repr_svg_() or ""))) == len(events)
    assert Recording()._repr_html_() is None  # nothing to draw: IPython shows the list
    assert recording.timing().ttft == pytest.approx(0.2)
    assert "TTFT 200 ms" in recording.timeline()


def test_the_ipython_extension_shows_any_list_of_events() -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        load_ipython_extension(shell)
        formatter = shell.display_formatter
        assert formatter is not None
        formatted, _ = formatter.format(stream(["a", "b"]))  # type: ignore[no-untyped-call]
        assert "<svg" in formatted["text/html"]
        formatted, _ = formatter.format([1, 2])  # type: ignore[no-untyped-call]
        assert "text/html" not in formatted
    finally:
        InteractiveShell.clear_instance()


def test_batch_flush_coalescing_shown_as_input_and_output_lanes() -> None:
    events = stream([f"w{i} " for i in range(8)], start=0.1, gap=0.012)
    diagram = operator_marbles(events, batch_flush(0.05))
    assert [lane.name for lane in diagram.lanes] == ["input", "batch_flush"]
    source, batches = diagram.lanes
    assert [m.at for m in source.marbles] == pytest.approx([e.t for e in events])
    assert all(m.kind == "batch" for m in batches.marbles)
    counts = [m.count for m in batches.marbles]
    assert sum(c or 0 for c in counts) == len(events)  # nothing dropped
    # started and the first token at once; then batches, one per 50 ms at most.
    assert counts[:2] == [1, 1] and [m.at for m in batches.marbles][:2] == pytest.approx([0, 0.1])
    assert len(batches.marbles) < len(events)
    assert batches.end == pytest.approx(events[-1].t)
    root = parse(diagram.to_svg())
    boxes = lanes_of(root)["batch_flush"]
    assert [b.find(f"{SVG}rect") is not None for b in boxes] == [True] * len(counts)
    title = boxes[2].find(f"{SVG}title")
    assert title is not None and (title.text or "").startswith(f"batch of {counts[2]}")


def test_assemble_tool_calls_shown_inserting_completed() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": schema}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
    ]
    diagram = operator_marbles(tool_stream(), assemble_tool_calls(tools), title="assembly")
    assert [lane.name for lane in diagram.lanes] == ["input", "assemble_tool_calls"]
    before = [m.kind for m in diagram.lanes[0].marbles]
    after = [m.kind for m in diagram.lanes[1].marbles]
    assert "tool_call.completed" not in before
    assert after.count("tool_call.completed") == 2
    assert after.index("tool_call.completed") < after.index("choice.finished")
    completed = [m for m in diagram.lanes[1].marbles if m.kind == "tool_call.completed"]
    assert "parsed={'city': 'Paris'}" in completed[0].detail


def test_an_operator_error_ends_its_lane_with_an_x() -> None:
    from reactivex import operators as ops

    def boom(event: Event) -> Event:
        if isinstance(event, TextDelta) and event.text == "b":
            raise RuntimeError("boom")
        return event

    diagram = operator_marbles(stream(["a", "b", "c"]), ops.map(boom), names=["in", "map"])
    assert diagram.lanes[1].end_kind == "error"
    assert [m.kind for m in diagram.lanes[1].marbles] == ["started", "text"]
    with pytest.raises(ValueError, match="names needs 2 labels"):
        operator_marbles(stream(["a"]), ops.map(boom), names=["one"])


def test_any_item_gets_a_marble() -> None:
    assert marble_for("x", 1.5).kind == "value" and marble_for("x", 1.5).at == 1.5
    lane = Lane.of("values", [(0.1, 1), (0.2, [TextDelta(stream_id="s", seq=0, text="a")])])
    assert [m.kind for m in lane.marbles] == ["value", "batch"]
    root = parse(MarbleDiagram([lane]).to_svg())
    assert len(marbles_of(root)) == 2


def test_live_marbles_collects_and_redraws_in_stream_time() -> None:
    events = stream([f"w{i}" for i in range(30)], start=0.1, gap=0.01)  # 0.1 .. 0.39 s
    view = LiveMarbles(every=0.05, display=False)
    replay(events, speed=None).subscribe(view)
    assert list(view.events) == events
    # one redraw for the first event, then one per 50 ms of stream time, one at the
    # terminal event and one at completion: far fewer than one per event.
    assert 4 <= view.updates <= 12
    assert len(marbles_of(parse(view.diagram().to_svg()))) == len(events)
    assert "<svg" in view._repr_html_()


def test_event_json_in_a_title_is_readable() -> None:
    event = TextDelta(stream_id="s", seq=3, t=0.25, text='say "hi" & <bye>')
    marble = marble_for(event)
    assert marble.detail.startswith("#3 text at 250.0 ms")
    assert 'say "hi" & <bye>' in marble.detail  # escaped in the SVG, not in the text
    svg = MarbleDiagram([Lane("l", (marble,))]).to_svg()
    assert "&lt;bye&gt;" in svg and "<bye>" not in svg


def test_provider_block_events_get_lanes_of_their_own() -> None:
    from pipeline.core.events import (
        BlockDelta,
        BlockStarted,
        Citation,
        ReasoningSignature,
        StopReason,
    )

    events: list[Event] = [
        Started(stream_id="s", seq=0),
        ReasoningDelta(stream_id="s", seq=1, t=0.1, text="hmm"),
        ReasoningSignature(stream_id="s", seq=2, t=0.15, signature="sig"),
        BlockStarted(stream_id="s", seq=3, t=0.2, index=1, kind="server_tool_use"),
        BlockDelta(stream_id="s", seq=4, t=0.25, index=1, delta={"partial_json": "{}"}),
        TextDelta(stream_id="s", seq=5, t=0.3, text="see"),
        Citation(stream_id="s", seq=6, t=0.3, index=2, citation={"url": "u"}),
        StopReason(stream_id="s", seq=7, t=0.4, reason="end_turn"),
        Finished(stream_id="s", seq=8, t=0.4),
    ]
    lanes = lanes_of(parse(marbles(events).to_svg()))
    assert list(lanes) == ["stream", "reasoning", "text", "citation", "block #1"]
    assert [m.get("data-kind") for m in lanes["reasoning"]] == ["reasoning", "reasoning.signature"]
    assert [m.get("data-kind") for m in lanes["stream"]] == ["started", "stop_reason", "finished"]
