"""The inspector's JSON (``/v1/inspect/...``) on a real ``rxllm serve`` with a store.

Streams are made through the server by a real client (httpx) against the
built-in model; the tests then read them back the way the page does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from pipeline.apps.builtin_model import MockServer
from tests.serving import ServeProcess

pytestmark = pytest.mark.slow  # an `rxllm serve` process per module

UPSTREAM_KEY = "sk-upstream-SECRET-77c1d2"
AUTH_TOKEN = "inspect-token-93af"
IN_BODY_SECRET = "sk-in-the-body-5e8b"


@pytest.fixture(scope="module")
def served(
    upstream: MockServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("inspect")
    db = f"sqlite+aiosqlite:///{tmp / 'transcripts.db'}"
    args = ["--upstream", upstream.base_url, "--api-key", UPSTREAM_KEY, "--db", db]
    with ServeProcess(*args, log_path=tmp / "serve.log") as proc:
        yield proc


@pytest.fixture
async def http(served: ServeProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.url, timeout=20) as client:
        yield client


def body(mock: dict[str, Any], text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {
        "model": "mock-model",
        "messages": [{"role": "user", "content": text}],
        "stream": True,
        "mock": mock,
        **extra,
    }


async def stream_through(http: httpx.AsyncClient, payload: dict[str, Any]) -> str:
    """Make a streaming request and read it to its end; return the stream id."""
    async with http.stream("POST", "/v1/chat/completions", json=payload) as response:
        assert response.status_code == 200, await response.aread()
        async for _ in response.aiter_bytes():
            pass
        return response.headers["x-rxllm-stream-id"]


async def until(http: httpx.AsyncClient, path: str, done: Any, within: float = 15) -> Any:
    """GET ``path`` until ``done(json)``; return that JSON."""
    deadline = time.monotonic() + within
    while True:
        response = await http.get(path)
        assert response.status_code == 200, response.text
        data = response.json()
        if done(data):
            return data
        assert time.monotonic() < deadline, data
        await asyncio.sleep(0.05)


async def test_a_finished_stream_is_listed_and_shown_whole(http: httpx.AsyncClient) -> None:
    payload = body(
        {"text": "Streams are easier to look at than to read", "interval": 0.005},
        metadata={"api_key": IN_BODY_SECRET, "note": "kept"},
    )
    stream_id = await stream_through(http, payload)

    listing = await until(
        http,
        "/v1/inspect/streams",
        lambda d: any(r["id"] == stream_id and r["status"] == "finished" for r in d["data"]),
    )
    assert listing["store"] is True
    row = next(r for r in listing["data"] if r["id"] == stream_id)
    assert row["model"] == "mock-model" and row["live"] is False
    assert row["first_token_at"] > 0 and row["event_count"] >= 10

    shown = (await http.get(f"/v1/inspect/streams/{stream_id}")).json()
    events = shown["events"]
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert len(events) == row["event_count"]
    assert events[0]["type"] == "started" and events[-1]["type"] == "finished"
    text = "".join(e["text"] for e in events if e["type"] == "text")
    assert text == "Streams are easier to look at than to read"
    assert shown["live"] is False and shown["status"] == "finished"
    assert shown["request"]["messages"] == payload["messages"]
    assert shown["request"]["metadata"] == {"note": "kept"}  # the key in it is dropped
    assert shown["events_url"] == f"v1/streams/{stream_id}/events"
    raw = json.dumps(shown)
    assert IN_BODY_SECRET not in raw and UPSTREAM_KEY not in raw


async def test_a_live_stream_is_listed_live_and_followed_to_its_end(
    http: httpx.AsyncClient,
) -> None:
    words = [f"w{i:02d}" for i in range(30)]
    payload = body({"text": " ".join(words), "interval": 0.1})
    reader = asyncio.create_task(stream_through(http, payload))
    try:
        listing = await until(
            http, "/v1/inspect/streams", lambda d: any(r["live"] for r in d["data"])
        )
        row = next(r for r in listing["data"] if r["live"])
        assert row["status"] == "running"
        stream_id = row["id"]

        shown = await until(
            http,
            f"/v1/inspect/streams/{stream_id}",
            lambda d: any(e["type"] == "text" for e in d["events"]),
        )
        assert shown["live"] is True
        so_far = shown["events"]
        assert so_far[-1]["type"] not in ("finished", "error", "cancelled")
        rest: list[dict[str, Any]] = []
        url = "/" + shown["events_url"]
        async with aconnect_sse(http, "GET", url, params={"after": so_far[-1]["seq"]}) as source:
            async for message in source.aiter_sse():
                rest.append(json.loads(message.data))
        assert rest, "nothing arrived after the snapshot"
        assert rest[-1]["type"] == "finished"
        seqs = [e["seq"] for e in so_far + rest]
        assert seqs == list(range(len(seqs)))  # no gap, no duplicate
        text = "".join(e["text"] for e in so_far + rest if e["type"] == "text")
        assert text == " ".join(words)
        assert await reader == stream_id
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    done = await until(
        http, f"/v1/inspect/streams/{stream_id}", lambda d: d["status"] == "finished"
    )
    assert done["live"] is False and len(done["events"]) == len(seqs)


async def test_filters(http: httpx.AsyncClient) -> None:
    marker = f"zebra{time.monotonic_ns()}"
    stream_id = await stream_through(http, body({"text": f"a {marker} here", "interval": 0}))
    await until(
        http,
        "/v1/inspect/streams",
        lambda d: any(r["id"] == stream_id and r["status"] == "finished" for r in d["data"]),
    )

    async def ids(**params: str) -> list[str]:
        response = await http.get("/v1/inspect/streams", params=params)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["data"]]

    assert await ids(q=marker.upper()) == [stream_id]
    assert stream_id in await ids(model="mock-model", status="finished")
    assert stream_id not in await ids(model="another-model")
    assert stream_id not in await ids(status="error")
    assert stream_id not in await ids(since="2999-01-01T00:00:00Z")
    assert stream_id in await ids(since="2000-01-01T00:00:00", until="2999-01-01T00:00:00+00:00")
    assert len(await ids(limit="1")) == 1


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"status": "done"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"limit": "many"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
    ],
)
async def test_bad_filters_are_a_400_naming_them(
    http: httpx.AsyncClient, params: dict[str, str], names: str
) -> None:
    response = await http.get("/v1/inspect/streams", params=params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == names and names in error["message"]


async def test_an_unknown_stream_is_a_404(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/inspect/streams/no-such-stream")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "stream_not_found"


async def test_a_stream_stalled_before_its_first_token_shows_as_live(
    http: httpx.AsyncClient,
) -> None:
    payload = body({"text": "late but here", "stall": 4.0, "stall_after": 0})
    reader = asyncio.create_task(stream_through(http, payload))
    try:
        # The client waits for the first token; the inspector shows the stream meanwhile.
        listing = await until(
            http, "/v1/inspect/streams", lambda d: any(r["live"] for r in d["data"])
        )
        stream_id = next(r["id"] for r in listing["data"] if r["live"])
        shown = (await http.get(f"/v1/inspect/streams/{stream_id}")).json()
        assert shown["live"] is True
        assert all(e["type"] not in ("text", "finished") for e in shown["events"])
        assert await reader == stream_id
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    ended = await until(
        http, f"/v1/inspect/streams/{stream_id}", lambda d: d["status"] == "finished"
    )
    assert ended["live"] is False and ended["first_token_at"] > 3.5  # t counts from the answer


def test_the_inspector_behind_a_token(upstream: MockServer, tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 't.db'}"
    args = ["--upstream", upstream.base_url, "--api-key", UPSTREAM_KEY, "--db", db]
    bearer = {"Authorization": f"Bearer {AUTH_TOKEN}"}
    with (
        ServeProcess(
            *args, log_path=tmp_path / "serve.log", env={"RXLLM_AUTH_TOKEN": AUTH_TOKEN}
        ) as proc,
        httpx.Client(base_url=proc.url, timeout=20) as client,
    ):
        page = client.get("/inspect")  # static HTML that asks for the token: no data in it
        assert page.status_code == 200 and "rxllm · inspector" in page.text
        assert AUTH_TOKEN not in page.text
        for path in ("/v1/inspect/streams", "/v1/inspect/streams/x"):
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                assert client.get(path, headers=headers).status_code == 401, (path, headers)
        made = client.post(
            "/v1/chat/completions", headers=bearer, json={**body({"text": "hi"}), "stream": False}
        )
        assert made.status_code == 200, made.text
        stream_id = made.headers["x-rxllm-stream-id"]
        shown = client.get(f"/v1/inspect/streams/{stream_id}", headers=bearer)
        assert shown.status_code == 200
        url = shown.json()["events_url"]
        assert "access=" in url and AUTH_TOKEN not in url
        read = client.get("/" + url)  # what the page's EventSource does: no header
        assert read.status_code == 200 and "event: finished" in read.text
        assert client.get(f"/v1/inspect/streams/{stream_id}").status_code == 401
    assert AUTH_TOKEN not in proc.log() and UPSTREAM_KEY not in proc.log()


def test_without_a_store_the_hubs_streams_are_listed(upstream: MockServer, tmp_path: Path) -> None:
    args = ["--upstream", upstream.base_url, "--no-store"]
    with (
        ServeProcess(*args, log_path=tmp_path / "serve.log") as proc,
        httpx.Client(base_url=proc.url, timeout=20) as client,
    ):
        made = client.post(
            "/v1/chat/completions", json={**body({"text": "kept here"}), "stream": False}
        )
        stream_id = made.headers["x-rxllm-stream-id"]
        listing = client.get("/v1/inspect/streams").json()
        assert listing["store"] is False
        row = next(r for r in listing["data"] if r["id"] == stream_id)  # the hub keeps it
        assert (row["status"], row["live"], row["model"]) == ("finished", False, "mock-model")
        finished = client.get("/v1/inspect/streams", params={"status": "finished"}).json()
        assert stream_id in [r["id"] for r in finished["data"]]
        running = client.get("/v1/inspect/streams", params={"status": "running"}).json()
        assert stream_id not in [r["id"] for r in running["data"]]
        shown = client.get(f"/v1/inspect/streams/{stream_id}").json()  # the hub keeps it
        assert shown["status"] == "finished" and shown["request"] is None
        assert "".join(e.get("text", "") for e in shown["events"]) == "kept here"
