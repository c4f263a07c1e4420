"""Delta extraction on streams we write: every provider quirk seen in real recordings."""

from __future__ import annotations

import json
from typing import Any

import reactivex

from operators.extract_deltas import extract_deltas
from pipeline.core.events import EventBase, is_terminal
from tests.fixtures import TEXT_STREAM, chunk, run_body, sse, tool

ARGS = '{"city": "Paris", "n": 2}'


def types(events: list[EventBase]) -> list[str]:
    return [e.type for e in events]  # type: ignore[attr-defined]


def assert_well_formed(events: list[EventBase]) -> None:
    assert [e.seq for e in events] == list(range(len(events)))
    assert len({e.stream_id for e in events}) == 1
    assert [is_terminal(e) for e in events] == [False] * (len(events) - 1) + [True]


def test_text_stream() -> None:
    result, events = run_body(TEXT_STREAM)
    assert types(events) == [
        "started",
        "text",
        "text",
        "text",
        "choice.finished",
        "usage",
        "finished",
    ]
    assert_well_formed(events)
    assert result.choices[0].content == "Hello, world"
    assert result.choices[0].finish_reason == "stop"
    assert result.usage == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert result.status == "finished"
    assert events[0].model == "test-model"  # type: ignore[attr-defined]


def test_first_chunk_with_empty_choices_azure_prompt_filter() -> None:
    azure = {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
    }
    result, events = run_body(sse(azure, chunk({"content": "ok"}, finish="stop")))
    assert result.choices[0].content == "ok"
    assert result.status == "finished"
    assert_well_formed(events)


def test_usage_on_every_chunk_reported_once_per_change() -> None:
    u1 = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    u2 = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    body = sse(
        chunk({"content": "a"}, usage=u1),
        chunk({"content": "b"}, usage=u1),
        chunk({}, finish="stop", usage=u2),
    )
    result, events = run_body(body)
    assert types(events).count("usage") == 2
    assert result.usage == u2


def test_extra_chunk_after_usage_moderation() -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    body = sse(
        chunk({"content": "Paris."}, finish="stop"),
        chunk(choices=[], usage=usage),
        chunk(choices=[], moderation={"flagged": False}),
    )
    result, _ = run_body(body)
    assert result.choices[0].content == "Paris."
    assert result.usage == usage
    assert result.status == "finished"


def test_tool_call_without_index() -> None:
    body = sse(
        chunk({"tool_calls": [tool(None, "", id="call_1", name="a")]}),
        chunk({"tool_calls": [tool(None, '{"x"')]}),
        chunk({"tool_calls": [tool(None, ": 1}")]}),
        chunk({"tool_calls": [tool(None, "{}", id="call_2", name="b")]}),
        chunk({}, finish="tool_calls"),
    )
    result, _ = run_body(body)
    calls = result.choices[0].tool_calls
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("call_1", "a", '{"x": 1}'),
        ("call_2", "b", "{}"),
    ]
    assert [c.parsed for c in calls] == [{"x": 1}, {}]


def test_tool_call_indexes_starting_at_one() -> None:
    body = sse(
        chunk({"tool_calls": [tool(1, '{"a":', id="c1", name="f")]}),
        chunk({"tool_calls": [tool(1, " 1}")]}),
        chunk({"tool_calls": [tool(2, "{}", id="c2", name="g")]}),
        chunk({}, finish="tool_calls"),
    )
    result, _ = run_body(body)
    calls = result.choices[0].tool_calls
    assert [(c.index, c.id, c.arguments, c.parsed) for c in calls] == [
        (1, "c1", '{"a": 1}', {"a": 1}),
        (2, "c2", "{}", {}),
    ]


def test_tool_call_id_and_name_repeated_or_null_later() -> None:
    repeated = sse(
        chunk({"tool_calls": [tool(0, '{"a"', id="c1", name="f")]}),
        chunk({"tool_calls": [tool(0, ": 1}", id="c1", name="f")]}),
        chunk({}, finish="tool_calls"),
    )
    nulls = sse(
        chunk({"tool_calls": [tool(0, '{"a"', id="c1", name="f")]}),
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": None, "function": {"name": None, "arguments": ": 1}"}}
                ]
            }
        ),
        chunk({}, finish="tool_calls"),
    )
    for body in (repeated, nulls):
        result, events = run_body(body)
        calls = result.choices[0].tool_calls
        assert [(c.id, c.name, c.arguments) for c in calls] == [("c1", "f", '{"a": 1}')]
        assert types(events).count("tool_call.started") == 1


