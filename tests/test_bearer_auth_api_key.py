"""``--auth-token``: the anthropic SDK's ``x-api-key`` is taken on ``/v1/messages`` only."""

from __future__ import annotations

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from pipeline.apps.server.bearer_auth import BearerAuth

TOKEN = "serve-token-5e1a"


async def ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/v1/messages", {"x-api-key": TOKEN}, 200),
        ("/v1/messages", {"x-api-key": "wrong"}, 401),
        ("/v1/messages", {"authorization": f"Bearer {TOKEN}"}, 200),
        ("/v1/messages", {}, 401),
        ("/v1/chat/completions", {"x-api-key": TOKEN}, 401),  # elsewhere: the bearer token
        ("/v1/responses", {"authorization": f"Bearer {TOKEN}"}, 200),
    ],
)
async def test_who_gets_in(path: str, headers: dict[str, str], status: int) -> None:
    transport = httpx.ASGITransport(app=BearerAuth(ok, TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://rxllm") as client:
        response = await client.post(path, headers=headers, json={})
    assert response.status_code == status
