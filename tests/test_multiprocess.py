"""Two ``rxllm serve`` processes sharing a real PostgreSQL and a real Redis.

Process A runs the stream (its upstream is the built-in model in this test
process, so the test sees the upstream connection); a client resumes it on
process B with ``Last-Event-ID`` mid-stream and gets every later event once
and in order, live, through Redis; after the stream ended and its Redis key
is gone, B serves it from PostgreSQL; a cancel sent to B closes A's upstream
connection.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from redis.asyncio import Redis

from pipeline.apps.builtin_model import MockServer
from tests.pg import PostgresServer
from tests.redis_server import RedisServer
from tests.redis_server import redis_server as redis_server
from tests.serving import ServeProcess
from tests.two_processes import pair as pair
from tests.two_processes import upstream as upstream

pytestmark = pytest.mark.services  # needs PostgreSQL and Redis, started by the tests

MESSAGES = [{"role": "user", "content": "Say a lot"}]


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


def words(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


async def read_events(
    http: httpx.AsyncClient, url: str, stream_id: str, last: int | None
) -> list[tuple[float, dict[str, Any]]]:
    """``GET /v1/streams/{id}/events`` to its end: (arrival time, event) pairs."""
    headers = {} if last is None else {"Last-Event-ID": str(last)}
    out: list[tuple[float, dict[str, Any]]] = []
    async with aconnect_sse(
        http, "GET", f"{url}/v1/streams/{stream_id}/events", headers=headers
    ) as source:
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            event = json.loads(sse.data)
            assert sse.id == str(event["seq"]) and sse.event == event["type"]
            out.append((time.monotonic(), event))
    return out


def _content(line: str) -> str:
    """The text in an OpenAI SSE ``data:`` line, or ``""``."""
    if not line.startswith("data: {"):
        return ""
    choices = json.loads(line[6:]).get("choices") or [{}]
    return str(choices[0].get("delta", {}).get("content") or "")


async def stored_events(http: httpx.AsyncClient, url: str, stream_id: str) -> list[Any]:
    """The stream's events in the store, once it is finalized there."""
    for _ in range(200):
        response = await http.get(f"{url}/v1/transcripts/{stream_id}")
        if response.status_code == 200 and response.json()["status"] != "running":
            events: list[Any] = response.json()["events"]
            return events
        await asyncio.sleep(0.05)
    raise AssertionError(f"stream {stream_id} was not finalized in the store within 10 s")


