"""The inspector (``/inspect``) in a real headless Chromium, against ``rxllm serve`` with a store.

* the list shows a stream the test started, and a live one while it runs;
* a stream's page has one timeline mark per event, and hovering one shows it;
* a live stream's marks appear as its events arrive;
* the replay button plays the stream in the page and ends with the same text;
* behind ``--auth-token`` the page asks for the token once per tab.

Screenshots go to ``build/screenshots/`` (or ``$RXLLM_SCREENSHOTS``) for a
reviewer to look at. With ``RXLLM_DOCS_IMAGES=1`` the tests also write the
README's images, ``docs/images/inspector.png`` and ``docs/images/marbles.png``.

Needs Debian's ``chromium`` and the ``playwright`` Python package, as
``tests/test_browser.py`` does (skipped when missing, failed under ``CI``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
from collections.abc import AsyncIterator, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.apps.builtin_model import MockServer
from pipeline.core.events import load_event
from pipeline.core.marbles import marbles
from tests.serving import ROOT, ServeProcess
from tests.test_browser import CHROMIUM_ARGS, TIMEOUT_MS, chromium

pytestmark = pytest.mark.services  # needs Chromium (through Playwright)

if importlib.util.find_spec("playwright") is not None:
    from playwright.async_api import Dialog, Page, async_playwright, expect

__all__ = ["chromium"]  # the fixture, shared with the chat page's tests

SHOTS = Path(os.environ.get("RXLLM_SCREENSHOTS") or ROOT / "build" / "screenshots")
DOCS_IMAGES = ROOT / "docs" / "images"
AUTH_TOKEN = "inspector-page-token-1f0e"
ANSWER = (
    "A marble diagram shows a stream as it happened: every token a mark on a time axis, "
    "the wait for the first one, the gaps between the rest."
)


def shot(name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS / name


def docs_images() -> bool:
    return os.environ.get("RXLLM_DOCS_IMAGES", "") not in ("", "0")


@pytest.fixture(scope="module")
def served(
    chromium: str, upstream: MockServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("inspector-browser")
    db = f"sqlite+aiosqlite:///{tmp / 'transcripts.db'}"
    args = ["--upstream", upstream.base_url, "--model", "mock-model", "--db", db]
    with ServeProcess(*args, log_path=tmp / "serve.log") as proc:
        yield proc


@pytest.fixture
async def page(chromium: str) -> AsyncIterator[Page]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            page = await browser.new_page(viewport={"width": 1180, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            await browser.close()


async def stream(url: str, mock: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    """Stream an answer through the server to its end; return its stream id."""
    payload = {
        "model": "mock-model",
        "messages": [{"role": "user", "content": "What does a marble diagram show?"}],
        "stream": True,
        "mock": mock,
    }
    async with (
        httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as http,
        http.stream("POST", "/v1/chat/completions", json=payload) as response,
    ):
        assert response.status_code == 200, await response.aread()
        async for _ in response.aiter_bytes():
            pass
        return response.headers["x-rxllm-stream-id"]


async def stored(url: str, stream_id: str, headers: dict[str, str] | None = None) -> Any:
    """The inspector's JSON of a stream, once the store has it finished."""
    async with httpx.AsyncClient(base_url=url, timeout=20, headers=headers) as http:
        for _ in range(300):
            data = (await http.get(f"/v1/inspect/streams/{stream_id}")).json()
            if data.get("status") == "finished":
                return data
            await asyncio.sleep(0.05)
    raise AssertionError(f"stream {stream_id} was not stored as finished")


async def test_the_list_shows_a_stream_the_test_started(page: Page, served: ServeProcess) -> None:
    stream_id = await stream(served.url, {"text": ANSWER, "interval": 0.002})
    await stored(served.url, stream_id)
    await page.goto(f"{served.url}/inspect")
    row = page.locator(f'tr.stream[data-id="{stream_id}"]')
    await expect(row).to_be_visible()
    await expect(row).to_have_attribute("data-status", "finished")
    await expect(row.locator("td").nth(2)).to_have_text("mock-model")
    await page.screenshot(path=shot("inspector-list.png"), full_page=True)

    # Filter by status: the finished stream stays, an "error" filter hides it.
    await page.select_option("select[name=status]", "error")
    await page.click("form.filters button")
    await expect(row).to_have_count(0)
    await page.select_option("select[name=status]", "finished")
    await page.click("form.filters button")
    await expect(row).to_be_visible()
    await row.click()
    await expect(page.locator("#timeline")).to_have_attribute("data-state", "finished")


