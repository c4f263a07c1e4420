"""Requests translated between the APIs: what maps to what, and a 400 naming what cannot.

The table these check is docs/apis.md.
"""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core.errors import UntranslatableError
from pipeline.runtime.api_routing import plan_calls, tools_for
from pipeline.runtime.translate import (
    anthropic_to_chat,
    chat_to_anthropic,
    responses_to_chat,
    translate_request,
    upstream_api,
)
from pipeline.runtime.upstreams import Upstream

IMAGE = "iVBORw0KGgo="


def anthropic_request(**fields: Any) -> dict[str, Any]:
    return {
        "model": "claude",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        **fields,
    }


def test_anthropic_to_chat_full_conversation() -> None:
    body = anthropic_request(
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": IMAGE},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "sig"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": "a"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a cat"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [{"type": "text", "text": "failed"}],
                        "is_error": True,
                    },
                    {"type": "text", "text": "And now?"},
                ],
            },
        ],
        tools=[{"name": "look", "description": "Look", "input_schema": {"type": "object"}}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        thinking={"type": "enabled", "budget_tokens": 4000},
        stop_sequences=["END"],
        temperature=0.5,
        top_p=0.9,
        metadata={"user_id": "u1"},
        stream=True,
    )
    chat = anthropic_to_chat(body)
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{IMAGE}"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "look", "arguments": '{"q": "a"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "a cat"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "(error) failed"},
        {"role": "user", "content": "And now?"},
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {"name": "look", "description": "Look", "parameters": {"type": "object"}},
        }
    ]
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    assert chat["reasoning_effort"] == "medium"
    assert (chat["stop"], chat["temperature"], chat["top_p"]) == (["END"], 0.5, 0.9)
    assert (chat["model"], chat["max_tokens"], chat["user"]) == ("claude", 100, "u1")
    assert "stream" not in chat


def test_anthropic_json_output_and_effort() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    chat = anthropic_to_chat(
        anthropic_request(
            output_config={"effort": "max", "format": {"type": "json_schema", "schema": schema}}
        )
    )
    assert chat["reasoning_effort"] == "high"
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"top_k": 5}, "top_k"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
        ({"tool_choice": {"type": "magic"}}, "tool_choice.type"),
        ({"metadata": {"tenant": "x"}}, "metadata.tenant"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "document", "source": {"type": "text", "data": "x"}}],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ],
)
def test_anthropic_fields_that_cannot_be_carried(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(UntranslatableError) as caught:
        anthropic_to_chat(anthropic_request(**fields))
    assert caught.value.field == field
    assert f"'{field}'" in str(caught.value)


def test_responses_to_chat_full_conversation() -> None:
    body = {
        "model": "gpt",
        "instructions": "Be brief.",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Look at "},
                    {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "low"},
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Calling."}],
            },
            {"type": "function_call", "call_id": "call_1", "name": "look", "arguments": "{}"},
            {"type": "function_call", "call_id": "call_2", "name": "look", "arguments": '{"b":1}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "a cat"},
            {"type": "function_call_output", "call_id": "call_2", "output": "a dog"},
        ],
        "tools": [{"type": "function", "name": "look", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "look"},
        "reasoning": {"effort": "low", "summary": "auto"},
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}}},
        "max_output_tokens": 50,
        "parallel_tool_calls": False,
        "store": False,
        "truncation": "disabled",
    }
    chat = responses_to_chat(body)
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look at "},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://x.test/a.png", "detail": "low"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": "Calling.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "look", "arguments": "{}"},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "look", "arguments": '{"b":1}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
        {"role": "tool", "tool_call_id": "call_2", "content": "a dog"},
    ]
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "look"}}
    assert chat["reasoning_effort"] == "low" and chat["max_tokens"] == 50
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}},
    }
    assert chat["parallel_tool_calls"] is False


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"include": ["reasoning.encrypted_content"]}, "include"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0]"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0]",
        ),
    ],
)
def test_responses_fields_that_cannot_be_carried(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(UntranslatableError) as caught:
        responses_to_chat({"model": "gpt", "input": "hi", **fields})
    assert caught.value.field == field


def test_chat_to_anthropic_full_conversation() -> None:
    body = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "No lists."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{IMAGE}"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "look", "arguments": '{"q": "a"}'},
                    },
                    {"id": "call_2", "type": "function", "function": {"name": "look"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
            {"role": "tool", "tool_call_id": "call_2", "content": "a dog"},
            {"role": "user", "content": "So?"},
        ],
        "tools": [{"type": "function", "function": {"name": "look", "parameters": {}}}],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "reasoning_effort": "high",
        "max_tokens": 1000,
        "stop": "END",
        "temperature": 0.3,
        "user": "u1",
        "stream_options": {"include_usage": True},
        "n": 1,
    }
    out = chat_to_anthropic(body)
    assert out["system"] == "Be brief.\n\nNo lists."
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": IMAGE},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_1", "name": "look", "input": {"q": "a"}},
                {"type": "tool_use", "id": "call_2", "name": "look", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "a cat"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "a dog"},
                {"type": "text", "text": "So?"},
            ],
        },
    ]
    assert out["tools"] == [{"name": "look", "input_schema": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    assert out["max_tokens"] == 1000 + 16384  # the budget stays below max_tokens
    assert (out["stop_sequences"], out["temperature"]) == (["END"], 0.3)
    assert out["metadata"] == {"user_id": "u1"}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"temperature": 1.5}, "temperature"),
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{"}}],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
    ],
)
def test_chat_fields_anthropic_cannot_take(fields: dict[str, Any], field: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], **fields}
    with pytest.raises(UntranslatableError) as caught:
        chat_to_anthropic(body)
    assert caught.value.field == field