def test_arguments_whole_in_one_delta_or_null() -> None:
    body = sse(
        chunk({"tool_calls": [tool(0, None, id="c1", name="f")]}),
        chunk({"tool_calls": [tool(0, ARGS)]}),
        chunk({"tool_calls": [tool(0, None)]}),
        chunk({}, finish="tool_calls"),
    )
    result, _ = run_body(body)
    call = result.choices[0].tool_calls[0]
    assert call.arguments == ARGS
    assert call.parsed == json.loads(ARGS)


def test_arguments_as_an_object_are_serialized() -> None:
    body = sse(
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "c", "function": {"name": "f", "arguments": {"a": 1}}}
                ]
            },
            finish="tool_calls",
        )
    )
    result, _ = run_body(body)
    assert result.choices[0].tool_calls[0].parsed == {"a": 1}


def test_choices_interleaved() -> None:
    body = sse(
        chunk({"role": "assistant", "content": ""}, index=0),
        chunk({"role": "assistant", "content": ""}, index=1),
        chunk({"content": "A"}, index=1),
        chunk({"content": "B"}, index=0),
        chunk({"content": "C"}, index=1),
        chunk({}, index=1, finish="length"),
        chunk({}, index=0, finish="stop"),
    )
    result, _ = run_body(body)
    assert [(c.index, c.content, c.finish_reason) for c in result.choices] == [
        (0, "B", "stop"),
        (1, "AC", "length"),
    ]


def test_reasoning_and_reasoning_content() -> None:
    body = sse(
        chunk({"reasoning": "think "}),
        chunk({"reasoning_content": "more"}),
        chunk({"content": "done"}, finish="stop"),
    )
    result, _ = run_body(body)
    assert result.choices[0].reasoning == "think more"
    assert result.choices[0].content == "done"


def test_refusal_deltas_keep_content_null() -> None:
    body = sse(
        chunk({"role": "assistant", "content": None, "refusal": ""}),
        chunk({"refusal": "I can't "}),
        chunk({"refusal": "help."}, finish="stop"),
    )
    result, _ = run_body(body)
    assert result.choices[0].refusal == "I can't help."
    assert result.choices[0].content is None


def test_sse_error_event_mid_stream_keeps_what_arrived() -> None:
    error = {"error": {"message": "boom", "type": "server_error", "code": "x", "status_code": 503}}
    body = sse(
        chunk({"content": "part"}), f"event: error\ndata: {json.dumps(error)}\n\n", done=False
    )
    result, events = run_body(body)
    assert result.choices[0].content == "part"
    assert result.status == "error"
    assert result.error is not None
    assert result.error["kind"] == "upstream"
    assert result.error["message"] == "boom"
    assert result.error["status"] == 503
    assert result.error["retryable"] is True
    assert result.error["after_first_token"] is True
    assert_well_formed(events)


def test_top_level_error_object_in_chunk_keeps_usage() -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    body = sse(
        chunk({"reasoning": "hm"}, finish="length"),
        chunk(choices=[], usage=usage, error={"code": 400, "message": "limit"}),
    )
    result, _ = run_body(body)
    assert result.usage == usage
    assert result.choices[0].finish_reason == "length"
    assert result.error is not None
    assert (result.error["message"], result.error["status"]) == ("limit", 400)
    assert result.error["retryable"] is False


def test_no_done_and_no_finish_reason() -> None:
    result, events = run_body(sse(chunk({"content": "cut"}), done=False))
    assert result.status == "finished"
    assert result.choices[0].finish_reason is None
    assert result.choices[0].content == "cut"
    assert_well_formed(events)


def test_tool_call_with_finish_reason_stop() -> None:
    body = sse(chunk({"tool_calls": [tool(0, ARGS, id="c", name="f")]}), chunk({}, finish="stop"))
    result, events = run_body(body)
    assert result.choices[0].tool_calls[0].parsed == json.loads(ARGS)
    assert result.choices[0].finish_reason == "stop"
    assert "tool_call.completed" in types(events)


