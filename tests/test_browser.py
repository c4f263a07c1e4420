"""The chat page of ``rxllm serve`` (``GET /``) in a real headless Chromium.

Playwright drives Debian's Chromium (``/usr/bin/chromium``; Playwright's own
browser download is not used). The page posts ``{"messages": [...]}`` to
``/v1/streams`` and follows ``/v1/streams/{id}/events`` with an
``EventSource``; each test adds a ``"mock"`` script to that POST (through
``page.route``), which ``/v1/streams`` passes upstream to the in-test mock.

* the streamed text (and reasoning) appears piece by piece and ends equal to
  the script's, and the stats line shows time to first token and tokens/s;
* a parallel tool-call answer: each call's arguments assemble on the page,
  with the partial parse, then the final parsed arguments;
* a connection cut mid-stream (by a TCP forwarder between Chromium and the
  server): the browser's own EventSource reconnect resumes with
  ``Last-Event-ID`` and the text ends complete, with no duplicate and no gap.

Needs Debian's ``chromium`` and the ``playwright`` Python package:
``scripts/install-test-deps.sh``. Skipped when missing, failed when the
``CI`` variable is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import pytest

from pipeline.apps.builtin_model import MockServer
from tests.serving import ServeProcess

pytestmark = pytest.mark.services  # needs Chromium (through Playwright)

if importlib.util.find_spec("playwright") is not None:
    from playwright.async_api import Dialog, Locator, Page, Route, async_playwright, expect

# What Chromium needs as root, without a GPU, on a machine with no outside network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000
WORDS = [f"word{i:02d}" for i in range(24)]
TEXT = " ".join(WORDS)
TOOL_CALLS = [
    {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "unit": "celsius"})},
    {"name": "get_time", "arguments": json.dumps({"tz": "Europe/Paris", "format": "24h"})},
]


def require(what: str, found: object) -> None:
    """Skip a test whose tool is missing; under ``CI`` fail it instead."""
    if found:
        return
    message = f"{what} is not installed: run scripts/install-test-deps.sh"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{message} (CI is set, so a missing tool fails)", pytrace=False)
    pytest.skip(message)


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (path := shutil.which(candidate)):
            return path
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    """Chromium's path; checked before any server starts."""
    require("the playwright Python package", importlib.util.find_spec("playwright"))
    executable = chromium_path()
    require("chromium", executable)
    assert executable is not None
    return executable


