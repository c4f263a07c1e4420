"""``useChat`` end to end: the ``ai`` package's own chat against ``rxllm serve``.

``tests/js/use-chat.mjs`` runs ``AbstractChat`` (the class React's ``useChat``
wraps) with ``DefaultChatTransport`` in node, as a page would, against a
server whose upstream is the built-in model and whose config declares a
``get_weather`` tool:

* a two-step tool loop: the model calls the tool, ``onToolCall`` answers with
  ``addToolOutput``, ``sendAutomaticallyWhen`` sends it back, the model
  answers with text that uses the output;
* a page reload mid-answer: the new page's ``resumeStream()`` gets the whole
  answer (``GET /api/chat/{id}/stream``) while the upstream request goes on;
* a stop: ``POST /api/chat/{id}/stop`` closes the upstream request, the chat
  keeps what arrived, and a reload finds nothing to resume (204).

Needs Node.js and ``npm ci`` in ``tests/js`` (``scripts/install-test-deps.sh``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.apps.builtin_model import MockScript, MockServer
from tests.serving import ROOT, ServeProcess
from tests.test_vercel_ai import require

pytestmark = pytest.mark.services  # needs node and the `ai` npm package (tests/js)

JS = ROOT / "tests" / "js"
WORDS = " ".join(f"word{i}" for i in range(60))
TOOLS_TOML = """
[[tools]]
name = "get_weather"
description = "The current weather of a city"
[tools.parameters]
type = "object"
required = ["city", "unit"]
properties.city = { type = "string" }
properties.unit = { type = "string", enum = ["celsius", "fahrenheit"] }
"""


@pytest.fixture(scope="module")
def node() -> str:
    binary = shutil.which("node")
    require("node", binary)
    assert binary is not None
    require("tests/js/node_modules (npm ci in tests/js)", (JS / "node_modules/ai").is_dir())
    return binary


@pytest.fixture(scope="module")
def model() -> Iterator[MockServer]:
    with MockServer() as server:
        yield server


@pytest.fixture(scope="module")
def served(
    node: str, model: MockServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("serve-use-chat")
    config = tmp / "rxllm.toml"
    config.write_text(
        f'[[upstreams]]\nname = "builtin"\nbase_url = "{model.base_url}"\n' + TOOLS_TOML
    )
    args = ["--config", str(config), "--model", "m", "--no-store"]
    with ServeProcess(*args, log_path=tmp / "serve.log") as proc:
        yield proc


def run_chat(node: str, served: ServeProcess, scenario: str) -> Any:
    done = subprocess.run(
        [node, "use-chat.mjs", served.url, scenario, "What is the weather in Paris?"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, f"use-chat.mjs {scenario} failed:\n{done.stderr}"
    result = json.loads(done.stdout)
    assert result["errors"] == []
    return result


def chat_requests(model: MockServer) -> list[Any]:
    return [r for r in model.recorder.requests if r.path == "/v1/chat/completions"]


def test_a_two_step_tool_loop(node: str, served: ServeProcess, model: MockServer) -> None:
    model.script = MockScript()  # the model uses the tools it is offered
    before = len(chat_requests(model))
    result = run_chat(node, served, "tools")
    assert [r["method"] for r in result["requests"]] == ["POST", "POST"]
    (call,) = result["calls"]
    assert call["toolName"] == "get_weather"
    assert call["input"]["city"] == "Paris" and call["input"]["unit"] in ("celsius", "fahrenheit")
    _, assistant = result["messages"]
    parts = assistant["parts"]
    assert [p["type"] for p in parts] == ["step-start", "tool-get_weather", "step-start", "text"]
    assert parts[1]["state"] == "output-available"
    assert '"temperature":21' in parts[3]["text"]  # the answer used the tool's output
    first, second = chat_requests(model)[before:]
    offered = first.body["tools"]
    assert [t["function"]["name"] for t in offered] == ["get_weather"]  # the config's tools
    # The second request carries the call and its output, as convertToModelMessages makes them.
    assert second.body["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": call["toolCallId"],
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": json.dumps(call["input"], separators=(",", ":")),
                    },
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": call["toolCallId"],
            "content": json.dumps(
                {"city": "Paris", "temperature": 21, "unit": "celsius"}, separators=(",", ":")
            ),
        },
    ]


def test_a_reload_mid_answer_resumes_the_whole_answer(
    node: str, served: ServeProcess, model: MockServer
) -> None:
    model.script = MockScript(text=WORDS, interval=0.03)
    before = len(chat_requests(model))
    result = run_chat(node, served, "resume")
    assert [(r["method"], r["status"]) for r in result["requests"]] == [
        ("POST", 200),
        ("GET", 200),
    ]
    assert result["requests"][1]["url"].endswith("/api/chat/chat-resume/stream")
    assert result["partial"] and len(result["partial"]) < len(WORDS)
    user, assistant = result["messages"]
    assert user["role"] == "user" and assistant["role"] == "assistant"
    texts = [p["text"] for p in assistant["parts"] if p["type"] == "text"]
    assert texts == [WORDS]
    (upstream,) = chat_requests(model)[before:]  # one upstream request, never cut
    model.recorder.wait_for(lambda: upstream.outcome)
    assert upstream.outcome == "completed"


def test_stop_cancels_the_upstream_and_nothing_is_left_to_resume(
    node: str, served: ServeProcess, model: MockServer
) -> None:
    model.script = MockScript(text=WORDS, interval=0.03)
    before = len(chat_requests(model))
    result = run_chat(node, served, "stop")
    assert result["stopped"] == {"id": "chat-stop", "stopped": True}
    assert result["text"] and WORDS.startswith(result["text"]) and result["text"] != WORDS
    assert result["status"] == "ready"
    assert [(r["method"], r["status"]) for r in result["requests"]][-1] == ("GET", 204)
    assert result["resumedMessages"] == 2  # the resume changed nothing
    (upstream,) = chat_requests(model)[before:]
    model.recorder.wait_for(lambda: upstream.outcome)
    assert upstream.outcome == "client_gone"  # rxllm closed the upstream request


def test_resume_and_stop_of_a_chat_with_no_running_answer(served: ServeProcess) -> None:
    import httpx

    with httpx.Client(base_url=served.url) as client:
        assert client.get("/api/chat/never-seen/stream").status_code == 204
        stop = client.post("/api/chat/never-seen/stop")
        assert (stop.status_code, stop.json()) == (200, {"id": "never-seen", "stopped": False})


def test_a_ui_message_that_cannot_be_sent_is_a_400(served: ServeProcess, tmp_path: Path) -> None:
    import httpx

    body = {
        "id": "chat-bad",
        "messages": [
            {
                "id": "u1",
                "role": "user",
                "parts": [
                    {"type": "file", "mediaType": "video/mp4", "url": "https://x.test/a.mp4"}
                ],
            }
        ],
    }
    response = httpx.post(f"{served.url}/api/chat", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages.0.parts.0" and "video/mp4" in error["message"]