async def test_resume_on_the_other_process_mid_stream_then_from_postgres(
    pair: tuple[ServeProcess, ServeProcess], redis: Redis
) -> None:
    a, b = pair
    text = words("m", 40)
    body = {
        "model": "mock-model",
        "messages": MESSAGES,
        "stream": True,
        "mock": {"text": text, "interval": 0.05},
    }
    async with httpx.AsyncClient(timeout=30) as http:
        async with http.stream("POST", f"{a.url}/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            stream_id = response.headers["x-rxllm-stream-id"]
            lines = response.aiter_lines()
            seen = 0
            while seen < 5:  # a few tokens through A
                seen += bool(_content(await anext(lines)))

            async def rest_of_a() -> float:
                async for _ in lines:
                    pass
                return time.monotonic()

            a_reading = asyncio.create_task(rest_of_a())
            resumed = await read_events(http, b.url, stream_id, 5)
            a_done_at = await a_reading

        got = [event for _, event in resumed]
        assert [e["seq"] for e in got] == list(range(6, 6 + len(got)))  # once, in order
        assert got[-1]["type"] == "finished"
        assert resumed[0][0] < a_done_at  # B served it live, while A was still streaming
        stored = await stored_events(http, b.url, stream_id)
        assert got == stored[6:]
        assert "".join(e.get("text", "") for e in stored) == text

        # Ended, and its Redis key gone: B serves it from PostgreSQL.
        assert await redis.pttl(f"rxllm:stream:{stream_id}") > 0  # it was set to expire
        assert await redis.delete(f"rxllm:stream:{stream_id}") == 1
        from_db = [event for _, event in await read_events(http, b.url, stream_id, 10)]
        assert from_db == stored[11:]


async def test_cancel_on_the_other_process_closes_the_upstream_connection(
    pair: tuple[ServeProcess, ServeProcess], upstream: MockServer
) -> None:
    a, b = pair
    text = words(f"c{uuid.uuid4().hex[:6]}-", 200)  # 10 s at 0.05 s per token
    body = {"model": "mock-model", "messages": MESSAGES, "mock": {"text": text, "interval": 0.05}}
    async with httpx.AsyncClient(timeout=30) as http:
        started = await http.post(f"{a.url}/v1/streams", json=body)
        assert started.status_code == 201
        stream_id = started.json()["id"]
        request = await upstream.recorder.wait_for_async(
            lambda: next(
                (r for r in upstream.recorder.requests if (r.script or {}).get("text") == text),
                None,
            ),
            timeout=10,
        )
        connection = request.connection
        assert connection is not None and connection.closed_at is None

        reading = asyncio.create_task(read_events(http, b.url, stream_id, None))
        async with asyncio.timeout(10):  # B is reading it live, through Redis
            assert await _b_has_seen_tokens(http, b, stream_id)
        cancelled_at = time.monotonic()
        response = await http.post(f"{b.url}/v1/streams/{stream_id}/cancel")
        assert response.status_code == 200, response.text
        assert response.json() == {"id": stream_id, "cancelled": True}

        closed_at = await connection.wait_closed_async(timeout=5)
        assert closed_at - cancelled_at < 2.0
        events = [event for _, event in await asyncio.wait_for(reading, 10)]
        assert [e["seq"] for e in events] == list(range(len(events)))
        assert events[-1]["type"] == "cancelled"
        assert events[-1]["reason"] == "cancelled by request"
        assert sum(e["type"] == "text" for e in events) < 150  # it did not run to its end

        again = await http.post(f"{b.url}/v1/streams/{stream_id}/cancel")
        assert again.status_code == 404


async def _b_has_seen_tokens(http: httpx.AsyncClient, b: ServeProcess, stream_id: str) -> bool:
    """Whether B can already serve a few of the stream's tokens (from Redis)."""
    headers = {"Last-Event-ID": "2"}
    url = f"{b.url}/v1/streams/{stream_id}/events"
    async with aconnect_sse(http, "GET", url, headers=headers) as source:
        async for _ in source.aiter_sse():
            return True  # event 3 exists
    return False


def test_processes_logged_no_redis_errors(pair: tuple[ServeProcess, ServeProcess]) -> None:
    """Runs last in this module: neither process had trouble with Redis."""
    for proc in pair:
        log = proc.log()
        assert "redis bus:" not in log, log[-3000:]
        assert "Traceback" not in log, log[-3000:]


def _alive(pid: int) -> bool:
    path = Path(f"/proc/{pid}/stat")
    return path.exists() and path.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux ``/proc``)."""
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(child) for child in children.read().split()]


async def test_workers_share_one_port_and_every_stream_reads_from_any_of_them(
    upstream: MockServer,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """``rxllm serve --workers 2``: the page's flow (start, then read) lands on both workers."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    tmp = tmp_path_factory.mktemp("workers")
    db = postgres_server.create_database()
    args = ["--upstream", upstream.base_url, "--db", db, "--redis", redis_server.url]
    body = {
        "model": "mock-model",
        "messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        "mock": {"text": words("w", 8), "interval": 0.01},
    }
    with ServeProcess(*args, "--workers", "2", "--instance", "pool", log_path=tmp / "w.log") as srv:
        assert srv._proc is not None
        workers = _children(srv._proc.pid)
        assert len(workers) == 2, workers
        ids: list[str] = []
        # New connections each time: the kernel spreads them over the two workers.
        for _ in range(24):
            async with httpx.AsyncClient(timeout=30) as http:
                started = await http.post(f"{srv.url}/v1/streams", json=body)
                assert started.status_code == 201, started.text
                stream_id = started.json()["id"]
            async with httpx.AsyncClient(timeout=30) as http:
                got = [e for _, e in await read_events(http, srv.url, stream_id, None)]
            assert [e["seq"] for e in got] == list(range(len(got)))
            assert got[-1]["type"] == "finished"
            assert "".join(e["text"] for e in got if e["type"] == "text") == words("w", 8)
            ids.append(stream_id)
        engine = create_async_engine(db)
        owners: dict[str, str] = {}
        try:
            for _ in range(200):  # the workers' store writers flush on their own time
                async with engine.connect() as conn:
                    rows = await conn.execute(text("SELECT id, owner FROM rxllm_streams"))
                    owners = {str(row[0]): str(row[1]) for row in rows}
                if all(i in owners for i in ids):
                    break
                await asyncio.sleep(0.05)
        finally:
            await engine.dispose()
        assert {owners[i] for i in ids} == {"pool/1", "pool/2"}, "both workers ran streams"
    assert not [pid for pid in workers if _alive(pid)], "stopping the supervisor stops its workers"


def test_several_workers_need_redis(tmp_path_factory: pytest.TempPathFactory) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "pipeline.apps.cli", "serve", "--workers", "2", "--no-store"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--redis" in result.stderr
