"""Every real recorded stream in ../shared/streams assembles to its expected result.

The recordings live outside the repository; where the folder is absent these
tests are skipped and the project's own fixtures (tests/test_extract_deltas.py)
still cover every quirk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.events import EventBase, is_terminal
from pipeline.core.result import Accumulator, Result
from pipeline.runtime.sources import sse_body
from pipeline.runtime.standard_chain import llm_stream

STREAMS = Path(__file__).resolve().parents[2] / "shared" / "streams"
FILES = sorted(STREAMS.glob("*.sse")) if STREAMS.is_dir() else []


def run(path: Path) -> tuple[Result, list[EventBase]]:
    acc = Accumulator()
    events: list[EventBase] = []

    def on_next(event: EventBase) -> None:
        events.append(event)
        acc.add(event)

    llm_stream(sse_body(path)).subscribe(on_next)
    return acc.result(), events


def expected_chat(expected: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for c in expected["choices"]:
        out.append(
            {
                "index": c["index"],
                "content": c["content"],
                "refusal": c.get("refusal"),
                "reasoning": c.get("reasoning"),
                "tool_calls": [
                    {"id": tc["id"], "name": tc["name"], "arguments": tc["arguments"]}
                    for tc in c["tool_calls"]
                ],
                "finish_reason": c["finish_reason"],
            }
        )
    return out


def expected_responses(expected: dict[str, Any]) -> list[dict[str, Any]]:
    items = expected["output_items"]
    texts = [i["text"] for i in items if i["type"] == "message"]
    summaries = [i.get("summary_text") or "" for i in items if i["type"] == "reasoning"]
    calls = [
        {"id": i["call_id"], "name": i["name"], "arguments": i["arguments"]}
        for i in items
        if i["type"] == "function_call"
    ]
    return [
        {
            "index": 0,
            "content": "".join(texts) if texts else None,
            "refusal": None,
            "reasoning": "".join(summaries) or None,
            "tool_calls": calls,
            "finish_reason": "tool_calls" if calls else "stop",
        }
    ]


@pytest.mark.skipif(not FILES, reason="../shared/streams is absent")
@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_recorded_stream_assembles_to_expected(path: Path) -> None:
    meta = json.loads(path.with_suffix(".json").read_text())
    expected = meta["expected"]
    result, events = run(path)
    assembled = result.assembled()

    if meta["api"].endswith("responses"):
        assert assembled["choices"] == expected_responses(expected)
    else:
        assert assembled["choices"] == expected_chat(expected)
    assert assembled["usage"] == expected["usage"]

    errors = expected.get("errors") or []
    if errors:
        assert result.status == "error"
        assert assembled["error"] is not None
        assert assembled["error"]["message"] == errors[-1]["error"]["message"]
        assert assembled["error"]["kind"] == "upstream"
    else:
        assert result.status == "finished", assembled["error"]

    # Sequence numbers rise by one from 0; exactly one terminal event, last.
    assert [e.seq for e in events] == list(range(len(events)))
    assert [is_terminal(e) for e in events].count(True) == 1
    assert is_terminal(events[-1])
    for event in events:
        if event.type == "tool_call.completed":  # type: ignore[attr-defined]
            assert event.parsed == json.loads(event.arguments)  # type: ignore[attr-defined]


def test_streams_folder_found_when_present() -> None:
    """Guards against a wrong path silently skipping the conformance tests."""
    sibling = Path(__file__).resolve().parents[2] / "shared"
    if sibling.is_dir():
        assert FILES, f"{sibling} exists but no recording was found in it"
