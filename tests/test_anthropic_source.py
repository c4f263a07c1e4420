"""Anthropic Messages streams normalized into events: real recordings and ours.

The recordings and where each came from: tests/recordings/anthropic/SOURCE.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from operators._anthropic_normalizer import finish_reason_of
from pipeline.apps.cli import main
from pipeline.core.events import (
    BlockDelta,
    BlockStarted,
    Citation,
    EventBase,
    ReasoningSignature,
    Started,
    StopReason,
    StreamError,
    is_content,
    is_terminal,
)
from tests.fixtures import run_body

RECORDINGS = Path(__file__).parent / "recordings" / "anthropic"


def body(name: str) -> bytes:
    return (RECORDINGS / name).read_bytes()


def of(events: list[EventBase], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def assert_well_formed(events: list[EventBase]) -> None:
    assert [e.seq for e in events] == list(range(len(events)))
    assert [is_terminal(e) for e in events] == [False] * (len(events) - 1) + [True]


def test_thinking_stream_keeps_the_reasoning_its_signature_and_the_usage() -> None:
    result, events = run_body(body("thinking_text.sse"))
    assert_well_formed(events)
    started = events[0]
    assert isinstance(started, Started)
    assert (started.api, started.model) == ("anthropic", "claude-sonnet-4-20250514")
    assert started.response_id == "msg_01A6gwM9ZYySVuWAZxJ5Keko"
    choice = result.choices[0]
    assert choice.reasoning is not None
    assert choice.reasoning.startswith("This is a straightforward question about pedestrian")
    assert choice.content is not None
    assert choice.content.startswith("Here's how to cross the street safely:")
    assert choice.content.endswith("Take your time to ensure it's safe before crossing.")
    (signature,) = of(events, ReasoningSignature)
    assert signature.signature.startswith("Eu4CCkYICxgCKkCp") and signature.index == 0
    blocks = of(events, BlockStarted)
    assert [(b.index, b.kind) for b in blocks] == [(0, "reasoning"), (1, "text")]
    assert blocks[0].block == {"type": "thinking", "thinking": "", "signature": ""}
    # message_start's usage (cache counts, tier) updated with message_delta's counts
    assert result.usage is not None
    assert result.usage["output_tokens"] == 277
    assert result.usage["cache_creation"] == {
        "ephemeral_5m_input_tokens": 0,
        "ephemeral_1h_input_tokens": 0,
    }
    assert result.usage["service_tier"] == "standard"
    (stop,) = of(events, StopReason)
    assert (stop.reason, stop.sequence) == ("end_turn", None)
    assert choice.finish_reason == "stop"
    assert result.status == "finished"


def test_redacted_thinking_blocks_are_kept_whole_and_in_order() -> None:
    result, events = run_body(body("redacted_thinking.sse"))
    assert_well_formed(events)
    blocks = of(events, BlockStarted)
    assert [(b.index, b.kind) for b in blocks] == [
        (0, "redacted_thinking"),
        (1, "redacted_thinking"),
        (2, "text"),
    ]
    assert blocks[0].block is not None and blocks[0].block["data"].startswith("EqkECkYIBxgC")
    assert blocks[1].block is not None and blocks[1].block["data"].endswith("GAE=")
    assert is_content(blocks[0]) and not is_content(blocks[2])
    assert result.choices[0].content is not None
    assert result.choices[0].content.startswith("I notice that you've sent what")
    assert result.usage is not None and result.usage["output_tokens"] == 189


def test_tool_use_becomes_a_tool_call_with_its_id_and_parsed_input() -> None:
    result, events = run_body(body("text_then_tool_use.sse"))
    assert_well_formed(events)
    choice = result.choices[0]
    assert choice.content == "I'll check the current weather in Paris for you."
    (call,) = choice.tool_calls
    assert (call.id, call.name) == ("toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather")
    assert call.parsed == {"location": "Paris"}
    assert choice.finish_reason == "tool_calls"
    tool_block = of(events, BlockStarted)[1]
    # fields the model has no word for (``caller``) are kept in the block
    assert tool_block.block == {
        "type": "tool_use",
        "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn",
        "name": "get_weather",
        "caller": {"type": "direct"},
        "input": {},
    }


def test_parallel_tool_calls_one_without_input_and_cache_usage() -> None:
    result, events = run_body(body("ours_parallel_tools_cache.sse"))
    assert_well_formed(events)
    calls = result.choices[0].tool_calls
    assert [(c.index, c.id, c.name, c.parsed) for c in calls] == [
        (0, "toolu_01A", "get_weather", {"city": "Paris"}),
        (1, "toolu_01B", "get_time", {}),
    ]
    assert result.choices[0].reasoning == "Two cities: call both at once."
    assert of(events, ReasoningSignature)[0].signature == "c2lnbmF0dXJlLW9mLXRoZS10aGlua2luZw=="
    assert result.usage == {
        "input_tokens": 12,
        "cache_creation_input_tokens": 1024,
        "cache_read_input_tokens": 2048,
        "output_tokens": 57,
    }


def test_server_tool_blocks_and_citations_pass_as_they_are() -> None:
    result, events = run_body(body("ours_web_search_citations.sse"))
    assert_well_formed(events)
    blocks = of(events, BlockStarted)
    assert [b.kind for b in blocks] == ["text", "server_tool_use", "web_search_tool_result", "text"]
    assert blocks[2].block is not None
    assert blocks[2].block["content"][0]["encrypted_content"] == "RW5jcnlwdGVkUmVzdWx0"
    deltas = of(events, BlockDelta)
    assert [d.index for d in deltas] == [1, 1]
    assert "".join(d.delta["partial_json"] for d in deltas) == '{"query": "Paris population"}'
    (citation,) = of(events, Citation)
    assert citation.index == 3 and citation.citation["url"] == "https://example.org/paris"
    # a server tool is not a tool call the client has to run
    assert result.choices[0].tool_calls == []
    assert result.choices[0].content == (
        "Let me look that up.About 2.1 million people live in Paris."
    )
    assert result.usage is not None and result.usage["server_tool_use"] == {
        "web_search_requests": 1
    }


def test_overloaded_error_mid_stream_keeps_the_text_and_is_retryable() -> None:
    result, events = run_body(body("ours_overloaded_mid_stream.sse"))
    assert_well_formed(events)
    assert result.choices[0].content == "The answer is"
    error = events[-1]
    assert isinstance(error, StreamError)
    assert (error.kind, error.status, error.code) == ("upstream", 529, "overloaded_error")
    assert error.retryable and error.after_first_token
    assert error.message == "Overloaded"


def test_overloaded_before_any_token_is_retryable_without_first_token() -> None:
    error_body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    data = b"event: error\ndata: " + json.dumps(error_body).encode() + b"\n\n"
    _, events = run_body(data)
    error = events[-1]
    assert isinstance(error, StreamError)
    assert error.retryable and not error.after_first_token and error.status == 529


@pytest.mark.parametrize(
    "name", sorted(p.name for p in RECORDINGS.glob("*.sse") if "overloaded" not in p.name)
)
def test_every_split_point_gives_the_same_events(name: str) -> None:
    """Bytes arriving in two reads, cut anywhere, normalize to the same events."""
    import asyncio

    from pipeline.runtime.sources import sse_body
    from pipeline.runtime.standard_chain import llm_stream

    data = body(name)
    whole = [e.model_dump(exclude={"t", "stream_id"}) for e in run_body(data)[1]]
    cuts = range(1, len(data), max(1, len(data) // 40))

    async def pieces(cut: int) -> Any:
        yield data[:cut]
        yield data[cut:]

    async def run(cut: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        done = asyncio.Event()
        llm_stream(sse_body(pieces(cut))).subscribe(
            lambda e: out.append(e.model_dump(exclude={"t", "stream_id"})),
            on_completed=done.set,
        )
        await done.wait()
        return out

    async def all_cuts() -> None:
        for cut in cuts:
            assert await run(cut) == whole, cut

    asyncio.run(all_cuts())


def test_finish_reason_words() -> None:
    assert [
        finish_reason_of(r)
        for r in ("end_turn", "stop_sequence", "max_tokens", "tool_use", "refusal", "pause_turn")
    ] == ["stop", "stop", "length", "tool_calls", "content_filter", "pause_turn"]


def test_assemble_detects_an_anthropic_body(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["assemble", str(RECORDINGS / "text_then_tool_use.sse")]) == 0
    out = json.loads(capsys.readouterr().out)
    (choice,) = out["choices"]
    assert choice["content"] == "I'll check the current weather in Paris for you."
    assert choice["tool_calls"] == [
        {
            "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn",
            "name": "get_weather",
            "arguments": '{"location": "Paris"}',
        }
    ]
    assert choice["finish_reason"] == "tool_calls"
    assert out["usage"]["input_tokens"] == 377 and out["error"] is None
