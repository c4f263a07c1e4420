"""The light pool's pass gives httpcore2's outcome, and rxllm's HTTP client uses it.

:class:`pipeline.runtime.http_pool.LightPool` replaces httpcore2's
bookkeeping pass (run when a request arrives and when a response closes) by
one that leaves alone the connections requests hold. Here both passes run
on the same random pools (connections connecting, failed, active, idle,
closed or expired, held by a request or not, one origin or two; requests
queued or assigned; the limits low enough to bite) and must keep the same
connections in the same order, close the same ones and assign the same
requests to the same connections, but for the one documented difference: a
held connection that closed is dropped only once its request lets it go.
Then a request through :func:`pipeline.runtime.http_backend.http_client`
goes through a ``LightPool``, and many at once reuse their connections.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpcore2
import pytest
from httpcore2._async.connection_pool import AsyncPoolRequest

from pipeline.apps.builtin_model import MockServer
from pipeline.runtime.http_backend import http_client
from pipeline.runtime.http_pool import LightPool

ORIGINS = [b"http://a:80/", b"http://b:80/"]
STATES = ["connecting", "failed", "active", "idle", "closed"]


class FakeConnection:
    """A connection as the pool's pass sees it (httpcore2's HTTP/1.1 rules)."""

    def __init__(self, name: str, origin: httpcore2.URL, state: str, expired: bool) -> None:
        self.name, self.origin, self.state, self.expired = name, origin.origin, state, expired

    def can_handle_request(self, origin: Any) -> bool:
        return bool(origin == self.origin)

    def is_connected(self) -> bool:
        return self.state in ("active", "idle")

    def is_available(self) -> bool:
        return self.state == "idle"

    def has_expired(self) -> bool:
        return self.state == "failed" or (self.state == "idle" and self.expired)

    def is_idle(self) -> bool:
        return self.state in ("idle", "failed")

    def is_closed(self) -> bool:
        return self.state in ("closed", "failed")

    def can_multiplex(self) -> bool:
        return False


def random_pool(pool_class: type[httpcore2.AsyncConnectionPool], rnd: random.Random) -> Any:
    pool = pool_class(
        max_connections=rnd.choice([2, 4, 8, 100]),
        max_keepalive_connections=rnd.choice([0, 1, 3, 100]),
    )
    created: list[str] = []

    def create_connection(origin: Any) -> Any:
        created.append(f"new{len(created)}")
        return FakeConnection(created[-1], httpcore2.URL(b"http://x/"), "connecting", False)

    pool.create_connection = create_connection  # type: ignore[method-assign]
    connections = [
        FakeConnection(
            f"c{i}",
            httpcore2.URL(rnd.choice(ORIGINS)),
            rnd.choice(STATES),
            rnd.random() < 0.3,
        )
        for i in range(rnd.randrange(0, 9))
    ]
    pool._connections = list(connections)  # type: ignore[arg-type]
    for i in range(rnd.randrange(0, 9)):
        request = AsyncPoolRequest(httpcore2.Request("GET", rnd.choice(ORIGINS)))
        request.request.extensions["name"] = f"r{i}"
        open_ones = [c for c in connections if not c.is_closed()]
        if open_ones and rnd.random() < 0.5:  # held and closed: the documented difference
            request.connection = rnd.choice(open_ones)  # type: ignore[assignment]
        pool._requests.append(request)
    return pool


def outcome(pool: Any, closing: list[Any]) -> tuple[Any, ...]:
    return (
        [c.name for c in pool._connections],
        [c.name for c in closing],
        [
            (r.request.extensions["name"], getattr(r.connection, "name", None))
            for r in pool._requests
        ],
    )


@pytest.mark.parametrize("seed", range(300))
async def test_the_light_pass_keeps_closes_and_assigns_as_httpcore2s(seed: int) -> None:
    pools = []
    for pool_class in (httpcore2.AsyncConnectionPool, LightPool):
        pools.append(random_pool(pool_class, random.Random(seed)))
    ours, theirs = pools[1], pools[0]
    assert outcome(ours, []) == outcome(theirs, []), "the same pool before the pass"
    theirs_closing = theirs._assign_requests_to_connections()
    ours_closing = ours._assign_requests_to_connections()
    assert outcome(ours, ours_closing) == outcome(theirs, theirs_closing)


async def test_a_held_connection_that_closed_is_dropped_once_its_request_lets_it_go() -> None:
    pool = LightPool()
    closed = FakeConnection("c0", httpcore2.URL(ORIGINS[0]), "closed", False)
    request = AsyncPoolRequest(httpcore2.Request("GET", ORIGINS[0]))
    request.connection = closed  # type: ignore[assignment]
    pool._connections = [closed]  # type: ignore[list-item]
    pool._requests = [request]
    assert pool._assign_requests_to_connections() == []
    assert [getattr(c, "name", None) for c in pool._connections] == ["c0"], "held: kept, unasked"
    pool._requests.remove(request)  # its response closed
    assert pool._assign_requests_to_connections() == []
    assert pool._connections == [], "let go: asked, and dropped"


async def test_rxllms_client_uses_the_light_pool_and_reuses_connections(
    upstream: MockServer,
) -> None:
    client = http_client()
    try:
        pool = client._transport._pool  # type: ignore[attr-defined]
        assert type(pool) is LightPool
        body = {
            "model": "m",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
            "mock": {"text": "one two three", "interval": 0.01},
        }

        async def one() -> str:
            async with client.stream(
                "POST", f"{upstream.base_url}/chat/completions", json=body
            ) as response:
                assert response.status_code == 200
                return "".join([chunk async for chunk in response.aiter_text()])

        for _ in range(2):  # the second round reuses the first round's connections
            answers = await asyncio.gather(*(one() for _ in range(20)))
            assert all(answer.rstrip().endswith("data: [DONE]") for answer in answers)
        assert 1 <= len(pool.connections) <= 20
        assert all(connection.is_idle() for connection in pool.connections)
    finally:
        await client.aclose()


async def test_a_pool_with_http2_takes_httpcore2s_own_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    called = []

    def own(self: Any) -> list[Any]:
        called.append(True)
        return []

    monkeypatch.setattr(httpcore2.AsyncConnectionPool, "_assign_requests_to_connections", own)
    LightPool(http2=True)._assign_requests_to_connections()
    assert called == [True]
