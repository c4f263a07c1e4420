"""The mock continues a prefilled answer from where it was cut, through the ``openai`` SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from pipeline.apps.builtin_model import MockServer
from pipeline.apps.builtin_model.answer_script import MockScript
from pipeline.apps.builtin_model.prefill import Prefill, continue_answer, find_prefill

ANSWER = "The quick brown fox jumps over the lazy dog."
QUESTION: Any = {"role": "user", "content": "Tell me a pangram"}


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    with MockServer() as running:
        yield running


@pytest.fixture
async def client(server: MockServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as c:
        yield c


async def text_of(client: AsyncOpenAI, messages: list[Any], mock: dict[str, Any]) -> str:
    parts: list[str] = []
    stream = await client.chat.completions.create(
        model="m", messages=messages, stream=True, extra_body={"mock": mock}
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts)


@pytest.mark.parametrize("cut", ["drop", "error", "stall"])
async def test_a_cut_answer_continues_after_a_prefix_message(client: AsyncOpenAI, cut: str) -> None:
    """The first request is cut after 4 tokens; the second one, prefilled, says the rest."""
    key = f"prefix-{cut}"
    faults: dict[str, Any] = {
        "drop": {"drop_after": 4},
        "error": {"error_after": 4},
        "stall": {"stall": 0.2, "stall_after": 4},
    }
    mock = {"text": ANSWER, "fail_first": 1, "fault_key": key, **faults[cut]}
    parts: list[str] = []
    stream = await client.chat.completions.create(
        model="m", messages=[QUESTION], stream=True, extra_body={"mock": mock}
    )
    if cut == "stall":  # a stall only delays: read what came before it
        async for chunk in stream:
            parts.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
            if len("".join(parts).split()) == 4:
                break
        await stream.close()
    else:
        with pytest.raises(openai.APIError):
            async for chunk in stream:
                parts.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    head = "".join(parts)
    assert head == "The quick brown fox"
    prefix = {"role": "assistant", "content": head, "prefix": True}
    rest = await text_of(client, [QUESTION, prefix], mock)
    assert head + rest == ANSWER


async def test_a_prefix_cut_inside_a_word_continues_inside_it(client: AsyncOpenAI) -> None:
    prefix = {"role": "assistant", "content": "The quick br", "prefix": True}
    assert await text_of(client, [QUESTION, prefix], {"text": ANSWER}) == "own fox jumps over" + (
        " the lazy dog."
    )


@pytest.mark.parametrize("overlap", [0, 1, 3])
async def test_an_instruction_continues_repeating_the_last_words(
    client: AsyncOpenAI, overlap: int
) -> None:
    messages = [
        QUESTION,
        {"role": "assistant", "content": "The quick brown fox"},
        {"role": "user", "content": "Go on."},
    ]
    rest = await text_of(client, messages, {"text": ANSWER, "continue_overlap": overlap})
    repeated = {0: "", 1: "fox", 3: "quick brown fox"}[overlap]
    assert rest == repeated + " jumps over the lazy dog."


async def test_an_ordinary_conversation_is_not_a_continuation(client: AsyncOpenAI) -> None:
    """A whole earlier answer is not the start of this one: the mock answers in full."""
    messages = [
        QUESTION,
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "Again"},
    ]
    assert await text_of(client, messages, {"text": ANSWER}) == ANSWER
    default = await text_of(client, messages, {})
    assert '"Again"' in default  # the default answer quotes the last question


async def test_the_default_answer_continues_for_the_question_before_the_prefill(
    client: AsyncOpenAI,
) -> None:
    whole = await text_of(client, [QUESTION], {})
    head = whole[:30]
    messages = [QUESTION, {"role": "assistant", "content": head}, {"role": "user", "content": "."}]
    assert head + await text_of(client, messages, {}) == whole


async def test_tool_calls_are_sent_again_whole(client: AsyncOpenAI) -> None:
    args = json.dumps({"city": "Paris"})
    mock = {"text": "Let me look.", "tool_calls": [{"name": "weather", "arguments": args}]}
    prefix: Any = {"role": "assistant", "content": "Let me", "prefix": True}
    async with client.chat.completions.stream(
        model="m", messages=[QUESTION, prefix], extra_body={"mock": mock}
    ) as stream:
        final = await stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == " look."
    assert message.tool_calls is not None
    assert [(c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("weather", args)
    ]


def test_find_prefill_rules() -> None:
    assert find_prefill({"messages": [QUESTION]}) is None
    assert find_prefill({"messages": [QUESTION, {"role": "assistant", "content": "x"}]}) == (
        Prefill("x", True, "Tell me a pangram")
    )
    empty = [QUESTION, {"role": "assistant", "content": ""}, {"role": "user", "content": "go"}]
    assert find_prefill({"messages": empty}) is None
    answer = MockScript(text="a b c").answer(None)
    assert continue_answer(answer, Prefill("a x", False, None)) is None
    continued = continue_answer(answer, Prefill("a x", True, None))
    assert continued is not None and "".join(continued.text or ()) == "b c"  # after "a "
