"""Backpressure: a reader that does not read slows its own upstream, then is cut off.

Regression tests: a client that never read, while its upstream streamed fast,
made the server buffer everything (hundreds of MB), and a slow reader's
buffer merged deltas in quadratic time. Now a reader's buffer is bounded in
bytes and, when full, holds its stream's flow gate: the source stops reading
the upstream, whose socket then stops taking bytes; after ``--send-timeout``
the reader is cut off. The upstream here floods and counts what its socket
took (:mod:`tests.flood_upstream`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from pipeline.core.events import Finished, TextDelta
from pipeline.core.flow_control import FlowGate
from pipeline.runtime.async_bridges import BufferedObserver
from tests.flood_upstream import FloodUpstream
from tests.serving import ServeProcess

SEND_TIMEOUT = 6.0


@pytest.fixture(scope="module")
def flood() -> Iterator[FloodUpstream]:
    with FloodUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def served(
    flood: FloodUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("flood")
    args = ["--upstream", flood.base_url, "--model", "flood", "--no-store"]
    args += ["--send-timeout", str(SEND_TIMEOUT)]
    with ServeProcess(*args, log_path=tmp / "serve.log") as proc:
        yield proc


async def open_and_stall(
    served: ServeProcess, method: str, path: str, body: bytes
) -> asyncio.StreamWriter:
    """Send a request on a raw socket, read the first bytes of the answer, then read no more."""
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(
        f"{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    assert (await reader.read(4096)).startswith(b"HTTP/1.1 200")
    return writer


async def wait_until(predicate: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.slow  # starts rxllm serve
@pytest.mark.parametrize("route", ["chat", "events"])
async def test_a_reader_that_stops_reading_pauses_its_upstream_then_is_cut_off(
    served: ServeProcess, flood: FloodUpstream, route: str
) -> None:
    before = len(flood.requests)
    chat = {"model": "flood", "messages": [{"role": "user", "content": "go"}], "stream": True}
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        if route == "chat":
            writer = await open_and_stall(
                served, "POST", "/v1/chat/completions", json.dumps(chat).encode()
            )
        else:
            started = await http.post("/v1/streams", json=chat)
            path = f"/v1/streams/{started.json()['id']}/events"
            writer = await open_and_stall(served, "GET", path, b"")
        assert await wait_until(lambda: len(flood.requests) > before, 10)
        request = flood.requests[before]
        await asyncio.sleep(SEND_TIMEOUT / 3)
        paused_at = request.sent
        await asyncio.sleep(SEND_TIMEOUT / 3)
        # The proxy holds at most its reader's buffer and the sockets' buffers: the
        # upstream's socket took nothing more while our reader read nothing.
        assert request.sent - paused_at <= 64 * 1024, (paused_at, request.sent)
        assert request.sent < 64 * 1024 * 1024
        assert (await http.get("/v1/models")).status_code == 200  # others are served
        # Cut off after the send timeout (and, on the events route, the orphan grace).
        assert await wait_until(lambda: request.closed_at is not None, SEND_TIMEOUT + 15)
        writer.close()


def test_a_full_reader_holds_the_gate_until_it_has_read_half_its_bytes() -> None:
    gate = FlowGate()
    buffer: BufferedObserver[TextDelta] = BufferedObserver(1000, max_bytes=10_000, flow=gate)
    seq = 0
    while not gate.held:
        buffer.on_next(TextDelta(stream_id="s", seq=seq, text="x" * 1000))
        seq += 1
    assert buffer.buffered_bytes > 10_000 - 1000
    pieces = buffer._items  # read without a loop: pop one by one
    while gate.held:
        assert pieces
        buffer._pop()
    assert buffer.buffered_bytes <= 5_000
    buffer.on_next(TextDelta(stream_id="s", seq=seq, text="x" * 20_000))
    assert gate.held
    buffer.close()  # the reader left while behind
    assert not gate.held


@pytest.mark.slow  # 20 MB of deltas
async def test_a_slow_readers_merged_deltas_copy_each_piece_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20,000 deltas of 1 KB into a 4-item buffer: one copy per event read, not per piece.

    Merging by re-joining the tail on every delta was quadratic (minutes for this).
    """
    copies = 0
    original = TextDelta.model_copy

    def counting(self: TextDelta, *args: object, **kwargs: object) -> TextDelta:
        nonlocal copies
        copies += 1
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(TextDelta, "model_copy", counting)
    buffer: BufferedObserver[TextDelta | Finished] = BufferedObserver(maxsize=4)
    piece = "y" * 1024
    for seq in range(20_000):
        buffer.on_next(TextDelta(stream_id="s", seq=seq, text=piece))
    buffer.on_next(Finished(stream_id="s", seq=20_000))
    buffer.on_completed()
    got = [event async for event in buffer]
    assert sum(len(e.text) for e in got if isinstance(e, TextDelta)) == 20_000 * 1024
    assert copies <= len(got)
    assert [e.seq for e in got][-2:] == [19_999, 20_000]
