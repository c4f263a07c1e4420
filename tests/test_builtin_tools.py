"""The built-in model uses the tools a request offers, as a model would.

Arguments are checked with ``jsonschema`` against the tool's own schema;
the tool loops run the real ``openai`` SDK and the openai-agents SDK over
loopback HTTP against the built-in model, and through ``rxllm serve``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import agents
import anthropic
import pytest
from jsonschema import validators
from openai import AsyncOpenAI, OpenAI

from pipeline.apps.builtin_model import MockServer
from pipeline.apps.builtin_model.schema_sample import sample_json
from pipeline.apps.builtin_model.tool_use import plan_tools, read_turn, tool_specs
from tests.serving import ServeProcess

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
]

SCHEMAS: list[dict[str, Any]] = [
    WEATHER,
    {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 3, "maximum": 7},
            "x": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "m": {"type": "number", "multipleOf": 0.1, "minimum": 1, "maximum": 2},
            "k": {"type": "integer", "multipleOf": 5, "minimum": 11},
            "neg": {"type": ["integer", "null"], "maximum": -5},
        },
        "required": ["n", "x", "m", "k", "neg"],
    },
    {
        "type": "object",
        "properties": {
            "tags": {
                "type": "array",
                "items": {"enum": ["a", "b", "c"]},
                "minItems": 2,
                "maxItems": 3,
                "uniqueItems": True,
            },
            "point": {
                "type": "object",
                "properties": {
                    "lat": {"type": "number", "minimum": -90, "maximum": 90},
                    "lon": {"type": "number", "minimum": -180, "maximum": 180},
                },
                "required": ["lat", "lon"],
                "additionalProperties": False,
            },
        },
        "required": ["tags", "point"],
    },
    {  # recursive, as pydantic writes a tree
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 2, "maxLength": 8},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
                "required": ["name", "children"],
            }
        },
        "type": "object",
        "properties": {"root": {"$ref": "#/$defs/Node"}},
        "required": ["root"],
    },
    {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{3}-\\d{4}$"},
            "email": {"type": "string", "format": "email"},
            "when": {"type": "string", "format": "date-time"},
            "maybe": {"anyOf": [{"type": "string", "minLength": 5}, {"type": "null"}]},
            "padded": {"type": "string", "minLength": 12, "maxLength": 14},
            "one": {"oneOf": [{"type": "integer"}, {"type": "boolean"}]},
            "both": {
                "allOf": [
                    {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
                    {"properties": {"y": {"type": "boolean"}}, "required": ["y"]},
                ]
            },
            "fixed": {"const": "v1"},
            "pair": {
                "type": "array",
                "prefixItems": [{"type": "string"}, {"type": "integer"}],
                "items": False,
                "minItems": 2,
            },
        },
        "required": ["code", "email", "when", "maybe", "padded", "one", "both", "fixed", "pair"],
    },
    {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 2},
    {"type": "object", "properties": {}},
]


def check(schema: dict[str, Any], value: Any) -> None:
    cls = validators.validator_for(schema)
    errors = [e.message for e in cls(schema, format_checker=cls.FORMAT_CHECKER).iter_errors(value)]
    assert not errors, (json.dumps(value), errors)


@pytest.mark.parametrize("schema", SCHEMAS, ids=range(len(SCHEMAS)))
def test_sampled_arguments_are_valid_for_their_schema(schema: dict[str, Any]) -> None:
    for seed in range(40):
        check(schema, sample_json(schema, seed=seed, hints=["Paris", "Lyon"]))
        # numbers from a prompt are taken only where they fit
        check(schema, sample_json(schema, seed=seed, numbers=[5, -3, 0.5, 1000, 12]))


def test_samples_are_deterministic_per_seed_and_take_the_prompts_words() -> None:
    assert sample_json(SCHEMAS[1], seed=7) == sample_json(SCHEMAS[1], seed=7)
    assert len({json.dumps(sample_json(SCHEMAS[1], seed=s)) for s in range(10)}) > 1
    assert sample_json(WEATHER, seed=1, hints=["Paris"])["city"] == "Paris"


def chat(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": prompt}], **extra}


def test_the_tool_the_prompt_names_is_called_else_the_first() -> None:
    plan = plan_tools(chat("What time is it in Tokyo?", tools=TOOLS), "m")
    assert plan is not None and [name for name, _ in plan.calls] == ["get_time"]
    plan = plan_tools(chat("Hello there", tools=TOOLS), "m")
    assert plan is not None and [name for name, _ in plan.calls] == ["get_weather"]
    _, arguments = plan.calls[0]
    check(WEATHER, json.loads(arguments))


def test_tools_named_together_are_called_in_parallel_unless_that_is_off() -> None:
    prompt = "What is the weather in Paris, and the time?"
    plan = plan_tools(chat(prompt, tools=TOOLS), "m")
    assert plan is not None and [n for n, _ in plan.calls] == ["get_weather", "get_time"]
    assert json.loads(plan.calls[0][1])["city"] == "Paris"
    one = plan_tools(chat(prompt, tools=TOOLS, parallel_tool_calls=False), "m")
    assert one is not None and [n for n, _ in one.calls] == ["get_weather"]


def test_tool_choice_is_honoured() -> None:
    assert plan_tools(chat("weather?", tools=TOOLS, tool_choice="none"), "m") is None
    forced = {"type": "function", "function": {"name": "get_time"}}
    plan = plan_tools(chat("weather?", tools=TOOLS, tool_choice=forced), "m")
    assert plan is not None and [n for n, _ in plan.calls] == ["get_time"]


def test_results_are_answered_with_text_that_uses_them_and_a_sequential_loop_ends() -> None:
    prompt = "What is the weather in Paris, and the time?"
    messages: list[Any] = [{"role": "user", "content": prompt}]
    body = {"model": "m", "messages": messages, "tools": TOOLS, "parallel_tool_calls": False}
    called = []
    for step in range(5):
        plan = plan_tools(body, "gpt-x")
        assert plan is not None
        if not plan.calls:
            break
        (name, arguments), *_ = plan.calls
        called.append(name)
        call = {
            "id": f"c{step}",
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": f"c{step}", "content": f"{name} says 42"})
    assert called == ["get_weather", "get_time"]
    assert plan is not None and plan.text is not None
    assert "get_weather says 42" in plan.text and "get_time says 42" in plan.text
    assert "gpt-x" in plan.text


def test_the_responses_and_anthropic_shapes_are_read() -> None:
    flat = [{"type": "function", "name": "lookup", "parameters": TIME}]
    anthropic = [{"name": "lookup", "input_schema": TIME}]
    assert [s.name for s in tool_specs(flat)] == [s.name for s in tool_specs(anthropic)]
    responses = read_turn(
        {
            "input": [
                {"role": "user", "content": "look it up"},
                {"type": "function_call", "call_id": "a", "name": "lookup", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "a", "output": "found"},
            ]
        }
    )
    assert responses.prompt == "look it up" and responses.called == ("lookup",)
    assert [(r.name, r.content) for r in responses.results] == [("lookup", "found")]
    messages = read_turn(
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "look it up"}]},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "lookup"}],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t", "content": "gone"}],
                },
            ]
        }
    )
    assert messages.prompt == "look it up"
    assert [(r.name, r.content) for r in messages.results] == [("lookup", "gone")]


# -- over real sockets ---------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> Iterator[MockServer]:
    with MockServer() as server:
        yield server


def test_the_openai_sdk_gets_valid_tool_calls_then_a_text_answer(model: MockServer) -> None:
    client = OpenAI(base_url=model.base_url, api_key="unused")
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model="any-name", messages=messages, tools=TOOLS)
    assert first.model == "any-name"
    assert first.choices[0].finish_reason == "tool_calls"
    calls = first.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather"]  # type: ignore[union-attr]
    arguments = json.loads(calls[0].function.arguments)  # type: ignore[union-attr]
    check(WEATHER, arguments)
    assert arguments["city"] == "Paris"
    again = client.chat.completions.create(model="any-name", messages=messages, tools=TOOLS)
    same = again.choices[0].message.tool_calls or []
    assert [c.function for c in same] == [c.function for c in calls]  # type: ignore[union-attr]
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": '{"temperature": 21}'},
    ]
    second = client.chat.completions.create(model="any-name", messages=messages, tools=TOOLS)
    text = second.choices[0].message.content or ""
    assert second.choices[0].finish_reason == "stop"
    assert '{"temperature": 21}' in text


def test_streamed_and_responses_api_tool_calls(model: MockServer) -> None:
    client = OpenAI(base_url=model.base_url, api_key="unused")
    messages: list[Any] = [{"role": "user", "content": "What time is it?"}]
    stream = client.chat.completions.create(model="m", messages=messages, tools=TOOLS, stream=True)
    fragments = [
        c.choices[0].delta.tool_calls[0].function.arguments or ""  # type: ignore[union-attr]
        for c in stream
        if c.choices and c.choices[0].delta.tool_calls
    ]
    check(TIME, json.loads("".join(fragments)))
    flat = [{"type": "function", "name": "get_time", "parameters": TIME}]
    response = client.responses.create(model="m", input="What time is it?", tools=flat)  # type: ignore[arg-type]
    call = response.output[0]
    assert call.type == "function_call" and call.name == "get_time"
    check(TIME, json.loads(call.arguments))


def test_the_default_answer_names_the_model_and_asks_for_no_key(model: MockServer) -> None:
    client = OpenAI(base_url=model.base_url, api_key="unused")
    answer = client.chat.completions.create(
        model="llama-3-70b", messages=[{"role": "user", "content": "hi"}]
    )
    text = answer.choices[0].message.content or ""
    assert "llama-3-70b" in text
    assert "API key" not in text


async def test_an_agent_frameworks_tool_loop_runs_against_it(model: MockServer) -> None:
    agents.set_tracing_disabled(True)  # it would send traces to OpenAI
    seen: list[str] = []

    @agents.function_tool
    def get_weather(city: str, unit: str = "celsius") -> str:
        """Get the current weather of a city."""
        seen.append(city)
        return json.dumps({"city": city, "temperature": 21, "unit": unit})

    client = AsyncOpenAI(base_url=model.base_url, api_key="unused")
    for chosen in (
        agents.OpenAIResponsesModel("gpt-4o-mini", client),  # the SDK's default API
        agents.OpenAIChatCompletionsModel("gpt-4o-mini", client),
    ):
        agent = agents.Agent(name="weather", tools=[get_weather], model=chosen)
        result = await agents.Runner.run(agent, "What is the weather in Paris?")
        assert '"temperature": 21' in result.final_output
        assert seen.pop() == "Paris"


@pytest.mark.slow  # an `rxllm serve` process
def test_serve_with_no_upstream_answers_any_model_name_and_calls_tools(tmp_path: Path) -> None:
    with ServeProcess("--no-store", "--mock-rate", "0", log_path=tmp_path / "serve.log") as proc:
        client = OpenAI(base_url=proc.base_url, api_key="unused")
        answer = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "What is the weather in Paris?"}]
        )
        assert answer.model == "gpt-4o"
        assert "gpt-4o" in (answer.choices[0].message.content or "")
        called = client.chat.completions.create(
            model="claude-sonnet",
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=TOOLS,
        )
        calls = called.choices[0].message.tool_calls or []
        assert [c.function.name for c in calls] == ["get_weather"]  # type: ignore[union-attr]
        check(WEATHER, json.loads(calls[0].function.arguments))  # type: ignore[union-attr]


def test_the_anthropic_sdk_gets_a_tool_use_block_then_text(model: MockServer) -> None:
    client = anthropic.Anthropic(base_url=model.url, api_key="unused")
    tools: list[Any] = [{"name": "get_weather", "description": "weather", "input_schema": WEATHER}]
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.messages.create(model="claude-x", max_tokens=100, messages=messages, tools=tools)
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    check(WEATHER, use.input)
    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21C"}],
        },
    ]
    second = client.messages.create(
        model="claude-x", max_tokens=100, messages=messages, tools=tools
    )
    assert second.stop_reason == "end_turn"
    assert "21C" in "".join(b.text for b in second.content if b.type == "text")


def test_the_prompts_numbers_become_the_numbers_where_they_fit() -> None:
    add = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "number", "maximum": 10}},
        "required": ["a", "b"],
    }
    tools = [{"type": "function", "function": {"name": "add", "parameters": add}}]
    plan = plan_tools(chat("What is 2 plus 3.5? Use add.", tools=tools), "m")
    assert plan is not None and json.loads(plan.calls[0][1]) == {"a": 2, "b": 3.5}
    # 40 is over b's maximum: that number is not taken, a valid one is made instead
    plan = plan_tools(chat("add 7 and 40", tools=tools), "m")
    assert plan is not None
    arguments = json.loads(plan.calls[0][1])
    check(add, arguments)
    assert arguments["a"] == 7 and arguments["b"] != 40
