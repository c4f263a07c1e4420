"""``useChat`` resume and stop across two ``rxllm serve`` processes sharing Redis.

A chat's answer streams from process A; its client leaves (a page reload
that a load balancer sends to B): ``GET /api/chat/{id}/stream`` on B serves
the whole answer from Redis, while A's upstream request goes on. A stop sent
to B cancels the answer A holds. The UI message stream is read as the AI
SDK's transport reads it: one JSON part per ``data:`` line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pipeline.apps.builtin_model import MockScript, MockServer
from tests.redis_server import RedisServer
from tests.redis_server import redis_server as redis_server
from tests.serving import ServeProcess

pytestmark = pytest.mark.services  # needs Redis, started by the tests

WORDS = " ".join(f"word{i}" for i in range(50))


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockServer]:
    with MockServer(MockScript(text=WORDS, interval=0.04)) as server:
        yield server


@pytest.fixture(scope="module")
def pair(
    upstream: MockServer, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    tmp = tmp_path_factory.mktemp("use-chat-redis")
    common = ["--upstream", upstream.base_url, "--model", "m", "--no-store"]
    common += ["--redis", redis_server.url]
    with (
        ServeProcess(*common, "--instance", "a", log_path=tmp / "a.log") as a,
        ServeProcess(*common, "--instance", "b", log_path=tmp / "b.log") as b,
    ):
        yield a, b


def body(chat_id: str) -> dict[str, Any]:
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "count"}]}
    return {"id": chat_id, "messages": [user], "trigger": "submit-message"}


def parts(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


def first_words(a: ServeProcess, chat_id: str) -> str:
    """Start the chat's answer on A, read until its first text, then leave."""
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", f"{a.url}/api/chat", json=body(chat_id)) as response,
    ):
        assert response.status_code == 200
        for part in parts(response.iter_lines()):
            if part["type"] == "text-delta":
                return str(part["delta"])
    raise AssertionError("no text before the end")


def test_a_reload_on_another_process_resumes_the_whole_answer(
    pair: tuple[ServeProcess, ServeProcess], upstream: MockServer
) -> None:
    a, b = pair
    first = first_words(a, "chat-moved")
    with (
        httpx.Client(timeout=30) as http,
        http.stream("GET", f"{b.url}/api/chat/chat-moved/stream") as response,
    ):
        assert response.status_code == 200
        assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
        got = list(parts(response.iter_lines()))
    text = "".join(p["delta"] for p in got if p["type"] == "text-delta")
    assert text == WORDS and text.startswith(first)  # from its start: the SDK replays
    assert [p["type"] for p in got][:2] == ["start", "start-step"]
    assert got[-1]["type"] == "finish"
    request = upstream.recorder.last_request
    upstream.recorder.wait_for(lambda: request.outcome)
    assert request.outcome == "completed"  # A's upstream request was never cut
    with httpx.Client(timeout=30) as http:  # it ended: nothing left to resume, anywhere
        assert http.get(f"{b.url}/api/chat/chat-moved/stream").status_code == 204
        assert http.get(f"{a.url}/api/chat/chat-moved/stream").status_code == 204


def test_a_stop_sent_to_another_process_cancels_the_answer(
    pair: tuple[ServeProcess, ServeProcess], upstream: MockServer
) -> None:
    a, b = pair
    first_words(a, "chat-stopped")
    request = upstream.recorder.last_request
    with httpx.Client(timeout=30) as http:
        stop = http.post(f"{b.url}/api/chat/chat-stopped/stop")
        assert (stop.status_code, stop.json()) == (200, {"id": "chat-stopped", "stopped": True})
        upstream.recorder.wait_for(lambda: request.outcome)
        assert request.outcome == "client_gone"  # A closed its upstream request
        assert http.get(f"{b.url}/api/chat/chat-stopped/stream").status_code == 204
        never = http.post(f"{b.url}/api/chat/never-seen/stop")
        assert never.json() == {"id": "never-seen", "stopped": False}
