"""The anthropic dialect: real Anthropic streams, normalized to events and written back,
end in the same final message in the anthropic SDK as the original stream.

The recordings and where each came from: tests/recordings/anthropic/SOURCE.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event

from pipeline.core.events import EventBase
from pipeline.core.sse_decoder import SSEDecoder
from sinks.dialects import AnthropicDialect
from tests.fixtures import TEXT_STREAM, run_body

RECORDINGS = Path(__file__).parent / "recordings" / "anthropic"
WHOLE = sorted(p.name for p in RECORDINGS.glob("*.sse") if "overloaded" not in p.name)


def sdk_message(body: bytes) -> dict[str, Any]:
    """The message the anthropic SDK's ``messages.stream()`` builds from a raw body."""
    decoder = SSEDecoder()
    snapshot: Any = None
    json_bufs: dict[int, bytes] = {}
    for message in decoder.decode(body) + decoder.flush():
        data = json.loads(message.data)
        if data.get("type") in (None, "ping"):
            continue
        if data["type"] == "error":
            raise RuntimeError(data["error"])
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    dumped: dict[str, Any] = snapshot.model_dump(exclude_none=True)
    return dumped


def no_nones(value: Any) -> Any:
    """``value`` without the ``None`` fields (as ``model_dump(exclude_none=True)``)."""
    if isinstance(value, dict):
        return {k: no_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [no_nones(v) for v in value]
    return value


def encode(events: list[EventBase], **options: Any) -> tuple[bytes, AnthropicDialect]:
    dialect = AnthropicDialect(**options)
    return b"".join(dialect.encode(event) for event in events), dialect


@pytest.mark.parametrize("name", WHOLE)
def test_a_real_stream_written_back_gives_the_same_final_message(name: str) -> None:
    original = (RECORDINGS / name).read_bytes()
    _, events = run_body(original)
    body, dialect = encode(events)
    again = sdk_message(body)
    expected = sdk_message(original)
    # message_start carries zero usage; the SDK takes message_delta's, which has all of it
    assert again == expected
    # non-streamed: the dialect's own message is the same
    assert no_nones(dialect.message()) == expected


def test_text_still_arrives_in_pieces_and_frames_carry_ids() -> None:
    original = (RECORDINGS / "thinking_text.sse").read_bytes()
    _, events = run_body(original)
    body, _ = encode(events)
    frames = body.decode().split("\n\n")
    deltas = [f for f in frames if '"text_delta"' in f]
    assert len(deltas) == original.decode().count('"text_delta"')
    assert all(f.startswith("id: ") for f in frames if f)


def test_a_chat_completions_stream_becomes_anthropic_blocks() -> None:
    _, events = run_body(TEXT_STREAM)
    body, _ = encode(events)
    message = sdk_message(body)
    assert message["content"] == [{"type": "text", "text": "Hello, world"}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["input_tokens"] == 3 and message["usage"]["output_tokens"] == 2
    assert message["id"].startswith("msg_")


def test_an_error_after_the_first_token_is_an_error_event() -> None:
    original = (RECORDINGS / "ours_overloaded_mid_stream.sse").read_bytes()
    _, events = run_body(original)
    body, _ = encode(events)
    text = body.decode()
    assert '"text_delta","text":"The answer is"' in text
    last = text.strip().split("\n\n")[-1]
    assert "event: error" in last
    assert json.loads(last.split("data: ", 1)[1]) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
