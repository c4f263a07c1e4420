"""The list behind ``GET /v1/models``: asked from the upstreams, merged, cached.

Upstreams are built-in model servers over loopback (one answering, one
whose port nobody listens on); the cache runs on an injected clock.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.apps.builtin_model import MockServer
from pipeline.apps.server.model_list import ModelList
from pipeline.runtime.key_pool import KeyPool
from pipeline.runtime.upstreams import Upstream
from tests.serving import free_port


@pytest.fixture(scope="module")
def live() -> Iterator[MockServer]:
    with MockServer(models=("alpha", "beta")) as server:
        yield server


def asked(server: MockServer) -> int:
    return sum(1 for r in server.recorder.requests if r.path == "/v1/models")


async def test_models_aliases_and_the_default_with_the_fields_sdks_read(live: MockServer) -> None:
    upstream = Upstream("live", live.base_url, "k", models={"fast": "alpha", "*": "beta"})
    listing = ModelList([upstream], default="house-model")
    data = await listing.data()
    assert [m["id"] for m in data] == ["alpha", "beta", "fast", "house-model"]
    by_id = {m["id"]: m for m in data}
    assert by_id["fast"]["created"] == by_id["alpha"]["created"]  # the alias's target's
    assert by_id["fast"]["owned_by"] == "live"
    for model in data:
        assert model["object"] == "model"
        assert isinstance(model["created"], int) and model["created"] > 0
        assert model["owned_by"]
    await upstream.aclose()


async def test_the_list_is_cached_and_an_upstream_that_failed_is_asked_again_sooner(
    live: MockServer,
) -> None:
    now = [0.0]
    dead = Upstream("dead", f"http://127.0.0.1:{free_port()}/v1", "k", models={"old": "x"})
    pool = KeyPool(["key-a", "key-b"])
    upstreams = [dead, Upstream("live", live.base_url, pool)]
    listing = ModelList(upstreams, ttl=300, retry_after=10, timeout=2, clock=lambda: now[0])
    before = asked(live)
    first = await listing.data()
    assert {m["id"] for m in first} == {"old", "alpha", "beta"}  # never empty while one answers
    assert [s.active for s in pool.status()] == [0, 0]  # the lent key was given back
    now[0] = 5.0
    assert await listing.data() == first
    assert asked(live) == before + 1  # cached
    now[0] = 11.0  # past retry_after: an upstream had failed, so the list is made again
    await listing.data()
    assert asked(live) == before + 2
    for upstream in upstreams:
        await upstream.aclose()
