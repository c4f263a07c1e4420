"""``useChat``'s UI messages to Chat Completions messages, as the AI SDK converts them.

The expected messages are what ``convertToModelMessages`` then the SDK's
OpenAI chat provider make of the same UI messages (``ai`` 6): steps split at
``step-start``, tool calls with their input as JSON text, one ``tool``
message per outcome (output, error text, denial), reasoning not sent.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.apps.server.api_errors import ApiError
from pipeline.apps.server.ui_messages import ui_to_chat_messages

WAV = "data:audio/wav;base64,UklGRg=="
PDF = "data:application/pdf;base64,JVBERi0="


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def test_system_and_user_messages() -> None:
    messages: list[dict[str, Any]] = [
        {
            "id": "s",
            "role": "system",
            "parts": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
        },
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]},
        {
            "id": "u2",
            "role": "user",
            "parts": [
                {"type": "text", "text": "what is this?"},
                {"type": "file", "mediaType": "image/png", "url": "https://x.test/a.png"},
                {"type": "file", "mediaType": "audio/wav", "url": WAV},
                {"type": "file", "mediaType": "application/pdf", "url": PDF, "filename": "a.pdf"},
                {"type": "data-weather", "data": {"ignored": True}},
            ],
        },
    ]
    assert ui_to_chat_messages(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                {"type": "file", "file": {"filename": "a.pdf", "file_data": PDF}},
            ],
        },
    ]


def test_assistant_steps_with_tool_parts_in_every_state() -> None:
    assistant = {
        "id": "a1",
        "role": "assistant",
        "parts": [
            {"type": "step-start"},
            {"type": "reasoning", "text": "Let me look.", "state": "done"},
            {"type": "text", "text": "Looking it up.", "state": "done"},
            {
                "type": "tool-get_weather",
                "toolCallId": "c1",
                "state": "output-available",
                "input": {"city": "Paris"},
                "output": {"temperature": 21},
            },
            {
                "type": "tool-get_time",
                "toolCallId": "c2",
                "state": "output-error",
                "rawInput": {"tz": "Mars/Base"},
                "errorText": "unknown time zone",
            },
            {
                "type": "dynamic-tool",
                "toolName": "lookup",
                "toolCallId": "c3",
                "state": "output-available",
                "input": {},
                "output": "found it",
            },
            {
                "type": "tool-delete",
                "toolCallId": "c4",
                "state": "output-denied",
                "input": {},
                "approval": {"id": "p1", "approved": False, "reason": "not allowed"},
            },
            {
                "type": "tool-search",
                "toolCallId": "c5",
                "state": "output-available",
                "input": {"q": "x"},
                "output": {},
                "providerExecuted": True,
            },
            {"type": "step-start"},
            {
                "type": "tool-get_weather",
                "toolCallId": "c6",
                "state": "input-available",
                "input": {"city": "Lyon"},
            },
            {
                "type": "tool-get_weather",
                "toolCallId": "c7",
                "state": "input-streaming",
                "input": {"ci": None},
            },
            {"type": "step-start"},
            {"type": "text", "text": "Done.", "state": "done"},
        ],
    }

    def call(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
        return {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": compact(arguments)},
        }

    assert ui_to_chat_messages([assistant]) == [
        {
            "role": "assistant",
            "content": "Looking it up.",
            "tool_calls": [
                call("c1", "get_weather", {"city": "Paris"}),
                call("c2", "get_time", {"tz": "Mars/Base"}),
                call("c3", "lookup", {}),
                call("c4", "delete", {}),
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"temperature":21}'},
        {"role": "tool", "tool_call_id": "c2", "content": "unknown time zone"},
        {"role": "tool", "tool_call_id": "c3", "content": "found it"},
        {"role": "tool", "tool_call_id": "c4", "content": "not allowed"},
        # a call whose result the page has not added yet is sent without one
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [call("c6", "get_weather", {"city": "Lyon"})],
        },
        {"role": "assistant", "content": "Done."},
    ]


def test_plain_content_messages_pass_as_they_are() -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert ui_to_chat_messages(messages) == messages


@pytest.mark.parametrize(
    ("message", "param", "words"),
    [
        ({"role": "tool", "parts": []}, "messages.0.role", "role"),
        (
            {"role": "user", "parts": [{"type": "text", "text": 5}]},
            "messages.0.parts.0.text",
            "string",
        ),
        ({"role": "user", "parts": ["hi"]}, "messages.0.parts.0", "object"),
        (
            {
                "role": "user",
                "parts": [
                    {"type": "file", "mediaType": "audio/wav", "url": "https://x.test/a.wav"}
                ],
            },
            "messages.0.parts.0",
            "audio/wav",
        ),
        (
            {
                "role": "assistant",
                "parts": [
                    {"type": "file", "mediaType": "image/png", "url": "https://x.test/a.png"}
                ],
            },
            "messages.0.parts.0",
            "assistant",
        ),
        (
            {"role": "assistant", "parts": [{"type": "tool-x", "state": "input-available"}]},
            "messages.0.parts.0",
            "toolCallId",
        ),
        ({"role": "user"}, "messages.0", "parts"),
    ],
)
def test_what_cannot_be_sent_is_a_400_naming_it(
    message: dict[str, Any], param: str, words: str
) -> None:
    with pytest.raises(ApiError) as caught:
        ui_to_chat_messages([message])
    assert caught.value.status == 400
    assert caught.value.param == param
    assert words in caught.value.message
