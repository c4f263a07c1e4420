"""Fair share of the event loop: a stream that always has data lets the others run.

Regression test: one socket read from a fast upstream holds hundreds of
messages, and the HTTP source handed them all through the operators and the
sinks in one loop step; with a few such streams a loop turn took hundreds of
milliseconds and every other request waited. Now a source hands on at most
:data:`pipeline.runtime.32` messages per loop turn. The
upstream here writes thousands of messages per socket write; a task counts
the loop turns between the messages (counted, not timed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from openai import AsyncOpenAI

from pipeline.core.sse_decoder import SSEMessage
from pipeline.runtime import sources
from pipeline.runtime.http_backend import http_client
from tests.flood_upstream import FloodUpstream

FRAMES = 8_000


@pytest.fixture(params=["asyncio-backend", "default-backend"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[AsyncOpenAI]:
    with FloodUpstream(chunk_size=1, burst=2_000, frames=FRAMES) as upstream:
        http = http_client() if request.param == "asyncio-backend" else None
        async with AsyncOpenAI(
            base_url=upstream.base_url, api_key="k", max_retries=0, http_client=http
        ) as openai:
            yield openai


def longest_run(seen: list[SSEMessage | None]) -> int:
    """The most messages in a row with no turn of the other task between them."""
    longest = run = 0
    for item in seen:
        run = 0 if item is None else run + 1
        longest = max(longest, run)
    return longest


async def test_a_read_of_thousands_of_messages_is_handed_on_a_few_per_loop_turn(
    client: AsyncOpenAI,
) -> None:
    seen: list[SSEMessage | None] = []  # a message, or None for a turn of the other task
    done = asyncio.Event()
    errors: list[Exception] = []

    async def other_task() -> None:
        while not done.is_set():
            seen.append(None)
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    source = sources.chat_completions(
        client, model="flood", messages=[{"role": "user", "content": "go"}]
    )
    source.subscribe(seen.append, errors.append, done.set)
    await asyncio.wait_for(done.wait(), 60)
    await other
    assert not errors
    messages = [item for item in seen if item is not None]
    assert len(messages) == FRAMES + 2  # the text frames, the stop frame, [DONE]
    assert longest_run(seen) <= sources.TURN_MESSAGES
    # The first message went on alone: the first token is not held by the next ones.
    assert seen[seen.index(messages[0]) + 1] is None
