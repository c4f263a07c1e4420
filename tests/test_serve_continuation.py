"""Continuation after the first token through ``rxllm serve``: real process, sockets, clients.

``rxllm serve --config`` with ``continue_after_first_token = true`` in front
of the built-in model (in this test process), whose first request of each
test is cut (``fail_first = 1``) by a dropped connection, a stall (the
server's idle timeout ends it) or an error event. Each dialect's client must
end with exactly the uncut answer: the ``openai`` SDK (Chat Completions
chunks), rxllm's own events, and the Vercel AI SDK UI message stream.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from httpx_sse import aconnect_sse
from openai import AsyncOpenAI

from pipeline.apps.builtin_model import MockScript, MockServer, ToolCall
from tests.serving import ServeProcess

pytestmark = pytest.mark.slow  # an `rxllm serve` process per module

ANSWER = (
    "Reactive streams let a consumer pull what it can take, so a fast producer "
    "never floods a slow reader, and every stream ends with one terminal signal."
)
HEAD = "Reactive streams let a consumer pull what it can take,"  # 10 tokens
MESSAGES: list[Any] = [{"role": "user", "content": "Explain reactive streams"}]
CUTS: dict[str, dict[str, Any]] = {
    "drop": {"drop_after": 10},
    "stall": {"stall": 30, "stall_after": 10},
    "error": {"error_after": 10},
}
ARGS = json.dumps({"city": "Paris", "unit": "celsius", "days": 3})


@pytest.fixture(scope="module")
def model() -> Iterator[MockServer]:
    with MockServer(models=("mock-model",)) as server:
        yield server


@pytest.fixture(scope="module")
def served(model: MockServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """Two upstreams on the one model: "words" (instruction), "exact" (prefix)."""
    tmp = tmp_path_factory.mktemp("continue")
    config = tmp / "upstreams.toml"
    config.write_text(
        f"""
[failover]
retries = 1
backoff = 0.01
idle_timeout = 1.0
continue_after_first_token = true

[[upstreams]]
name = "words"
base_url = "{model.base_url}"
prefill = "instruction"

