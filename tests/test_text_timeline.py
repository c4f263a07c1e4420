"""The text timeline and the timing it reports; ``rxllm replay FILE --timeline``."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pipeline.core.events import (
    Cancelled,
    Event,
    Failover,
    Finished,
    ReasoningDelta,
    Started,
    StreamError,
    TextDelta,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallStarted,
    UsageReport,
)
from pipeline.core.stream_timing import stream_timing
from pipeline.core.text_timeline import text_timeline
from pipeline.runtime.replay import save_jsonl
from sinks.store import Store, StoreSettings
from sinks.store.recordings import import_recording
from tests.fixtures import TEXT_STREAM
from tests.test_replay_cli import rxllm


def with_a_stall() -> list[Event]:
    """TTFT 150 ms, ten tokens 20 ms apart, a 400 ms stall, five more, a tool call."""
    events: list[Event] = [Started(stream_id="abc123", seq=0, t=0.0, model="mock-model")]

    def add(event_type: Any, t: float, **fields: Any) -> None:
        events.append(event_type(stream_id="abc123", seq=len(events), t=t, **fields))

    add(Failover, 0.05, from_upstream="a", to_upstream="b", attempt=2, reason="HTTP 429")
    t = 0.15
    for i in range(10):
        add(TextDelta, round(t, 3), text=f"w{i} ")
        t += 0.02
    t += 0.38  # the stall: 400 ms since the last token
    for i in range(10, 15):
        add(TextDelta, round(t, 3), text=f"w{i} ")
        t += 0.02
    add(ToolCallStarted, round(t, 3), index=0, name="get_time")
    add(ToolCallDelta, round(t + 0.01, 3), index=0, arguments='{"tz": ')
    add(ToolCallDelta, round(t + 0.02, 3), index=0, arguments='"UTC"}')
    add(ToolCallCompleted, round(t + 0.02, 3), index=0, name="get_time", arguments='{"tz": "UTC"}')
    add(Finished, round(t + 0.02, 3), finish_reason="tool_calls")
    return events


def test_timing() -> None:
    timing = stream_timing(with_a_stall())
    assert timing.ttft == pytest.approx(0.15)
    assert len(timing.content_times) == 18  # 15 words, the call's start and 2 fragments
    assert timing.largest_gap() == pytest.approx((0.4, 0.73))
    assert timing.gap_quantile(0.5) == pytest.approx(0.02)
    assert timing.tokens_per_second == pytest.approx(17 / (0.85 - 0.15))
    rates = timing.rate_over_time(buckets=4)
    assert len(rates) == 4 and sum(r * (0.85 / 4) for _, r in rates) == pytest.approx(18)
    empty = stream_timing([])
    assert (empty.ttft, empty.gaps, empty.tokens_per_second, empty.largest_gap()) == (
        None,
        (),
        None,
        None,
    )


def test_the_timeline_says_ttft_flags_the_stall_and_groups_runs() -> None:
    lines = text_timeline(with_a_stall()).splitlines()
    assert lines[0] == "stream abc123  mock-model  finished (tool_calls)  22 events in 0.850 s"
    assert lines[1].startswith("TTFT 150 ms · 18 content events · 24.3/s · gaps p50 20 ms")
    assert lines[1].endswith("max 400 ms at 0.730 s")
    strip = lines[2]
    assert strip.startswith("  0 ms [s") and strip.endswith("|] 850 ms")
    assert lines[3].split() == ["t", "ms", "gap", "seq", "event"]
    body = lines[4:]
    rows = [re.match(r"\s*[\d.]+\s+(?:[\d.]+\s+)?(\d+)\s+(\S+)", line) for line in body]
    assert [(int(m[1]), m[2]) for m in rows if m] == [
        (0, "started"),
        (1, "failover"),
        (2, "text"),
        (12, "text"),
        (17, "tool_call.started"),
        (18, "tool_call.delta"),
        (20, "tool_call.completed"),
        (21, "finished"),
    ]
    text_runs = [line for line in body if " text x" in line]
    assert len(text_runs) == 2
    assert "text x10" in text_runs[0] and "◀ gap" not in text_runs[0]
    assert "text x5" in text_runs[1] and "◀ gap" in text_runs[1]
    assert "400.0" in text_runs[1]  # the gap before the run
    assert "'w10 w11 w12 w13 w14 '" in text_runs[1]
    assert any("a → b: HTTP 429" in line for line in body)
    assert body[-1].split()[-2:] == ["finished", "tool_calls"]


def test_an_error_and_no_events() -> None:
    events: list[Event] = [
        Started(stream_id="s", seq=0),
        StreamError(stream_id="s", seq=1, t=0.5, kind="timeout", message="no first token in 0.5 s"),
    ]
    out = text_timeline(events)
    assert "error (timeout)" in out and "TTFT -" in out and "X]" in out
    assert "timeout: no first token in 0.5 s" in out
    assert text_timeline([]) == "no events\n"


@pytest.mark.slow  # starts the CLI in a subprocess
def test_replay_timeline_prints_at_once(tmp_path: Path) -> None:
    events = with_a_stall()
    save_jsonl([e.model_copy(update={"t": e.t * 20}) for e in events], tmp_path / "slow.jsonl")
    started = time.monotonic()
    result = rxllm("replay", "slow.jsonl", "--timeline", cwd=tmp_path)  # 17 s at its pace
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 15
    assert result.stdout.startswith("stream abc123  mock-model  finished (tool_calls)")
    assert "TTFT 3000 ms" in result.stdout


@pytest.mark.slow  # starts the CLI in a subprocess
def test_replay_timeline_of_a_raw_sse_body_and_of_a_cut_stream(tmp_path: Path) -> None:
    (tmp_path / "raw.sse").write_bytes(TEXT_STREAM)
    result = rxllm("replay", "raw.sse", "--timeline", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "finished (stop)" in result.stdout and "'Hello, world'" in result.stdout
    save_jsonl(with_a_stall()[:5], tmp_path / "cut.jsonl")
    cut = rxllm("replay", "cut.jsonl", "--timeline", cwd=tmp_path)
    assert cut.returncode == 1
    assert "no terminal event" in cut.stdout


@pytest.mark.slow  # starts the CLI in a subprocess
async def test_replay_timeline_of_a_stored_stream(tmp_path: Path) -> None:
    save_jsonl(with_a_stall(), tmp_path / "a.jsonl")
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    async with Store(url, settings=StoreSettings(owner="test")) as store:
        stream_id = await import_recording(store, tmp_path / "a.jsonl")
    result = rxllm("replay", stream_id, "--db", url, "--timeline", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"stream {stream_id[:12]}  mock-model")
    assert "max 400 ms at 0.730 s" in result.stdout


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["text", "reasoning", "tool", "failover", "usage"]),
            st.floats(min_value=0, max_value=100, allow_nan=False),
            st.text(max_size=12),
        ),
        max_size=30,
    ),
    st.sampled_from(["finished", "error", "cancelled", None]),
)
@example([("failover", 0.0, "\x850")], "finished")  # NEL: a line break to str.splitlines
@example([("tool", 0.0, ""), ("tool", 0.0, "")], "finished")  # a run's line ends at its count
def test_any_stream_gets_a_timeline(items: list[tuple[str, float, str]], end: str | None) -> None:
    events: list[Event] = [Started(stream_id="s", seq=0)]
    for kind, t, text in items:
        seq = len(events)
        if kind == "text":
            events.append(TextDelta(stream_id="s", seq=seq, t=t, text=text))
        elif kind == "reasoning":
            events.append(ReasoningDelta(stream_id="s", seq=seq, t=t, text=text))
        elif kind == "tool":
            events.append(ToolCallDelta(stream_id="s", seq=seq, t=t, index=0, arguments=text))
        elif kind == "failover":
            events.append(
                Failover(
                    stream_id="s",
                    seq=seq,
                    t=t,
                    from_upstream="a",
                    to_upstream="b",
                    attempt=2,
                    reason=text,
                )
            )
        else:
            events.append(UsageReport(stream_id="s", seq=seq, t=t, usage={"total_tokens": 3}))
    last = max((e.t for e in events), default=0.0)
    if end == "finished":
        events.append(Finished(stream_id="s", seq=len(events), t=last))
    elif end == "error":
        events.append(
            StreamError(stream_id="s", seq=len(events), t=last, kind="upstream", message="x")
        )
    elif end == "cancelled":
        events.append(Cancelled(stream_id="s", seq=len(events), t=last))
    out = text_timeline(events)
    lines = out.splitlines()
    assert out.endswith("\n") and lines[0].startswith("stream s  ")
    assert lines[2].count("[") >= 1 and lines[3].split()[-1] == "event"
    # Every event is in one line's run: the runs' counts add up.
    runs = (re.search(r" x(\d+)(?: |$)", line) for line in lines[4:])
    counts = [int(m[1]) if m else 1 for m in runs]
    assert sum(counts) == len(events)


@pytest.mark.slow  # starts the CLI in a subprocess
def test_rxllm_inspect_is_replay_timeline(tmp_path: Path) -> None:
    save_jsonl(with_a_stall(), tmp_path / "a.jsonl")
    inspected = rxllm("inspect", "a.jsonl", cwd=tmp_path)
    assert inspected.returncode == 0, inspected.stderr
    assert inspected.stdout == rxllm("replay", "a.jsonl", "--timeline", cwd=tmp_path).stdout
    missing = rxllm("inspect", "missing.jsonl", cwd=tmp_path)
    assert missing.returncode == 2
    assert "rxllm inspect: no such file: missing.jsonl" in missing.stderr
