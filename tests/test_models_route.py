"""``GET /v1/models`` through ``rxllm serve``, read with the openai SDK.

It lists what the upstreams say they serve (asked once, then cached) and the
config's model aliases, each with ``id``, ``object``, ``created`` and
``owned_by``; an upstream that does not answer does not empty the list.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from openai import OpenAI

from pipeline.apps.builtin_model import MockServer
from tests.serving import ServeProcess, free_port

pytestmark = pytest.mark.slow  # an `rxllm serve` process per test


def listed(proc: ServeProcess) -> dict[str, tuple[str, int, str]]:
    client = OpenAI(base_url=proc.base_url, api_key="unused")
    return {m.id: (m.object, m.created, m.owned_by) for m in client.models.list()}


def model_requests(upstream: MockServer) -> int:
    return sum(1 for r in upstream.recorder.requests if r.path == "/v1/models")


def test_the_upstreams_models_are_listed_and_cached(tmp_path: Path) -> None:
    with MockServer(models=("alpha-1", "beta-2")) as upstream:
        args = ["--upstream", upstream.base_url, "--no-store"]
        with ServeProcess(*args, log_path=tmp_path / "serve.log") as proc:
            models = listed(proc)
            assert set(models) == {"alpha-1", "beta-2"}
            for kind, created, owner in models.values():
                assert kind == "model" and created > 0 and owner
            asked = model_requests(upstream)
            assert listed(proc) == models
            assert model_requests(upstream) == asked  # the second list came from the cache


def test_aliases_are_listed_and_a_dead_upstream_does_not_empty_the_list(tmp_path: Path) -> None:
    with MockServer(models=("gpt-small",)) as upstream:
        config = tmp_path / "rxllm.toml"
        config.write_text(
            "[[upstreams]]\n"
            'name = "dead"\n'
            f'base_url = "http://127.0.0.1:{free_port()}/v1"\n'
            'models = { old = "gone-model" }\n'
            "[[upstreams]]\n"
            'name = "live"\n'
            f'base_url = "{upstream.base_url}"\n'
            'models = { fast = "gpt-small" }\n'
        )
        args = ["--config", str(config), "--no-store"]
        with ServeProcess(*args, log_path=tmp_path / "serve.log") as proc:
            models = listed(proc)
    assert set(models) == {"gpt-small", "fast", "old"}
    assert models["fast"][2] == "live" and models["old"][2] == "dead"
    assert all(created > 0 for _, created, _ in models.values())


def test_the_built_in_model_is_listed_with_its_fields(tmp_path: Path) -> None:
    with ServeProcess("--no-store", log_path=tmp_path / "serve.log") as proc:
        models = listed(proc)
    assert "mock-model" in models
    kind, created, owner = models["mock-model"]
    assert kind == "model" and created > 0 and owner