[[upstreams]]
name = "exact"
base_url = "{model.base_url}"
prefill = "prefix"
"""
    )
    db = f"sqlite+aiosqlite:///{tmp / 'transcripts.db'}"
    args = ["--config", str(config), "--model", "mock-model", "--db", db]
    with ServeProcess(*args, log_path=tmp / "serve.log") as proc:
        yield proc


@pytest.fixture
async def http(served: ServeProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        yield client


def cut_once(model: MockServer, cut: str, **fields: Any) -> None:
    """The model's next request is cut; the ones after it answer whole.

    Asked to continue by an instruction, it says the last 3 words again.
    """
    script = {"text": ANSWER, "continue_overlap": 3, **CUTS[cut], **fields}
    model.script = MockScript(fail_first=1, fault_key=uuid.uuid4().hex, **script)


async def openai_text(served: ServeProcess) -> tuple[str, Any]:
    async with (
        AsyncOpenAI(base_url=served.base_url, api_key="k", max_retries=0) as client,
        client.chat.completions.stream(
            model="mock-model", messages=MESSAGES, stream_options={"include_usage": True}
        ) as stream,
    ):
        final = await stream.get_final_completion()
    return final.choices[0].message.content or "", final


async def rxllm_events(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    started = await http.post("/v1/streams", json={"messages": MESSAGES})
    assert started.status_code == 201, started.text
    stream_id = started.json()["id"]
    out: list[dict[str, Any]] = []
    async with aconnect_sse(http, "GET", f"/v1/streams/{stream_id}/events") as source:
        async for sse in source.aiter_sse():
            out.append(json.loads(sse.data))
    return out


async def vercel_parts(http: httpx.AsyncClient) -> list[Any]:
    parts: list[Any] = []
    async with aconnect_sse(http, "POST", "/api/chat", json={"messages": MESSAGES}) as source:
        async for sse in source.aiter_sse():
            parts.append(sse.data if sse.data == "[DONE]" else json.loads(sse.data))
    return parts


@pytest.mark.parametrize("cut", list(CUTS))
async def test_openai_client_reads_the_uncut_answer(
    served: ServeProcess, model: MockServer, cut: str
) -> None:
    cut_once(model, cut)
    text, final = await openai_text(served)
    assert text == ANSWER
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None
    assert final.usage.model_extra["rxllm"] == {"attempts": 2, "reported": 1}


@pytest.mark.parametrize("cut", list(CUTS))
async def test_rxllm_events_show_the_join(
    http: httpx.AsyncClient, model: MockServer, cut: str
) -> None:
    cut_once(model, cut)
    events = await rxllm_events(http)
    assert "".join(e["text"] for e in events if e["type"] == "text") == ANSWER
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events].count("started") == 1
    assert events[-1]["type"] == "finished"
    (moved,) = [e for e in events if e["type"] == "failover"]
    assert moved["after_first_token"] is True
    assert moved["offset"] == len(HEAD)
    # a stall moves on at once; the others go back to the same upstream after a backoff
    assert moved["to_upstream"] == ("exact" if cut == "stall" else "words")


@pytest.mark.parametrize("cut", list(CUTS))
async def test_vercel_client_reads_one_text_part(
    http: httpx.AsyncClient, model: MockServer, cut: str
) -> None:
    cut_once(model, cut)
    parts = await vercel_parts(http)
    assert parts[-1] == "[DONE]"
    kinds = [p["type"] for p in parts[:-1]]
    assert kinds[:3] == ["start", "start-step", "text-start"]
    assert kinds[-3:] == ["text-end", "finish-step", "finish"]
    assert set(kinds[3:-3]) == {"text-delta"}
    assert "".join(p["delta"] for p in parts[:-1] if p["type"] == "text-delta") == ANSWER


async def test_a_tool_call_cut_mid_arguments_reaches_the_client_as_one_call(
    served: ServeProcess, model: MockServer
) -> None:
    model.script = MockScript(
        text="Let me check.",
        tool_calls=[ToolCall(name="get_weather", arguments=ARGS)],
        fragment_size=8,
        drop_after=6,  # 3 text tokens, then inside the arguments
        fail_first=1,
        fault_key=uuid.uuid4().hex,
    )
    text, final = await openai_text(served)
    assert text == "Let me check."
    calls = final.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == json.loads(ARGS)


async def test_the_budget_ends_a_stream_that_keeps_failing_with_the_partial_kept(
    served: ServeProcess, http: httpx.AsyncClient, model: MockServer
) -> None:
    model.script = MockScript(text=ANSWER, drop_after=10, fail_first=99, fault_key=uuid.uuid4().hex)
    received: list[str] = []
    async with AsyncOpenAI(base_url=served.base_url, api_key="k", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="mock-model", messages=MESSAGES, stream=True
        )
        with pytest.raises(openai.APIError):
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
    text = "".join(received)
    assert text.startswith(HEAD) and len(text) > len(HEAD)  # both runs' text kept
    assert ANSWER.startswith(text)  # and nothing said twice

    events = await rxllm_events(http)
    assert events[-1]["type"] == "error" and events[-1]["after_first_token"] is True
    assert [e["type"] for e in events].count("failover") == 1  # max_continuations = 1


async def test_the_header_turns_it_off_for_one_request(
    http: httpx.AsyncClient, model: MockServer
) -> None:
    cut_once(model, "drop")
    body = {"model": "mock-model", "messages": MESSAGES, "stream": True}
    headers = {"x-rxllm-continue": "false"}
    async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        raw = "".join([line async for line in response.aiter_lines()])
    assert '"error"' in raw and "[DONE]" not in raw
    bad = await http.post("/v1/chat/completions", json=body, headers={"x-rxllm-continue": "maybe"})
    assert bad.status_code == 400 and "x-rxllm-continue" in bad.json()["error"]["message"]


async def test_the_store_keeps_both_runs_and_the_joined_message_and_metrics_count_it(
    served: ServeProcess, http: httpx.AsyncClient, model: MockServer
) -> None:
    cut_once(model, "drop")
    body = {"model": "mock-model", "messages": MESSAGES}
    answer = await http.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == ANSWER
    stream_id = answer.headers["x-rxllm-stream-id"]

    async def transcript(sid: str) -> dict[str, Any]:
        for _ in range(100):  # the store writes off the hot path
            found = await http.get(f"/v1/transcripts/{sid}")
            if found.status_code == 200 and found.json()["status"] != "running":
                result: dict[str, Any] = found.json()
                return result
            await http.get("/v1/models")
        raise AssertionError(f"transcript {sid} not stored")

    def text(item: dict[str, Any]) -> str:
        return "".join(e["text"] for e in item["events"] if e["type"] == "text")

    joined = await transcript(stream_id)
    first = await transcript(f"{stream_id}.1")
    second = await transcript(f"{stream_id}.2")
    assert text(joined) == ANSWER
    assert text(first) == HEAD and first["status"] == "error"
    words = HEAD.split()[-3:]  # said again by the model, trimmed at the seam
    assert text(second) == " ".join(words) + ANSWER[len(HEAD) :]
    assert second["status"] == "finished"
    assert second["request"]["messages"][-2]["content"] == HEAD
    metrics = (await http.get("/metrics")).text
    assert 'rxllm_continuations_total{reason="connection"}' in metrics


def test_config_rejects_an_unknown_prefill(tmp_path: Path) -> None:
    from pipeline.apps.server.config_file import load_config

    config = tmp_path / "bad.toml"
    config.write_text('[[upstreams]]\nname = "a"\nprefill = "guess"\n')
    with pytest.raises(ValueError, match="prefill"):
        load_config(config)


async def test_a_client_that_leaves_during_the_continuation_cancels_its_request(
    served: ServeProcess, http: httpx.AsyncClient, model: MockServer
) -> None:
    """The model is slow (50 ms a token): the client leaves once the continuation has begun."""
    model.script = MockScript(
        text=ANSWER, interval=0.05, drop_after=10, fail_first=1, fault_key=uuid.uuid4().hex
    )
    body = {"model": "mock-model", "messages": MESSAGES, "stream": True}
    received: list[str] = []
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        stream_id = response.headers["x-rxllm-stream-id"]
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"]
                received.append(delta.get("content") or "")
            if len("".join(received)) > len(HEAD) + 10:
                break  # the continuation is streaming: leave
    continuation = model.recorder.last_request
    assert continuation is not None and continuation.connection is not None
    await continuation.connection.wait_closed_async(timeout=10)  # rxllm hung up on it
    events = await stored_events(http, stream_id)
    assert events[-1]["type"] == "cancelled"
    assert [e["type"] for e in events].count("failover") == 1


async def stored_events(http: httpx.AsyncClient, stream_id: str) -> list[dict[str, Any]]:
    for _ in range(100):  # the store writes off the hot path
        found = await http.get(f"/v1/transcripts/{stream_id}")
        if found.status_code == 200 and found.json()["status"] != "running":
            events: list[dict[str, Any]] = found.json()["events"]
            return events
        await http.get("/v1/models")
    raise AssertionError(f"transcript {stream_id} not stored")
