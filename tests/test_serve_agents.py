"""Agent frameworks' tool loops through ``rxllm serve``, on the Responses and Anthropic routes.

``rxllm serve`` with no upstream runs the built-in model, which speaks all
three APIs and uses the tools a request offers: each framework runs its own
loop (a tool call, the tool's result sent back, a text answer using it)
through the processing layer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import agents
import pytest
from openai import AsyncOpenAI
from pydantic_ai import Agent
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.models.openai import OpenAIResponsesModel
from pydantic_ai.providers.anthropic import AnthropicProvider
from pydantic_ai.providers.openai import OpenAIProvider

from tests.serving import ServeProcess

pytestmark = pytest.mark.slow  # an `rxllm serve` process

QUESTION = "What is the weather in Paris?"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("serve-agents")
    with ServeProcess("--no-store", "--mock-rate", "0", log_path=tmp / "serve.log") as proc:
        yield proc


def weather(city: str, unit: str = "celsius") -> str:
    """Get the current weather of a city."""
    return json.dumps({"city": city, "temperature": 21, "unit": unit})


async def test_openai_agents_default_responses_model_with_a_tool(served: ServeProcess) -> None:
    agents.set_tracing_disabled(True)  # it would send traces to OpenAI
    seen: list[str] = []

    @agents.function_tool
    def get_weather(city: str, unit: str = "celsius") -> str:
        """Get the current weather of a city."""
        seen.append(city)
        return weather(city, unit)

    async with AsyncOpenAI(base_url=served.base_url, api_key="unused") as client:
        model = agents.OpenAIResponsesModel("gpt-4o-mini", client)  # the SDK's default API
        agent = agents.Agent(name="weather", tools=[get_weather], model=model)
        result = await agents.Runner.run(agent, QUESTION)
        assert '"temperature": 21' in result.final_output
        streamed = agents.Runner.run_streamed(agent, QUESTION)
        async for _ in streamed.stream_events():
            pass
        assert '"temperature": 21' in str(streamed.final_output)
    assert seen == ["Paris", "Paris"]


@pytest.mark.parametrize("api", ["responses", "anthropic"])
async def test_pydantic_ai_with_a_tool(served: ServeProcess, api: str) -> None:
    seen: list[str] = []
    if api == "responses":
        provider = OpenAIProvider(base_url=served.base_url, api_key="unused")
        model: OpenAIResponsesModel | AnthropicModel = OpenAIResponsesModel(
            "gpt-4o-mini", provider=provider
        )
    else:
        model = AnthropicModel(
            "claude-sonnet-5-5", provider=AnthropicProvider(base_url=served.url, api_key="unused")
        )
    agent = Agent(model)

    @agent.tool_plain
    def get_weather(city: str, unit: str = "celsius") -> str:
        """Get the current weather of a city."""
        seen.append(city)
        return weather(city, unit)

    result = await agent.run(QUESTION)
    assert '"temperature": 21' in result.output
    async with agent.run_stream(QUESTION) as stream:
        text = await stream.get_output()
    assert '"temperature": 21' in text
    assert seen == ["Paris", "Paris"]