async def test_one_mark_per_event_and_hover_shows_it(page: Page, served: ServeProcess) -> None:
    mock = {"reasoning": "Marks, gaps, the first wait.", "text": ANSWER, "interval": 0.01}
    mock |= {"stall": 0.2, "stall_after": 0}  # a wait before the first token, to see
    stream_id = await stream(served.url, mock)
    data = await stored(served.url, stream_id)
    events = data["events"]
    await page.goto(f"{served.url}/inspect#/s/{stream_id}")
    timeline = page.locator("#timeline")
    await expect(timeline).to_have_attribute("data-state", "finished")
    marks = timeline.locator(".mark")
    await expect(marks).to_have_count(len(events))
    seqs = [int(s) for s in await marks.evaluate_all("ms => ms.map(m => m.dataset.seq)")]
    assert sorted(seqs) == [e["seq"] for e in events]

    # The text mark farthest from both neighbours in its lane, hovered on its left edge:
    # a later mark is drawn over an earlier one, so a close right neighbour could cover
    # its centre (how close the marks are depends on how busy the machine was).
    texts = [e for e in events if e["type"] == "text" and e["text"]]
    times = [e["t"] for e in texts]

    def room(i: int) -> float:
        before = times[i] - times[i - 1] if i > 0 else float("inf")
        after = times[i + 1] - times[i] if i + 1 < len(times) else float("inf")
        return min(before, after)

    text_event = texts[max(range(1, len(texts)), key=room)]
    circle = timeline.locator(f'.mark[data-seq="{text_event["seq"]}"] circle')
    await circle.hover(position={"x": 2, "y": 6})
    detail = page.locator("#detail")
    await expect(detail).to_contain_text(f"#{text_event['seq']} text")
    await expect(detail).to_contain_text(json.dumps(text_event["text"]))

    ttft = data["first_token_at"]
    await expect(page.locator("#ttft")).to_have_text(f"{ttft * 1000:.0f} ms")
    content = [e for e in events if e["type"] in ("text", "reasoning") and e["text"]]
    bins = await page.locator("#gaps .bin").evaluate_all("bs => bs.map(b => +b.dataset.count)")
    assert sum(bins) == len(content) - 1  # every gap between two tokens, in one bin
    await expect(page.locator("#rate polyline")).to_have_count(1)
    await expect(page.locator("#message .text")).to_have_text(ANSWER)
    await expect(page.locator("#message .reasoning")).to_have_text("Marks, gaps, the first wait.")
    request = json.loads(await page.locator("#request").text_content() or "{}")
    assert request["messages"][0]["content"] == "What does a marble diagram show?"
    await page.screenshot(path=shot("inspector-stream.png"), full_page=True)
    if docs_images():
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=DOCS_IMAGES / "inspector.png", full_page=False)


async def test_a_live_streams_marks_appear_as_they_arrive(page: Page, served: ServeProcess) -> None:
    words = " ".join(f"live{i:02d}" for i in range(60))  # 7 s: the page opens well before the end
    writer = asyncio.create_task(stream(served.url, {"text": words, "interval": 0.12}))
    try:
        async with httpx.AsyncClient(base_url=served.url, timeout=20) as http:
            for _ in range(200):
                rows = (await http.get("/v1/inspect/streams")).json()["data"]
                live = [r for r in rows if r["live"]]
                if live:
                    break
                await asyncio.sleep(0.05)
        assert live, "the stream never showed as live"
        stream_id = live[0]["id"]
        # The list shows it live too.
        await page.goto(f"{served.url}/inspect")
        await expect(page.locator(f'tr.stream[data-id="{stream_id}"]')).to_have_attribute(
            "data-live", "1"
        )
        await page.goto(f"{served.url}/inspect#/s/{stream_id}")
        await page.evaluate(
            """() => { window.__counts = [];
              const box = document.getElementById("timeline");
              new MutationObserver(() => {
                const n = box.querySelectorAll(".mark").length;
                if (window.__counts.at(-1) !== n) window.__counts.push(n);
              }).observe(box, {childList: true, subtree: true}); }"""
        )
        timeline = page.locator("#timeline")
        await expect(timeline).to_have_attribute("data-state", "running")
        await expect(timeline).to_have_attribute("data-state", "finished", timeout=TIMEOUT_MS)
        assert await writer == stream_id
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
    counts: list[int] = await page.evaluate("window.__counts")
    data = await stored(served.url, stream_id)
    assert counts == sorted(counts), counts  # marks are only added
    assert len(counts) >= 10, counts  # they came in many steps, not at once
    assert counts[-1] == len(data["events"])
    await expect(page.locator("#message .text")).to_have_text(words)
    await page.screenshot(path=shot("inspector-live.png"), full_page=True)