def test_malformed_chunk_becomes_error_event_after_what_arrived() -> None:
    body = sse(chunk({"content": "ok"}), "data: {not json\n\n", chunk({"content": "lost"}))
    result, events = run_body(body)
    assert result.choices[0].content == "ok"
    assert result.status == "error"
    assert result.error is not None and result.error["kind"] == "malformed"
    assert_well_formed(events)


def test_empty_body_is_an_error() -> None:
    result, events = run_body(b"")
    assert result.status == "error"
    assert_well_formed(events)


def test_items_after_done_are_ignored() -> None:
    body = TEXT_STREAM + sse(chunk({"content": "late"}), done=False)
    result, _ = run_body(body)
    assert result.choices[0].content == "Hello, world"


def test_accepts_parsed_dicts_and_sdk_objects() -> None:
    from openai.types.chat import ChatCompletionChunk

    raw = [chunk({"content": "a"}), chunk({"content": "b"}, finish="stop")]
    objects: list[Any] = [ChatCompletionChunk.model_validate(c) for c in raw]
    for items in (raw, objects):
        out: list[EventBase] = []
        reactivex.from_iterable(items).pipe(extract_deltas("s1")).subscribe(out.append)
        assert [getattr(e, "text", None) for e in out if e.type == "text"] == ["a", "b"]  # type: ignore[attr-defined]
        assert all(e.stream_id == "s1" for e in out)


RESPONSES: list[dict[str, Any]] = [
    {"type": "response.created", "response": {"id": "resp_1", "model": "m"}},
    {
        "type": "response.output_item.added",
        "output_index": 0,
        "item": {"type": "reasoning", "id": "rs"},
    },
    {"type": "response.reasoning_summary_text.delta", "output_index": 0, "delta": "why"},
    {"type": "response.output_item.added", "output_index": 1, "item": {"type": "message"}},
    {"type": "response.output_text.delta", "output_index": 1, "delta": "Hi"},
    {
        "type": "response.output_item.added",
        "output_index": 2,
        "item": {
            "type": "function_call",
            "id": "fc",
            "call_id": "call_9",
            "name": "f",
            "arguments": "",
        },
    },
    {"type": "response.function_call_arguments.delta", "output_index": 2, "delta": '{"a":'},
    {"type": "response.function_call_arguments.delta", "output_index": 2, "delta": "1}"},
    {"type": "response.function_call_arguments.done", "output_index": 2, "arguments": '{"a":1}'},
    {
        "type": "response.completed",
        "response": {"id": "resp_1", "usage": {"input_tokens": 1, "output_tokens": 2}},
    },
]


def test_responses_api_events() -> None:
    body = "".join(f"event: {r['type']}\ndata: {json.dumps(r)}\n\n" for r in RESPONSES).encode()
    result, events = run_body(body)
    choice = result.choices[0]
    assert (choice.content, choice.reasoning, choice.finish_reason) == ("Hi", "why", "tool_calls")
    assert [(c.id, c.name, c.arguments) for c in choice.tool_calls] == [("call_9", "f", '{"a":1}')]
    assert result.usage == {"input_tokens": 1, "output_tokens": 2}
    assert events[0].api == "responses"  # type: ignore[attr-defined]
    assert_well_formed(events)


def test_responses_arguments_only_in_done_event() -> None:
    items = [r for r in RESPONSES if r["type"] != "response.function_call_arguments.delta"]
    body = "".join(f"data: {json.dumps(r)}\n\n" for r in items).encode()
    result, _ = run_body(body)
    assert result.choices[0].tool_calls[0].arguments == '{"a":1}'


def test_responses_failed_and_incomplete() -> None:
    failed = [
        RESPONSES[0],
        RESPONSES[4],
        {
            "type": "response.failed",
            "response": {"error": {"code": "server_error", "message": "went wrong"}},
        },
    ]
    body = "".join(f"data: {json.dumps(r)}\n\n" for r in failed).encode()
    result, _ = run_body(body)
    assert result.status == "error" and result.error is not None
    assert result.error["message"] == "went wrong"
    incomplete = [
        RESPONSES[0],
        RESPONSES[4],
        {
            "type": "response.incomplete",
            "response": {"incomplete_details": {"reason": "max_output_tokens"}},
        },
    ]
    body = "".join(f"data: {json.dumps(r)}\n\n" for r in incomplete).encode()
    result, _ = run_body(body)
    assert result.choices[0].finish_reason == "length"
