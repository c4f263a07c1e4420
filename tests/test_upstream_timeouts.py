"""Every upstream has finite first-token, idle and total timeouts, overridable.

Regression tests: with ``--upstream`` there was no timeout at all (a stalled
upstream held its client for minutes), ``/api/chat`` ignored the
``x-rxllm-*-timeout`` headers, and an upstream's own configured timeout won
over a request's header. Which one applies, most specific first: the
request's header, the route's (config ``[routes."/path"]``), the upstream's,
``[failover]`` or the ``--*-timeout`` flags, the defaults.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.apps.builtin_model import MockScript, MockServer
from pipeline.apps.server.gateway import Gateway
from pipeline.apps.server.server_settings import ServerSettings
from tests.serving import ServeProcess

pytestmark = pytest.mark.slow  # starts rxllm serve

MESSAGES = [{"role": "user", "content": "Say hello"}]
UI_MESSAGES = [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]
STALL: dict[str, Any] = {"text": "late", "stall": 30}  # far longer than any client waits here


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockServer]:
    with MockServer(MockScript(), models=("mock-model",)) as server:
        yield server


@pytest.fixture(scope="module")
def stalling() -> Iterator[MockServer]:
    """An upstream that answers nothing for 30 s (``/api/chat`` passes no ``mock`` field)."""
    with MockServer(MockScript(**STALL), models=("mock-model",)) as server:
        yield server


@pytest.fixture(scope="module")
def configured(
    stalling: MockServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """Upstream's own first-token timeout 30 s; /api/chat's route says 0.3 s."""
    upstream = stalling
    tmp = tmp_path_factory.mktemp("timeouts")
    config = tmp / "upstreams.toml"
    config.write_text(
        f"""
[failover]
retries = 0

[[upstreams]]
name = "slow"
base_url = "{upstream.base_url}"
first_token_timeout = 30

[routes."/api/chat"]
first_token_timeout = 0.3
"""
    )
    args = ["--config", str(config), "--model", "mock-model", "--no-store"]
    with ServeProcess(*args, log_path=tmp / "serve.log") as proc:
        yield proc


async def test_an_upstream_given_by_url_gets_finite_default_timeouts(
    upstream: MockServer,
) -> None:
    gateway = Gateway(ServerSettings(upstream=upstream.base_url, store=False))
    await gateway.startup()
    try:
        options = gateway.failover_options
        for value in (options.first_token_timeout, options.idle_timeout, options.total_timeout):
            assert value is not None and math.isfinite(value) and value > 0
    finally:
        await gateway.shutdown()


def test_idle_timeout_flag_ends_a_stream_that_stalls_mid_way(
    upstream: MockServer, tmp_path: Path
) -> None:
    args = ["--upstream", upstream.base_url, "--no-store", "--idle-timeout", "0.3"]
    body = {
        "model": "mock-model",
        "messages": MESSAGES,
        "stream": True,
        "mock": {"text": "one two three", "stall": 30, "stall_after": 1},
    }
    with (
        ServeProcess(*args, log_path=tmp_path / "serve.log") as proc,
        httpx.Client(base_url=proc.url, timeout=10) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        text = "".join(response.iter_lines())
    assert '"one"' in text or "one" in text
    assert '"error"' in text and "timeout" in text
    assert "[DONE]" not in text


def test_api_chat_honours_the_timeout_headers(configured: ServeProcess) -> None:
    body = {"model": "mock-model", "messages": UI_MESSAGES, "mock": STALL}
    with httpx.Client(base_url=configured.url, timeout=10) as http:
        response = http.post(
            "/api/chat",
            json=body,
            # the route says 0.3 s; the header's is longer, and the upstream's 30 s longer still
            headers={"x-rxllm-first-token-timeout": "0.6"},
        )
    assert response.status_code == 200
    assert '"type":"error"' in response.text.replace(" ", "")


def test_a_routes_timeout_wins_over_the_upstreams_own(configured: ServeProcess) -> None:
    body = {"model": "mock-model", "messages": UI_MESSAGES, "mock": STALL}
    with httpx.Client(base_url=configured.url, timeout=10) as http:
        response = http.post("/api/chat", json=body)
    assert '"type":"error"' in response.text.replace(" ", "")


def test_a_request_header_wins_over_the_upstreams_own(configured: ServeProcess) -> None:
    body = {"model": "mock-model", "messages": MESSAGES, "stream": True, "mock": STALL}
    with httpx.Client(base_url=configured.url, timeout=10) as http:
        response = http.post(
            "/v1/chat/completions", json=body, headers={"x-rxllm-first-token-timeout": "0.3"}
        )
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "timeout"


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0", "soon", "1e999"])
def test_a_timeout_header_that_is_not_a_finite_positive_number_is_a_400(
    configured: ServeProcess, value: str
) -> None:
    body = {"model": "mock-model", "messages": MESSAGES}
    with httpx.Client(base_url=configured.url, timeout=10) as http:
        for path, payload in (
            ("/v1/chat/completions", body),
            ("/api/chat", {"messages": UI_MESSAGES}),
        ):
            response = http.post(path, json=payload, headers={"x-rxllm-idle-timeout": value})
            assert response.status_code == 400, (path, response.text)
            assert response.json()["error"]["param"] == "x-rxllm-idle-timeout"