async def test_replay_plays_the_stream_and_ends_with_the_same_text(
    page: Page, served: ServeProcess
) -> None:
    stream_id = await stream(served.url, {"text": ANSWER, "interval": 0.02})
    data = await stored(served.url, stream_id)
    await page.goto(f"{served.url}/inspect#/s/{stream_id}")
    await expect(page.locator("#timeline")).to_have_attribute("data-state", "finished")
    await page.evaluate(
        """() => { window.__replayed = [];
          const box = document.getElementById("replay-text");
          new MutationObserver(() => window.__replayed.push(box.textContent))
            .observe(box, {childList: true, subtree: true, characterData: true}); }"""
    )
    await page.select_option("#speed", "5")
    await page.click("#replay")
    replay_text = page.locator("#replay-text")
    await expect(replay_text).to_have_attribute("data-state", "done", timeout=TIMEOUT_MS)
    await expect(replay_text).to_have_text(ANSWER)
    states: list[str] = await page.evaluate("window.__replayed")
    grown = [s for i, s in enumerate(states) if s and (i == 0 or s != states[i - 1])]
    assert len(grown) >= 5 and all(b.startswith(a) for a, b in pairwise(grown))
    await expect(page.locator("#timeline .mark")).to_have_count(len(data["events"]))


async def test_the_inspector_asks_for_the_token_once_per_tab(
    page: Page, upstream: MockServer, tmp_path: Path
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 't.db'}"
    args = ["--upstream", upstream.base_url, "--model", "mock-model", "--db", db]
    asked: list[str] = []

    async def answer(dialog: Dialog) -> None:
        asked.append(dialog.message)
        await dialog.accept(AUTH_TOKEN)

    page.on("dialog", answer)
    bearer = {"Authorization": f"Bearer {AUTH_TOKEN}"}
    with ServeProcess(
        *args, log_path=tmp_path / "serve.log", env={"RXLLM_AUTH_TOKEN": AUTH_TOKEN}
    ) as proc:
        stream_id = await stream(proc.url, {"text": ANSWER, "interval": 0.002}, bearer)
        await stored(proc.url, stream_id, bearer)
        await page.goto(f"{proc.url}/inspect")
        row = page.locator(f'tr.stream[data-id="{stream_id}"]')
        await expect(row).to_be_visible()
        await row.click()
        await expect(page.locator("#message .text")).to_have_text(ANSWER)
        await expect(page.locator("#timeline")).to_have_attribute("data-state", "finished")
    assert len(asked) == 1 and "token" in asked[0], asked


async def test_a_marble_diagram_drawn_in_chromium(page: Page, served: ServeProcess) -> None:
    """The SVG of pipeline.core.marbles, as a browser (and so Jupyter) shows it."""
    mock = {"reasoning": "Short think.", "text": ANSWER, "interval": 0.012, "stall": 0.15}
    stream_id = await stream(served.url, {**mock, "stall_after": 0})
    data = await stored(served.url, stream_id)
    events = [load_event(e) for e in data["events"]]
    svg = marbles(events, title="a stream from the built-in model", width=1000).to_svg()
    await page.set_viewport_size({"width": 1000, "height": 400})
    await page.set_content(f"<body style='margin:0'>{svg}</body>")
    drawn = page.locator("svg .marble")
    await expect(drawn).to_have_count(len(events))
    diagram = page.locator("svg.rxllm-marbles")
    await diagram.screenshot(path=shot("marbles.png"))
    if docs_images():
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        await diagram.screenshot(path=DOCS_IMAGES / "marbles.png")


async def test_markup_in_a_stream_is_shown_as_text_never_run(
    page: Page, served: ServeProcess
) -> None:
    hostile = '<img src=x onerror="window.__ran=1"> </script><b>bold</b> & done'
    stream_id = await stream(served.url, {"text": hostile, "interval": 0.002})
    await stored(served.url, stream_id)
    await page.goto(f"{served.url}/inspect#/s/{stream_id}")
    await expect(page.locator("#timeline")).to_have_attribute("data-state", "finished")
    await expect(page.locator("#message .text")).to_have_text(hostile)
    await page.locator("#timeline .mark").last.dispatch_event("click")
    assert await page.evaluate("window.__ran") is None
    assert await page.locator("#message img, #message b, #timeline img, #detail *").count() == 0
