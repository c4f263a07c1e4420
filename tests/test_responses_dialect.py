"""The responses dialect: a Responses stream normalized to events and written back ends
in the same final response in the openai SDK (its own stream state) as the original.

Real recordings (``../shared/streams/openai_responses_*.sse``, skipped when absent)
and the built-in model's streams.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openai._models import construct_type
from openai._types import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent

from pipeline.apps.builtin_model.answer_script import MockScript
from pipeline.apps.builtin_model.responses_wire import ResponsesWriter
from pipeline.apps.builtin_model.wire_frames import Meta, encode
from pipeline.core.sse_decoder import SSEDecoder
from sinks.dialects import ResponsesDialect
from tests.fixtures import TEXT_STREAM, run_body

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "streams"
RECORDED = sorted(SHARED.glob("openai_responses_*.sse")) if SHARED.is_dir() else []


def sdk_response(body: bytes) -> dict[str, Any]:
    """The response the openai SDK's ``responses.stream()`` ends with, from a raw body."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    decoder = SSEDecoder()
    for message in decoder.decode(body) + decoder.flush():
        if message.data == "[DONE]":
            continue
        event = construct_type(type_=ResponseStreamEvent, value=json.loads(message.data))
        state.handle_event(event)  # type: ignore[arg-type]
    final = state._completed_response
    assert final is not None, "no response.completed"
    dumped: dict[str, Any] = final.model_dump(exclude_none=True)
    return dumped


def written_back(body: bytes) -> bytes:
    _, events = run_body(body)
    dialect = ResponsesDialect()
    return b"".join(dialect.encode(event) for event in events)


def what_a_client_keeps(response: dict[str, Any]) -> dict[str, Any]:
    """What the client continues from: the output items, the usage, the status, the id.

    Two differences are not compared: a reasoning item's ``encrypted_content``
    is there, but as ``output_item.done`` said it (the API encrypts it again,
    with another nonce, for ``response.completed``); and an output text part
    may say ``logprobs: []`` where the recording (older) said nothing.
    """
    kept = {k: response.get(k) for k in ("id", "output", "usage", "status", "model")}
    for item in kept["output"] or []:
        if "encrypted_content" in item:
            item["encrypted_content"] = bool(item["encrypted_content"])
        for part in item.get("content") or []:
            if part.get("logprobs") == []:
                del part["logprobs"]
    return kept


@pytest.mark.skipif(not RECORDED, reason="../shared/streams is absent")
@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.name)
def test_a_recorded_stream_written_back_gives_the_same_final_response(path: Path) -> None:
    original = path.read_bytes()
    again = sdk_response(written_back(original))
    expected = sdk_response(original)
    assert what_a_client_keeps(again) == what_a_client_keeps(expected)


@pytest.mark.parametrize(
    "script",
    [
        {"text": "Hello there, in pieces"},
        {
            "reasoning": "Two calls.",
            "text": "Calling both.",
            "tool_calls": [
                {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                {"name": "get_time", "arguments": '{"tz": "UTC"}'},
            ],
        },
        {"text": "cut", "finish_reason": "length"},
    ],
    ids=["text", "reasoning-parallel-tools", "incomplete"],
)
def test_the_builtin_models_stream_written_back(script: dict[str, Any]) -> None:
    answer = MockScript.model_validate(script).answer("hi", 1)
    meta = Meta(suffix="mock000001", model="m", created=0, prompt_tokens=3)
    original = b"".join(encode(frame) for frame in ResponsesWriter(answer, meta).frames())
    body = written_back(original)
    if script.get("finish_reason") == "length":
        assert b"response.incomplete" in body and b"max_output_tokens" in body
        return
    again, expected = sdk_response(body), sdk_response(original)
    assert what_a_client_keeps(again) == what_a_client_keeps(expected)
    assert body.count(b"response.output_text.delta") == original.count(
        b"response.output_text.delta"
    )


def test_a_chat_completions_stream_becomes_a_response() -> None:
    response = sdk_response(written_back(TEXT_STREAM))
    (message,) = response["output"]
    assert message["type"] == "message"
    assert message["content"][0]["text"] == "Hello, world"
    assert response["status"] == "completed"
    assert response["usage"]["input_tokens"] == 3 and response["usage"]["output_tokens"] == 2


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(
        b"event: %b\ndata: %b\n\n"
        % (e["type"].encode(), json.dumps({**e, "sequence_number": i}).encode())
        for i, e in enumerate(events)
    )


def test_annotations_and_a_built_in_tools_item_pass_as_they_are() -> None:
    """Written by us after the API reference: a web search call, then cited text."""
    citation = {
        "type": "url_citation",
        "url": "https://example.org/paris",
        "title": "Paris",
        "start_index": 0,
        "end_index": 5,
    }
    search = {
        "id": "ws_1",
        "type": "web_search_call",
        "status": "completed",
        "action": {"type": "search", "query": "Paris"},
    }
    message = {"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant"}
    text_part = {"type": "output_text", "text": "", "annotations": []}
    done_part = {**text_part, "text": "Paris.", "annotations": [citation]}
    response = {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}
    where = {"item_id": "msg_1", "output_index": 1, "content_index": 0}
    original = _sse(
        {"type": "response.created", "response": response},
        {"type": "response.output_item.added", "output_index": 0, "item": search},
        {"type": "response.output_item.done", "output_index": 0, "item": search},
        {
            "type": "response.output_item.added",
            "output_index": 1,
            "item": {**message, "content": []},
        },
        {"type": "response.content_part.added", **where, "part": text_part},
        {"type": "response.output_text.delta", **where, "delta": "Paris."},
        {
            "type": "response.output_text.annotation.added",
            **where,
            "annotation_index": 0,
            "annotation": citation,
        },
        {"type": "response.output_text.done", **where, "text": "Paris."},
        {"type": "response.content_part.done", **where, "part": done_part},
        {
            "type": "response.output_item.done",
            "output_index": 1,
            "item": {**message, "status": "completed", "content": [done_part]},
        },
        {
            "type": "response.completed",
            "response": {
                **response,
                "status": "completed",
                "output": [search, {**message, "status": "completed", "content": [done_part]}],
                "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7},
            },
        },
    )
    again = what_a_client_keeps(sdk_response(written_back(original)))
    expected = what_a_client_keeps(sdk_response(original))
    assert again["output"] == expected["output"]
    assert again["output"][1]["content"][0]["annotations"] == [citation]
