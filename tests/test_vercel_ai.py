"""``POST /api/chat`` read by the Vercel AI SDK's own parser (the ``ai`` npm package).

``tests/js/read-ui-stream.mjs`` posts a ``useChat``-shaped body, parses the
response the way the SDK's ``DefaultChatTransport`` does
(``parseJsonEventStream`` with the strict ``uiMessageChunkSchema``: a part
the schema rejects fails the run) and rebuilds the assistant message with
``readUIMessageStream``. The tests compare that message with the upstream
mock's scripted answer: text and reasoning parts, tool parts (tool name,
input = the parsed arguments, state), and how the tool inputs streamed.

The ``ai`` version is pinned in ``tests/js/package.json`` (with its
lockfile). Needs Node.js and ``npm ci`` in ``tests/js``:
``scripts/install-test-deps.sh``. Skipped when missing, failed when the
``CI`` variable is set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.apps.builtin_model import MockScript, MockServer
from tests.serving import ROOT, ServeProcess

pytestmark = pytest.mark.services  # needs node and the `ai` npm package (tests/js)

JS = ROOT / "tests" / "js"
PROMPT = "What is the weather in Paris, and the time?"
TOOL_CALLS = [
    {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "unit": "celsius"})},
    {"name": "get_time", "arguments": json.dumps({"tz": "Europe/Paris"})},
]


def require(what: str, found: object) -> None:
    """Skip a test whose tool is missing; under ``CI`` fail it instead."""
    if found:
        return
    message = f"{what} is not installed: run scripts/install-test-deps.sh"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{message} (CI is set, so a missing tool fails)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def node() -> str:
    binary = shutil.which("node")
    require("node", binary)
    assert binary is not None
    require("tests/js/node_modules (npm ci in tests/js)", (JS / "node_modules/ai").is_dir())
    return binary


@pytest.fixture(scope="module")
def served(
    node: str, upstream: MockServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("serve-vercel")
    args = ["--upstream", upstream.base_url, "--model", "mock-model", "--no-store"]
    with ServeProcess(*args, log_path=tmp / "serve.log") as proc:
        yield proc


def read_ui_stream(
    node: str, served: ServeProcess, upstream: MockServer, script: MockScript
) -> Any:
    """Run the SDK's parser on ``/api/chat`` with ``script`` as the upstream's answer."""
    upstream.script = script  # /api/chat takes no "mock" field: set the mock's default
    done = subprocess.run(
        [node, "read-ui-stream.mjs", f"{served.url}/api/chat", PROMPT],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"read-ui-stream.mjs failed:\n{done.stderr}"
    result = json.loads(done.stdout)
    assert result["status"] == 200
    assert result["headers"]["x-vercel-ai-ui-message-stream"] == "v1"
    assert result["headers"]["content-type"].startswith("text/event-stream")
    assert result["chunks"][:2] == ["start", "start-step"]
    assert result["chunks"][-2:] == ["finish-step", "finish"]
    request = upstream.recorder.last_request
    assert request is not None
    assert request.body["messages"] == [{"role": "user", "content": PROMPT}]
    message = result["message"]
    assert message["role"] == "assistant"
    assert message["parts"][0] == {"type": "step-start"}
    return result


def test_text_and_reasoning_parts(node: str, served: ServeProcess, upstream: MockServer) -> None:
    script = MockScript(
        reasoning="The user wants a greeting.", text="Hello from rxllm, token by token!"
    )
    result = read_ui_stream(node, served, upstream, script)
    parts = result["message"]["parts"][1:]
    assert [(p["type"], p["text"], p["state"]) for p in parts] == [
        ("reasoning", "The user wants a greeting.", "done"),
        ("text", "Hello from rxllm, token by token!", "done"),
    ]
    assert result["chunks"].count("text-delta") > 1  # it streamed in pieces
    assert result["snapshots"] > 6


def test_parallel_tool_call_parts(node: str, served: ServeProcess, upstream: MockServer) -> None:
    script = MockScript.model_validate(
        {"text": "Let me look that up.", "tool_calls": TOOL_CALLS, "fragment_size": 4}
    )
    result = read_ui_stream(node, served, upstream, script)
    parts = result["message"]["parts"][1:]
    assert parts[0]["type"] == "text" and parts[0]["text"] == "Let me look that up."
    tools = parts[1:]
    assert [p["type"] for p in tools] == [f"tool-{c['name']}" for c in TOOL_CALLS]
    assert len({p["toolCallId"] for p in tools}) == len(TOOL_CALLS)
    for part, call in zip(tools, TOOL_CALLS, strict=True):
        final = json.loads(call["arguments"])
        assert part["state"] == "input-available"
        assert part["input"] == final
        assert result["toolStates"][part["toolCallId"]] == ["input-streaming", "input-available"]
        # The SDK showed the input assembling from its fragments before the final parse.
        partials = result["toolInputs"][part["toolCallId"]]
        assert len(partials) >= 2, partials
        for partial in partials:
            assert partial.keys() <= final.keys()
            for key, value in partial.items():
                assert str(final[key]).startswith(str(value)), (key, value)