def test_a_request_without_max_tokens_gets_the_default() -> None:
    out = chat_to_anthropic({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert out["max_tokens"] == 4096


def test_responses_reach_anthropic_through_chat() -> None:
    out = translate_request(
        {"model": "m", "input": "hi", "instructions": "s"}, "responses", "anthropic"
    )
    assert out == {
        "model": "m",
        "system": "s",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": 4096,
    }


def test_upstream_api_prefers_the_routes_own_then_chat_then_anthropic() -> None:
    assert upstream_api("anthropic", ("chat", "anthropic")) == "anthropic"
    assert upstream_api("anthropic", ("chat", "responses")) == "chat"
    assert upstream_api("responses", ("anthropic",)) == "anthropic"
    assert upstream_api("anthropic", ("responses",)) is None


def test_a_plan_leaves_out_upstreams_that_cannot_take_the_request() -> None:
    claude = Upstream("claude", "http://a.test", apis=("anthropic",))
    compatible = Upstream("compatible", "http://b.test/v1", apis=("chat",))
    search: Any = [{"type": "web_search_20250305", "name": "web_search"}]
    plan = plan_calls([claude, compatible], "anthropic", anthropic_request(tools=search))
    assert plan.upstreams == (claude,)  # the chat upstream cannot run Anthropic's server tool
    assert plan.calls["claude"].api == "anthropic"
    with pytest.raises(UntranslatableError) as caught:
        plan_calls([compatible], "anthropic", anthropic_request(tools=search))
    assert caught.value.field == "tools[0]"
    both = plan_calls([claude, compatible], "anthropic", anthropic_request())
    assert [both.calls[u.name].api for u in both.upstreams] == ["anthropic", "chat"]
    assert both.calls["compatible"].body["stream_options"] == {"include_usage": True}
    assert not both.native


def test_tools_for_the_assembler() -> None:
    tools: Any = [
        {"name": "f", "input_schema": {"type": "object"}},
        {"type": "web_search_20250305", "name": "web_search"},
    ]
    assert tools_for("anthropic", {"tools": tools}) == {"f": {"type": "object"}}
    assert tools_for("responses", {"tools": tools}) is tools