@pytest.fixture(scope="module")
def served(
    chromium: str, upstream: MockServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("serve-browser")
    args = ["--upstream", upstream.base_url, "--model", "mock-model", "--no-store"]
    with ServeProcess(*args, log_path=tmp / "serve.log") as proc:
        yield proc


@pytest.fixture
async def page(chromium: str) -> AsyncIterator[Page]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            page = await browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            await browser.close()


# Records every state of the answers on the page (a MutationObserver), so a
# test can see how the text and the tool calls grew, not only how they ended.
RECORD_HISTORY = """() => {
  window.__history = [];
  let last = "";
  const snap = () => {
    const boxes = [...document.querySelectorAll("#log .assistant")].map((box) => ({
      state: box.dataset.state ?? null,
      text: box.querySelector(".text")?.textContent ?? "",
      tools: [...box.querySelectorAll(".tool")].map((t) => ({
        head: t.querySelector(".head")?.textContent ?? "",
        args: t.querySelector(".args")?.textContent ?? "",
        partial: t.querySelector(".partial")?.textContent ?? "",
        state: t.dataset.state ?? null,
      })),
    }));
    const json = JSON.stringify(boxes);
    if (json !== last) { last = json; window.__history.push(boxes); }
  };
  new MutationObserver(snap).observe(document.getElementById("log"),
    {childList: true, subtree: true, characterData: true, attributes: true});
}"""


async def ask(page: Page, url: str, prompt: str, mock: dict[str, Any]) -> Locator:
    """Open the page, send ``prompt`` with ``mock`` as the upstream's script; return the answer."""

    async def add_script(route: Route) -> None:
        body = json.loads(route.request.post_data or "{}")
        body["mock"] = mock
        await route.continue_(post_data=json.dumps(body))

    await page.route("**/v1/streams", add_script)
    await page.goto(f"{url}/")
    await page.evaluate(RECORD_HISTORY)
    await page.fill("#prompt", prompt)
    await page.press("#prompt", "Enter")
    await expect(page.locator("#log .user").last).to_have_text(prompt)
    return page.locator("#log .assistant").last


async def history(page: Page) -> list[dict[str, Any]]:
    """The recorded states of the last answer, oldest first."""
    states: list[list[dict[str, Any]]] = await page.evaluate("window.__history")
    return [boxes[-1] for boxes in states if boxes]


async def counters(box: Locator) -> dict[str, int]:
    """The page's reconnect, duplicate and gap counters of an answer."""
    names = ("reconnects", "duplicates", "gaps")
    return {n: int(await box.get_attribute(f"data-{n}") or "0") for n in names}


def growing(values: list[str]) -> list[str]:
    """The distinct values in order; asserts each one extends the one before."""
    out: list[str] = []
    for value in values:
        if not out or value != out[-1]:
            assert not out or value.startswith(out[-1]), (out[-1], value)
            out.append(value)
    return out


async def test_streamed_text_and_stats(
    page: Page, served: ServeProcess, upstream: MockServer
) -> None:
    mock = {"reasoning": "Let me count.", "text": TEXT, "interval": 0.04}
    box = await ask(page, served.url, "Count to twenty-four", mock)
    await expect(box).to_have_attribute("data-state", "finished", timeout=TIMEOUT_MS)
    request = upstream.recorder.last_request
    assert request is not None and request.script == mock  # /v1/streams passed it upstream
    assert await counters(box) == {"reconnects": 0, "duplicates": 0, "gaps": 0}

    assert await box.locator(".text").text_content() == TEXT
    assert await box.locator(".reasoning").text_content() == "Let me count."
    texts = growing([state["text"] for state in await history(page)])
    assert len(texts) >= len(WORDS) // 2, texts  # it streamed, not all at once
    assert texts[-1] == TEXT

    stats = box.locator(".stats")
    line = await stats.text_content() or ""
    match = re.fullmatch(r"time to first token (\d+) ms · (\d+\.\d) tokens/s", line)
    assert match, line
    ttft_ms = float(await stats.get_attribute("data-ttft-ms") or "nan")
    tokens_per_second = float(await stats.get_attribute("data-tokens-per-second") or "nan")
    assert 0 < ttft_ms < 10_000
    assert int(match[1]) == round(ttft_ms)
    # Tokens come every 0.04 s (25/s) at most; slower on a busy machine, never much faster.
    assert 1 < tokens_per_second < 40, tokens_per_second
    assert float(match[2]) == pytest.approx(tokens_per_second, abs=0.051)


async def test_the_page_asks_for_the_token_of_a_server_that_has_one(
    page: Page, upstream: MockServer, tmp_path: Path
) -> None:
    token = "page-token-51c3"
    args = ["--upstream", upstream.base_url, "--model", "mock-model", "--no-store"]
    asked: list[str] = []

    async def answer(dialog: Dialog) -> None:
        asked.append(dialog.message)
        await dialog.accept(token)

    page.on("dialog", answer)
    env = {"RXLLM_AUTH_TOKEN": token}
    with ServeProcess(*args, log_path=tmp_path / "serve.log", env=env) as proc:
        for prompt in ("first", "second"):
            box = await ask(page, proc.url, prompt, {"text": "Bonjour tout le monde"})
            await expect(box).to_have_attribute("data-state", "finished", timeout=TIMEOUT_MS)
            assert await box.locator(".text").text_content() == "Bonjour tout le monde"
    assert len(asked) == 1 and "token" in asked[0], asked  # once per tab: then remembered


async def test_the_page_shows_a_tool_call_of_the_built_in_model_with_no_key(
    page: Page, chromium: str, tmp_path: Path
) -> None:
    with ServeProcess("--no-store", log_path=tmp_path / "serve.log") as proc:
        await page.goto(f"{proc.url}/")
        await page.check("#offer-tools")
        await page.fill("#prompt", "What is the weather in Paris?")
        await page.press("#prompt", "Enter")
        box = page.locator("#log .assistant").last
        await expect(box).to_have_attribute("data-state", "finished", timeout=TIMEOUT_MS)
        tool = box.locator(".tool")
        await expect(tool).to_have_count(1)
        assert await tool.locator(".head").text_content() == "⚙ get_weather("
        arguments = json.loads(await tool.locator(".args").text_content() or "")
        assert arguments["city"] == "Paris" and arguments["unit"] in ("celsius", "fahrenheit")


async def test_parallel_tool_calls_assemble_on_the_page(page: Page, served: ServeProcess) -> None:
    mock = {"tool_calls": TOOL_CALLS, "fragment_size": 4, "interval": 0.03}
    box = await ask(page, served.url, "Weather and time in Paris?", mock)
    await expect(box).to_have_attribute("data-state", "finished", timeout=TIMEOUT_MS)

    assert await counters(box) == {"reconnects": 0, "duplicates": 0, "gaps": 0}
    tools = box.locator(".tool")
    await expect(tools).to_have_count(len(TOOL_CALLS))
    states = await history(page)
    for i, call in enumerate(TOOL_CALLS):
        tool = tools.nth(i)
        final_args = json.loads(call["arguments"])
        assert await tool.locator(".head").text_content() == f"⚙ {call['name']}("
        assert await tool.locator(".args").text_content() == call["arguments"]
        assert await tool.get_attribute("data-state") == "completed"
        done = await tool.locator(".partial").text_content() or ""
        assert done.startswith("✓ ") and json.loads(done[2:]) == final_args

        seen = [s["tools"][i] for s in states if len(s["tools"]) > i]
        # The arguments text grew fragment by fragment...
        args = growing([t["args"] for t in seen])
        assert len(args) >= 4 and args[-1] == call["arguments"], args
        # ...with the partial parse shown while it grew, then the final parse.
        partials = [t["partial"] for t in seen if t["partial"].startswith("so far: ")]
        assert len(partials) >= 2, partials
        for text in partials:
            partial = json.loads(text.removeprefix("so far: "))
            assert isinstance(partial, dict) and partial.keys() <= final_args.keys()
            for key, value in partial.items():
                assert str(final_args[key]).startswith(str(value)), (key, value)
        assert [t["partial"] for t in seen][-1] == done


@dataclass(eq=False)
class _Connection:
    generation: int  # how many cuts had happened when it opened
    request: bytearray = field(default_factory=bytearray)  # the first bytes the client sent
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


class Forwarder:
    """A loopback TCP forwarder to ``target_port`` whose connections can be cut.

    :meth:`cut` aborts every open connection (both sides, with a reset);
    connections made afterwards go through as usual.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cuts = 0
        self.connections: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._abort_all()
        await self._server.wait_closed()

    def cut(self) -> int:
        """Abort the open connections; return how many there were."""
        self.cuts += 1
        return self._abort_all()

    def _abort_all(self) -> int:
        opened = list(self._open)
        for connection in opened:
            for writer in connection.writers:
                writer.transport.abort()
        return len(opened)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(self.cuts, writers=[writer])
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        connection.writers.append(up_writer)
        self.connections.append(connection)
        self._open.add(connection)
        pipes = [
            asyncio.create_task(_pipe(reader, up_writer, connection.request)),
            asyncio.create_task(_pipe(up_reader, writer, None)),
        ]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._open.discard(connection)
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for w in connection.writers:
                w.close()


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: bytearray | None
) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            if log is not None and len(log) < 8192:
                log.extend(data[: 8192 - len(log)])
            writer.write(data)
            await writer.drain()


async def test_cut_connection_resumes_with_last_event_id(
    page: Page, served: ServeProcess, upstream: MockServer
) -> None:
    words = [f"part{i:02d}" for i in range(50)]
    text = " ".join(words)
    mock = {"text": text, "interval": 0.08}
    async with Forwarder(served.port) as forwarder:
        box = await ask(page, forwarder.url, "Tell me a long story", mock)
        # Cut once some text has arrived, mid-stream.
        await page.wait_for_function(
            "() => (document.querySelector('#log .assistant .text')?.textContent ?? '')"
            ".split(' ').length >= 8",
            timeout=TIMEOUT_MS,
        )
        at_cut = await box.evaluate(
            "b => [b.dataset.state, b.querySelector('.text').textContent,"
            " Number(b.dataset.lastSeq)]"
        )
        cut_at = time.monotonic()
        assert forwarder.cut() >= 1
        assert at_cut[0] == "streaming" and len(at_cut[1]) < len(text), at_cut

        await expect(box).to_have_attribute("data-state", "finished", timeout=TIMEOUT_MS)
        finished_in = time.monotonic() - cut_at

    assert await box.locator(".text").text_content() == text
    seen = await counters(box)
    assert seen["reconnects"] >= 1 and seen["duplicates"] == 0 and seen["gaps"] == 0, seen
    texts = growing([s["text"] for s in await history(page)])  # never went backwards
    assert texts[-1] == text

    # The browser's reconnect asked for the events after the last one it had.
    resumed = [c.request.decode("latin-1") for c in forwarder.connections if c.generation >= 1]
    last_ids = [
        int(m[1])
        for r in resumed
        if "/events" in r
        for m in [re.search(r"(?im)^last-event-id:\s*(\d+)\s*$", r)]
        if m
    ]
    assert last_ids and last_ids[0] >= at_cut[2] >= 1, (at_cut, resumed)
    # The stream itself was never cancelled: the upstream answered to its end.
    request = upstream.recorder.last_request
    assert request is not None and request.script == mock
    assert await upstream.recorder.wait_for_async(lambda: request.outcome, 10) == "completed"
    assert finished_in < 20
