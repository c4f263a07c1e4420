"""Rate limits end to end: the openai SDK, with its default retries, through ``rxllm serve``.

The upstream is the built-in model answering 429; its recorder counts what
reached it. What is promised (see ``docs/rate-limits.md``):

* a 429 rxllm cannot serve around is answered at once, with ``Retry-After``
  and ``retry-after-ms`` saying when the upstream is free again, and
  ``x-should-retry: false``, so the SDK's own retries do not multiply the load;
* rxllm waits for a Retry-After only up to ``max_wait`` (2 s by default) and
  asks one upstream at most ``1 + retries`` times per request;
* a request that arrives while the upstream's Retry-After runs is answered
  from memory, without asking it.

Counts only: no timing is asserted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from pipeline.apps.builtin_model import MockScript, MockServer
from tests.serving import ServeProcess

pytestmark = pytest.mark.slow  # an `rxllm serve` process per test

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


@pytest.fixture
def limited() -> Iterator[MockServer]:
    with MockServer(MockScript(status=429, retry_after=7)) as server:
        yield server


def chat_requests(upstream: MockServer) -> int:
    return sum(1 for r in upstream.recorder.requests if r.path == "/v1/chat/completions")


def test_a_long_retry_after_is_passed_on_at_once_and_the_sdk_does_not_retry(
    limited: MockServer, tmp_path: Path
) -> None:
    args = ["--upstream", limited.base_url, "--no-store"]
    with ServeProcess(*args, log_path=tmp_path / "serve.log") as proc:
        client = OpenAI(base_url=proc.base_url, api_key="unused")  # max_retries: the default, 2
        for stream in (False, True):
            with pytest.raises(openai.RateLimitError) as caught:
                client.chat.completions.create(model="m", messages=MESSAGES, stream=stream)
            headers = caught.value.response.headers
            assert headers["x-should-retry"] == "false"
            assert 1 <= int(headers["retry-after"]) <= 7
            assert 0 < int(headers["retry-after-ms"]) <= 7000
            assert caught.value.response.json()["error"]["type"] == "upstream_error"
        # The first request asked the upstream once (7 s is longer than max_wait); the
        # second came within those 7 s and was answered from memory.
        assert chat_requests(limited) == 1


def test_short_retry_afters_are_waited_for_at_most_retries_times(tmp_path: Path) -> None:
    with MockServer(MockScript(status=429, retry_after=0.05)) as upstream:
        config = tmp_path / "rxllm.toml"
        upstreams = f'[[upstreams]]\nname = "a"\nbase_url = "{upstream.base_url}"\n'
        config.write_text("[failover]\nretries = 2\n\n" + upstreams)
        args = ["--config", str(config), "--model", "m", "--no-store"]
        with ServeProcess(*args, log_path=tmp_path / "serve.log") as proc:
            client = OpenAI(base_url=proc.base_url, api_key="unused")
            with pytest.raises(openai.RateLimitError) as caught:
                client.chat.completions.create(model="m", messages=MESSAGES)
            assert caught.value.response.headers["x-should-retry"] == "false"
            # 1 + retries asks by rxllm, none added by the SDK's own two retries.
            assert chat_requests(upstream) == 3


def test_the_sdks_retries_still_serve_a_request_once_the_upstream_recovers(
    tmp_path: Path,
) -> None:
    script = MockScript(status=429, retry_after=0.05, fail_first=1, fault_key="once")
    with MockServer(script) as upstream:
        args = ["--upstream", upstream.base_url, "--no-store"]
        with ServeProcess(*args, log_path=tmp_path / "serve.log") as proc:
            client = OpenAI(base_url=proc.base_url, api_key="unused")
            answer = client.chat.completions.create(model="m", messages=MESSAGES)
            assert answer.choices[0].message.content
            assert chat_requests(upstream) == 2  # rxllm's one retry after the Retry-After
