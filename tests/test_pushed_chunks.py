"""Whole chunks taken in the connection's callback (``raw_body(response, push)``).

On rxllm's network backend, while ``raw_body``'s generator waits for the next
chunk, a read that is exactly one whole chunk is offered to ``push`` in the
protocol's callback, without waking the task. Over real sockets: every piece
arrives once and in order whichever way it went, whatever the upstream's
cuts; a piece ``push`` declines is the generator's; what ``push`` raises is the
generator's; the read timeout counts from the last chunk either way; and the
source (``chat_completions``) relays a stream taken this way whole.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from openai import AsyncOpenAI

from pipeline.apps.builtin_model import MockServer
from pipeline.runtime.http_backend import _Protocol, http_client
from pipeline.runtime.http_body import raw_body
from tests.test_http_body import ONE, PIECES, THREE, TWO, _chunk, _frame, _serve_pieces
from tests.test_netbackend import consume

MANY = [_frame(f"w{i}") for i in range(40)]


async def _read_with_push(
    url: str,
    push: Callable[[bytes], bool],
    got: list[tuple[str, bytes]],
    limits: httpx2.Timeout | None = None,
    body: dict[str, Any] | None = None,
) -> None:
    """Read the body at ``url``, each piece into ``got`` as ("pushed"/"read", piece)."""

    def taken(piece: bytes) -> bool:
        if not push(piece):
            return False
        got.append(("pushed", piece))
        return True

    timeout = httpx2.USE_CLIENT_DEFAULT if limits is None else limits
    async with (
        http_client() as http,
        http.stream("POST", url, json=body or {}, timeout=timeout) as response,
    ):
        chunks = raw_body(response, taken)
        assert chunks is not None, "the fast path was not taken"
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                got.append(("read", chunk))


@contextlib.asynccontextmanager
async def serving(pieces: list[bytes]) -> Any:
    server = await _serve_pieces([*pieces, b"0\r\n\r\n"])
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("case", [*PIECES, "many whole chunks"])
async def test_every_piece_arrives_once_in_order_whichever_way_it_went(case: str) -> None:
    pieces = [_chunk(frame) for frame in MANY] if case == "many whole chunks" else PIECES[case]
    expected = b"".join(MANY) if case == "many whole chunks" else ONE + TWO + THREE
    got: list[tuple[str, bytes]] = []
    async with serving(pieces) as url:
        await _read_with_push(url, lambda piece: True, got)
    assert b"".join(piece for _, piece in got) == expected
    if case in ("whole chunks", "many whole chunks"):
        # The first chunk is read (the body's first read is h11's); the rest are pushed.
        assert [way for way, _ in got].count("pushed") >= len(pieces) // 2, got


async def test_a_piece_push_declines_is_the_generators() -> None:
    got: list[tuple[str, bytes]] = []
    declined: list[bytes] = []

    def every_other(piece: bytes) -> bool:
        if len(declined) <= len(got) // 2:
            declined.append(piece)
            return False
        return True

    async with serving([_chunk(frame) for frame in MANY]) as url:
        await _read_with_push(url, every_other, got)
    assert b"".join(piece for _, piece in got) == b"".join(MANY)
    assert declined and all(("read", piece) in got for piece in declined)
    assert any(way == "pushed" for way, _ in got)


async def test_what_push_raises_comes_out_of_the_generator() -> None:
    class Refused(Exception):
        pass

    def refuse(piece: bytes) -> bool:
        raise Refused(piece.decode())

    got: list[tuple[str, bytes]] = []
    async with serving([_chunk(frame) for frame in MANY[:5]]) as url:
        with pytest.raises(Refused) as caught:
            await _read_with_push(url, refuse, got)
    # The chunks before the first one offered to push were read; that one raised.
    k = MANY.index(str(caught.value).encode())
    assert k >= 1 and got == [("read", frame) for frame in MANY[:k]]


def _mock_body(mock: dict[str, Any]) -> dict[str, Any]:
    messages = [{"role": "user", "content": "hi"}]
    return {"model": "mock-model", "messages": messages, "stream": True, "mock": mock}


async def test_the_read_timeout_counts_from_the_last_pushed_chunk(upstream: MockServer) -> None:
    """Pushed chunks keep a slow stream alive past its read timeout; a stall still times out."""
    url = upstream.base_url + "/chat/completions"
    got: list[tuple[str, bytes]] = []
    slow = _mock_body({"text": " ".join(["w"] * 12), "interval": 0.1})  # 1.2 s in all
    await _read_with_push(url, lambda piece: True, got, httpx2.Timeout(10, read=0.6), slow)
    assert sum(piece.count(b"data: ") for _, piece in got) == 12 + 3
    assert any(way == "pushed" for way, _ in got)
    stalled = _mock_body({"text": "a b c d e f", "stall": 30, "stall_after": 4, "interval": 0.05})
    got.clear()
    with pytest.raises(httpx2.ReadTimeout):
        await asyncio.wait_for(
            _read_with_push(url, lambda piece: True, got, httpx2.Timeout(10, read=0.3), stalled),
            20,
        )
    assert any(way == "pushed" for way, _ in got)


async def test_the_source_relays_a_pushed_stream_whole(upstream: MockServer) -> None:
    words = [f"w{i}" for i in range(60)]
    async with AsyncOpenAI(
        base_url=upstream.base_url, api_key="k", max_retries=0, http_client=http_client()
    ) as client:
        result = await consume(client, {"text": " ".join(words), "interval": 0.005})
    assert result.status == "finished"
    assert (result.choices[0].content or "").split() == words


async def test_a_chunk_is_never_pushed_ahead_of_one_waiting_to_be_read() -> None:
    """The protocol offers a chunk to push only while a read waits with nothing unread."""
    protocol = _Protocol()
    pushed: list[bytes] = []

    def take(data: bytes) -> bool:
        if data.startswith(b"partial"):
            return False
        pushed.append(data)
        return True

    protocol.push = take
    protocol.reader = asyncio.get_running_loop().create_future()
    protocol.data_received(b"whole 1")  # a read waits, nothing unread: pushed
    protocol.data_received(b"partial")  # declined: queued, the read woken
    protocol.data_received(b"whole 2")  # the read has not run yet: queued behind it
    assert pushed == [b"whole 1"]
    assert protocol.reader.done() and protocol.chunks == [b"partial", b"whole 2"]
    protocol.reader = None
    protocol.data_received(b"whole 3")  # no read waiting: queued
    assert protocol.chunks == [b"partial", b"whole 2", b"whole 3"]
