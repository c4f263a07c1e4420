"""The incremental SSE decoder, tested at every split point of its input."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.sse_decoder import SSEDecoder, SSEMessage

BODY = (
    ": heartbeat\r\n"
    "event: error\r\n"
    'data: {"error": "é😀"}\r\n'
    "\r\n"
    "id: 7\n"
    "data: line one\n"
    "data:line two\n"
    "\n"
    "data: cr only\r"
    "\r"
    "retry: 10\n"
    "event: ignored-because-no-data\n"
    "\n"
    "data: [DONE]\n\n"
).encode()

EXPECTED = [
    SSEMessage('{"error": "é😀"}', "error", None),
    SSEMessage("line one\nline two", None, "7"),
    SSEMessage("cr only", None, "7"),
    SSEMessage("[DONE]", None, "7"),
]


def decode_all(chunks: list[bytes]) -> list[SSEMessage]:
    decoder = SSEDecoder()
    out: list[SSEMessage] = []
    for c in chunks:
        out.extend(decoder.decode(c))
    out.extend(decoder.flush())
    return out


def test_whole_body() -> None:
    assert decode_all([BODY]) == EXPECTED


def test_every_single_split_point() -> None:
    for i in range(len(BODY) + 1):
        assert decode_all([BODY[:i], BODY[i:]]) == EXPECTED, i


def test_byte_by_byte_including_inside_utf8_sequences() -> None:
    assert decode_all([BODY[i : i + 1] for i in range(len(BODY))]) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(BODY)), max_size=12))
def test_random_splits(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(BODY)]
    assert decode_all([BODY[a:b] for a, b in itertools.pairwise(points)]) == EXPECTED


def test_last_message_without_blank_line_is_flushed() -> None:
    decoder = SSEDecoder()
    assert decoder.decode(b"data: tail") == []
    assert decoder.flush() == [SSEMessage("tail")]


def test_crlf_split_across_chunks_is_one_line_break() -> None:
    decoder = SSEDecoder()
    assert decoder.decode(b"data: a\r") == []
    assert decoder.decode(b"\ndata: b\r\n\r\n") == [SSEMessage("a\nb")]


def test_arrival_time_is_stamped() -> None:
    decoder = SSEDecoder()
    assert decoder.decode(b"data: x\n\n", t=1.5) == [SSEMessage("x", t=1.5)]
