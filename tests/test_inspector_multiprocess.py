"""The inspector on two ``rxllm serve`` processes sharing a real PostgreSQL and a real Redis.

Process A runs a slow stream; process B's inspector lists it as live (from the
shared store), shows its events so far, and follows it to its end through
Redis: in its JSON, and in Chromium, where the marks appear as they arrive.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.redis_server import redis_server as redis_server
from tests.serving import ServeProcess
from tests.test_browser import CHROMIUM_ARGS, TIMEOUT_MS, chromium
from tests.two_processes import pair as pair
from tests.two_processes import upstream as upstream

pytestmark = pytest.mark.services  # needs PostgreSQL, Redis and Chromium, started by the tests

if importlib.util.find_spec("playwright") is not None:
    from playwright.async_api import async_playwright, expect

__all__ = ["chromium", "redis_server"]  # fixtures

pytestmark = pytest.mark.services  # needs PostgreSQL, Redis and Chromium, started by the tests

SHOTS = Path(__file__).resolve().parents[1] / "build" / "screenshots"


async def stream_on(url: str, text: str, interval: float) -> str:
    payload = {
        "model": "mock-model",
        "messages": [{"role": "user", "content": "Say a lot"}],
        "stream": True,
        "mock": {"text": text, "interval": interval},
    }
    async with (
        httpx.AsyncClient(base_url=url, timeout=60) as http,
        http.stream("POST", "/v1/chat/completions", json=payload) as response,
    ):
        assert response.status_code == 200
        async for _ in response.aiter_bytes():
            pass
        return response.headers["x-rxllm-stream-id"]


async def live_on(http: httpx.AsyncClient) -> str:
    """The id of the first stream ``http``'s process lists as live."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rows = (await http.get("/v1/inspect/streams")).json()["data"]
        live = [r for r in rows if r["live"]]
        if live:
            return str(live[0]["id"])
        await asyncio.sleep(0.05)
    raise AssertionError("no stream showed as live")


async def test_the_other_process_lists_and_follows_a_live_stream(
    pair: tuple[ServeProcess, ServeProcess],
) -> None:
    a, b = pair
    text = " ".join(f"far{i:02d}" for i in range(30))
    writer = asyncio.create_task(stream_on(a.url, text, 0.1))
    try:
        async with httpx.AsyncClient(base_url=b.url, timeout=30) as http:
            stream_id = await live_on(http)
            shown = (await http.get(f"/v1/inspect/streams/{stream_id}")).json()
            assert shown["live"] is True and shown["status"] == "running"
            so_far = shown["events"]
            after = so_far[-1]["seq"] if so_far else None
            rest: list[dict[str, Any]] = []
            params = {} if after is None else {"after": after}
            async with aconnect_sse(
                http, "GET", "/" + shown["events_url"], params=params
            ) as source:
                async for message in source.aiter_sse():
                    rest.append(json.loads(message.data))
            assert len(rest) >= 10  # followed live, not read after the end
            everything = so_far + rest
            assert [e["seq"] for e in everything] == list(range(len(everything)))
            assert everything[-1]["type"] == "finished"
            assert "".join(e["text"] for e in everything if e["type"] == "text") == text
        assert await writer == stream_id
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)


async def test_the_other_process_page_draws_a_live_stream_as_it_arrives(
    chromium: str, pair: tuple[ServeProcess, ServeProcess]
) -> None:
    a, b = pair
    text = " ".join(f"wide{i:02d}" for i in range(40))
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            page = await browser.new_page(viewport={"width": 1180, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            await page.goto(f"{b.url}/inspect")  # the browser is up before the stream starts
            writer = asyncio.create_task(stream_on(a.url, text, 0.12))
            try:
                async with httpx.AsyncClient(base_url=b.url, timeout=30) as http:
                    stream_id = await live_on(http)
                await page.goto(f"{b.url}/inspect#/s/{stream_id}")
                await page.evaluate(
                    """() => { window.__counts = [];
                      const box = document.getElementById("timeline");
                      new MutationObserver(() => {
                        const n = box.querySelectorAll(".mark").length;
                        if (window.__counts.at(-1) !== n) window.__counts.push(n);
                      }).observe(box, {childList: true, subtree: true}); }"""
                )
                timeline = page.locator("#timeline")
                await expect(timeline).to_have_attribute(
                    "data-state", "finished", timeout=TIMEOUT_MS
                )
                await expect(page.locator("#message .text")).to_have_text(text)
                counts: list[int] = await page.evaluate("window.__counts")
                SHOTS.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=SHOTS / "inspector-other-process.png", full_page=True)
                assert await writer == stream_id
            finally:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
        finally:
            await browser.close()
    assert counts == sorted(counts) and len(counts) >= 10, counts
    async with httpx.AsyncClient(base_url=b.url, timeout=30) as http:
        for _ in range(200):
            done = (await http.get(f"/v1/inspect/streams/{stream_id}")).json()
            if done["status"] == "finished":
                break
            await asyncio.sleep(0.05)
    assert counts[-1] == len(done["events"])
