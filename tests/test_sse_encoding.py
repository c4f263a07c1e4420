"""SSE encoding, checked with an independent parser (``httpx-sse``), and the dialects' frames."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import httpx
import httpx_sse
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic_core import to_json

from pipeline.core.events import (
    Cancelled,
    ChoiceFinished,
    EventBase,
    Finished,
    ReasoningDelta,
    RefusalDelta,
    Started,
    StreamError,
    TextDelta,
    ToolCallCompleted,
    ToolCallDelta,
    ToolCallInvalid,
    ToolCallStarted,
    UsageReport,
    load_event,
)
from sinks.dialects import (
    Dialect,
    OpenAIDialect,
    RxllmDialect,
    VercelDialect,
    chat_usage,
    data_frame,
    make_dialect,
)
from sinks.sse_response import HEARTBEAT, encode_comment, encode_event, last_event_id

# Tokens that try to break out of a data line or forge fields and events.
NASTY = ["\n", "\r", "\r\n", "\n\n", "data: x", "event: y", "id: 9", "retry: 1", ":", " ", "é☃𝄞"]
token = st.one_of(
    st.text(),
    st.lists(st.sampled_from(NASTY) | st.text(max_size=3), max_size=8).map("".join),
)
field = st.one_of(st.none(), token)


def parse(body: bytes, splits: list[int] | None = None) -> list[httpx_sse.ServerSentEvent]:
    """Parse ``body`` with httpx-sse, fed in chunks cut at ``splits``."""
    cuts = sorted({0, len(body), *(s % (len(body) + 1) for s in splits or [])})
    chunks = [body[a:b] for a, b in itertools.pairwise(cuts)]
    response = httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=iter(chunks)
    )
    return list(httpx_sse.EventSource(response).iter_sse())


def normalized(text: str) -> str:
    """What an SSE client reads back: every line break becomes ``\\n``."""
    return re.sub(r"\r\n|\r", "\n", text)


def stripped(text: str) -> str:
    return text.replace("\r", "").replace("\n", "")


@given(
    st.lists(st.tuples(token, field, field), min_size=1, max_size=8),
    st.lists(st.integers(min_value=0), max_size=4),
)
@example([("a\r\nb\rc\nd", "x\ndata: evil", "1\r\nevent: forged")], [])
@example([("data: x\n\nevent: forged\n\n", None, None)], [5])
def test_tokens_survive_an_independent_parser(
    items: list[tuple[str, str | None, str | None]], splits: list[int]
) -> None:
    body = b"".join(encode_event(data, event=event, id=id) + HEARTBEAT for data, event, id in items)
    parsed = parse(body, splits)
    assert [e.data for e in parsed] == [normalized(data) for data, _, _ in items]
    assert [e.event for e in parsed] == [
        "message" if event is None or not stripped(event) else stripped(event)
        for _, event, _ in items
    ]
    # An id sticks until the next one (that is the SSE rule).
    expected_ids: list[str] = []
    current = ""
    for _, _, id in items:
        if id is not None:
            current = stripped(id).replace("\0", "")
        expected_ids.append(current)
    assert [e.id for e in parsed] == expected_ids


def test_encode_event_layout() -> None:
    assert encode_event("a\r\nb", event="text", id="3", retry=1500) == (
        b"id: 3\nevent: text\nretry: 1500\ndata: a\ndata: b\n\n"
    )
    assert encode_event("") == b"data: \n\n"
    assert parse(encode_event("", id="1"))[0].data == ""
    assert parse(encode_event("x", retry=2000))[0].retry == 2000


def test_comment_is_ignored_by_parsers() -> None:
    assert encode_comment() == HEARTBEAT == b": ping\n"
    assert encode_comment("a\nb") == b": a\n: b\n"
    body = encode_comment("x\ndata: no") + encode_event("yes") + HEARTBEAT + encode_event("no")
    assert [(e.event, e.data, e.id) for e in parse(body)] == [
        ("message", "yes", ""),
        ("message", "no", ""),
    ]


def test_heartbeat_after_an_id_dispatches_nothing() -> None:
    """Regression: ``: ping\n\n`` after an ``id:`` makes httpx-sse/openai emit an empty event."""
    body = encode_event("{}", id="1") + HEARTBEAT + HEARTBEAT + encode_event("[DONE]", id="2")
    assert [e.data for e in parse(body)] == ["{}", "[DONE]"]


def test_last_event_id() -> None:
    assert last_event_id({"last-event-id": " 12 "}) == 12
    assert last_event_id({}) is None
    assert last_event_id({"last-event-id": "abc"}) is None
    assert last_event_id({"last-event-id": "-1"}) is None


@given(st.lists(token, min_size=1, max_size=6))
def test_rxllm_dialect_carries_text_exactly(tokens: list[str]) -> None:
    dialect = RxllmDialect()
    events: list[EventBase] = [
        TextDelta(stream_id="s", seq=i, text=t) for i, t in enumerate(tokens)
    ]
    events.append(Finished(stream_id="s", seq=len(tokens)))
    parsed = parse(b"".join(dialect.encode(e) for e in events))
    assert [load_event(e.data) for e in parsed] == events
    assert [e.event for e in parsed] == ["text"] * len(tokens) + ["finished"]
    assert [e.id for e in parsed] == [str(i) for i in range(len(tokens) + 1)]
    assert dialect.done
    assert dialect.encode(TextDelta(stream_id="s", seq=99, text="late")) == b""


def s(seq: int, **kw: Any) -> dict[str, Any]:
    return {"stream_id": "abc", "seq": seq, **kw}


TOOL_STREAM: list[EventBase] = [
    Started(**s(0, model="m-1")),
    ReasoningDelta(**s(1, text="think")),
    TextDelta(**s(2, text="Hi")),
    ToolCallStarted(**s(3, index=0, id="call_1", name="get")),
    ToolCallDelta(**s(4, index=0, arguments='{"a":')),
    ToolCallDelta(**s(5, index=0, arguments="1}")),
    ToolCallCompleted(
        **s(6, index=0, id="call_1", name="get", arguments='{"a":1}', parsed={"a": 1})
    ),
    ChoiceFinished(**s(7, finish_reason="tool_calls")),
    UsageReport(**s(8, usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3})),
    Finished(**s(9, finish_reason="tool_calls")),
]


def frames(dialect: Dialect, events: list[EventBase]) -> list[httpx_sse.ServerSentEvent]:
    return parse(b"".join(dialect.encode(e) for e in events) + dialect.close())


def test_openai_chunks() -> None:
    parsed = frames(OpenAIDialect(include_usage=True, created=7), TOOL_STREAM)
    assert parsed[-1].data == "[DONE]"
    chunks = [json.loads(e.data) for e in parsed[:-1]]
    assert {c["id"] for c in chunks} == {"chatcmpl-abc"}
    assert {c["model"] for c in chunks} == {"m-1"}
    assert {c["created"] for c in chunks} == {7}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    # The role travels with the choice's first delta (``started`` writes nothing).
    assert deltas[0] == {"role": "assistant", "reasoning_content": "think"}
    assert deltas[1] == {"content": "Hi"}
    assert deltas[2]["tool_calls"] == [
        {
            "index": 0,
            "type": "function",
            "id": "call_1",
            "function": {"name": "get", "arguments": ""},
        }
    ]
    assert [d["tool_calls"][0]["function"]["arguments"] for d in deltas[3:5]] == ['{"a":', "1}"]
    assert len(deltas) == 6  # the completed call is not sent again
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 3
    assert [e.id for e in parsed] == ["1", "2", "3", "4", "5", "7", "8", "9"]


def test_openai_first_delta_is_role_and_empty_content() -> None:
    events = [TOOL_STREAM[0], TextDelta(**s(1, text="")), TextDelta(**s(2, text="Hi"))]
    parsed = frames(OpenAIDialect(), events)
    deltas = [json.loads(e.data)["choices"][0]["delta"] for e in parsed]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "Hi"}]


@given(st.lists(st.tuples(st.sampled_from([0, 1]), token), min_size=1, max_size=8))
@example([(0, 'a "quoted"\n\\ line\x00\u2028 ünï 🙂'), (0, ""), (1, "x"), (1, "</script>")])
def test_openai_text_chunks_are_the_chunk_objects_compact_json(
    texts: list[tuple[int, str]],
) -> None:
    """Text deltas (written by a hand-made template after a choice's first) are the chunk
    objects serialized compactly, the same bytes as any other chunk's serialization."""
    dialect = OpenAIDialect(created=7)
    events: list[EventBase] = [Started(**s(0, model="m"))]
    events += [TextDelta(**s(i + 1, choice=c, text=t)) for i, (c, t) in enumerate(texts)]
    assert dialect.encode(events[0]) == b""
    seen: set[int] = set()
    for event in events[1:]:
        assert isinstance(event, TextDelta)
        frame = dialect.encode(event)
        delta: dict[str, Any] = {"content": event.text}
        if event.choice not in seen:
            seen.add(event.choice)
            delta = {"role": "assistant", **delta}
        chunk = {
            "id": "chatcmpl-abc",
            "object": "chat.completion.chunk",
            "created": 7,
            "model": "m",
            "choices": [
                {"index": event.choice, "delta": delta, "logprobs": None, "finish_reason": None}
            ],
        }
        assert frame == data_frame(event.seq, to_json(chunk))
        assert json.loads(parse(frame)[0].data) == chunk
    dialect.encode(Finished(**s(len(events))))
    assert dialect.encode(TextDelta(**s(99, text="late"))) == b""


def test_openai_usage_only_when_asked_and_terminal_frames() -> None:
    without = [json.loads(e.data) for e in frames(OpenAIDialect(), TOOL_STREAM)[:-1]]
    assert all("usage" not in c for c in without)
    error = StreamError(**s(3, kind="upstream", message="boom", code="x"))
    parsed = frames(OpenAIDialect(), [*TOOL_STREAM[:3], error])
    assert json.loads(parsed[-1].data) == {
        "error": {"message": "boom", "type": "upstream", "code": "x"}
    }
    cancelled = frames(OpenAIDialect(), [*TOOL_STREAM[:3], Cancelled(**s(3))])
    assert cancelled[-1].data != "[DONE]" and len(cancelled) == 2
    # Finished with a reason and no choice.finished before it: the reason is sent.
    done = frames(OpenAIDialect(), [TOOL_STREAM[0], Finished(**s(1, finish_reason="stop"))])
    assert json.loads(done[-2].data)["choices"][0]["finish_reason"] == "stop"


def test_chat_usage_translates_responses_usage() -> None:
    assert chat_usage({"input_tokens": 2, "output_tokens": 3}) == {
        "prompt_tokens": 2,
        "completion_tokens": 3,
        "total_tokens": 5,
    }
    assert chat_usage({"prompt_tokens": 1}) == {"prompt_tokens": 1}


# The AI SDK's uiMessageChunkSchema (strict objects): the keys each part may have.
VERCEL_KEYS: dict[str, set[str]] = {
    "start": {"messageId", "messageMetadata"},
    "start-step": set(),
    "text-start": {"id", "providerMetadata"},
    "text-delta": {"id", "delta", "providerMetadata"},
    "text-end": {"id", "providerMetadata"},
    "reasoning-start": {"id", "providerMetadata"},
    "reasoning-delta": {"id", "delta", "providerMetadata"},
    "reasoning-end": {"id", "providerMetadata"},
    "tool-input-start": {"toolCallId", "toolName", "providerExecuted", "dynamic", "title"},
    "tool-input-delta": {"toolCallId", "inputTextDelta"},
    "tool-input-available": {"toolCallId", "toolName", "input", "providerExecuted", "dynamic"},
    "tool-input-error": {"toolCallId", "toolName", "input", "errorText", "dynamic"},
    "error": {"errorText"},
    "finish-step": set(),
    "finish": {"messageMetadata"},
    "abort": {"reason"},
}
VERCEL_REQUIRED: dict[str, set[str]] = {
    "text-start": {"id"},
    "text-delta": {"id", "delta"},
    "text-end": {"id"},
    "reasoning-start": {"id"},
    "reasoning-delta": {"id", "delta"},
    "reasoning-end": {"id"},
    "tool-input-start": {"toolCallId", "toolName"},
    "tool-input-delta": {"toolCallId", "inputTextDelta"},
    "tool-input-available": {"toolCallId", "toolName", "input"},
    "tool-input-error": {"toolCallId", "toolName", "input", "errorText"},
    "error": {"errorText"},
}


def vercel_parts(parsed: list[httpx_sse.ServerSentEvent]) -> list[dict[str, object]]:
    assert parsed[-1].data == "[DONE]"
    parts = [json.loads(e.data) for e in parsed[:-1]]
    for part in parts:
        kind = part["type"]
        keys = set(part) - {"type"}
        assert keys <= VERCEL_KEYS[kind], part
        assert VERCEL_REQUIRED.get(kind, set()) <= keys, part
    return parts


def test_vercel_parts() -> None:
    dialect = VercelDialect()
    assert dialect.headers == {"x-vercel-ai-ui-message-stream": "v1"}
    parts = vercel_parts(frames(dialect, TOOL_STREAM))
    assert [p["type"] for p in parts] == [
        "start",
        "start-step",
        "reasoning-start",
        "reasoning-delta",
        "reasoning-end",
        "text-start",
        "text-delta",
        "text-end",
        "tool-input-start",
        "tool-input-delta",
        "tool-input-delta",
        "tool-input-available",
        "finish-step",
        "finish",
    ]
    assert parts[0]["messageId"] == "msg-abc"
    assert parts[6] == {"type": "text-delta", "id": parts[5]["id"], "delta": "Hi"}
    assert parts[8] == {"type": "tool-input-start", "toolCallId": "call_1", "toolName": "get"}
    assert parts[11]["input"] == {"a": 1}


def test_vercel_error_cancel_invalid_and_unterminated() -> None:
    error = StreamError(**s(3, kind="upstream", message="boom"))
    parts = vercel_parts(frames(VercelDialect(), [*TOOL_STREAM[:3], error]))
    assert parts[-2:] == [
        {"type": "text-end", "id": parts[-3]["id"]},
        {"type": "error", "errorText": "boom"},
    ]
    parts = vercel_parts(frames(VercelDialect(), [*TOOL_STREAM[:3], Cancelled(**s(3))]))
    assert parts[-1] == {"type": "abort"}
    invalid = ToolCallInvalid(**s(1, index=0, id="c", name="f", arguments="{", error="bad"))
    parts = vercel_parts(frames(VercelDialect(), [TOOL_STREAM[0], invalid, Finished(**s(2))]))
    assert [p["type"] for p in parts][2:4] == ["tool-input-start", "tool-input-error"]
    # No terminal event: close() ends the stream as aborted, still with [DONE].
    parts = vercel_parts(frames(VercelDialect(), TOOL_STREAM[:3]))
    assert parts[-2:] == [{"type": "text-end", "id": parts[-3]["id"]}, {"type": "abort"}]
    # Refusals are text; other choices are dropped.
    refusal = RefusalDelta(**s(1, text="no"))
    other = TextDelta(**s(2, text="x", choice=1))
    parts = vercel_parts(
        frames(VercelDialect(), [TOOL_STREAM[0], refusal, other, Finished(**s(3))])
    )
    assert [p.get("delta") for p in parts if p["type"] == "text-delta"] == ["no"]


def test_make_dialect() -> None:
    assert isinstance(make_dialect("openai", include_usage=True), OpenAIDialect)
    with pytest.raises(ValueError, match="unknown SSE dialect"):
        make_dialect("nope")
    assert data_frame(None, b"[DONE]") == b"data: [DONE]\n\n"
