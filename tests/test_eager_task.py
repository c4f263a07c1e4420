"""``eager_task`` and ``step_now``: steps run in the caller's step, as the task, in its context."""

from __future__ import annotations

import asyncio
import contextvars
import json
from typing import Any

import anyio
import pytest
from openai import AsyncOpenAI

from pipeline.runtime import sources
from pipeline.runtime.eager_task import eager_task, step_now, waiting_step
from pipeline.runtime.http_backend import AsyncioBackend, http_client

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


async def test_the_first_step_runs_before_it_returns_as_the_task() -> None:
    loop = asyncio.get_running_loop()
    caller = asyncio.current_task()
    steps: list[tuple[str, Any]] = []
    go: asyncio.Future[None] = loop.create_future()

    async def work() -> int:
        steps.append(("first", asyncio.current_task()))
        await go
        steps.append(("later", asyncio.current_task()))
        return 7

    task = eager_task(loop, work())
    assert steps == [("first", task)]
    assert asyncio.current_task() is caller
    go.set_result(None)
    assert await task == 7
    assert steps == [("first", task), ("later", task)]


async def test_it_runs_in_its_own_copy_of_the_callers_context() -> None:
    loop = asyncio.get_running_loop()
    VAR.set("caller")
    go: asyncio.Future[None] = loop.create_future()
    seen: list[str] = []

    async def work() -> None:
        seen.append(VAR.get())
        VAR.set("task")
        await go
        seen.append(VAR.get())

    task = eager_task(loop, work())
    assert VAR.get() == "caller"
    go.set_result(None)
    await task
    assert seen == ["caller", "task"] and VAR.get() == "caller"


async def test_anyio_locks_and_scopes_held_across_its_first_wait() -> None:
    # What httpcore2 does on a new connection: a lock and a cancel scope entered in
    # the first step and left in a later one, each checking it is the same task.
    loop = asyncio.get_running_loop()
    lock = anyio.Lock(fast_acquire=True)
    go: asyncio.Future[None] = loop.create_future()

    async def work() -> str:
        async with lock:
            with anyio.CancelScope():
                await go
        return "done"

    task = eager_task(loop, work())
    assert lock.locked()
    go.set_result(None)
    assert await task == "done" and not lock.locked()


async def test_a_first_step_that_returns_or_raises() -> None:
    loop = asyncio.get_running_loop()

    async def returns() -> str:
        return "now"

    async def raises() -> None:
        raise ValueError("in the first step")

    assert await eager_task(loop, returns()) == "now"
    with pytest.raises(ValueError, match="in the first step"):
        await eager_task(loop, raises())


@pytest.mark.parametrize("turns", [0, 2])
async def test_cancelling_throws_where_it_waits(turns: int) -> None:
    # turns=0: cancelled before the task's own first step has run.
    loop = asyncio.get_running_loop()
    cleaned: list[str] = []

    async def work() -> None:
        try:
            await loop.create_future()
        finally:
            cleaned.append("finally")

    task = eager_task(loop, work())
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled() and cleaned == ["finally"]


async def test_cancelling_one_that_ended_in_its_first_step() -> None:
    loop = asyncio.get_running_loop()

    async def returns() -> str:
        return "now"

    task = eager_task(loop, returns())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_from_a_callback_outside_any_task() -> None:
    loop = asyncio.get_running_loop()
    made: asyncio.Future[asyncio.Task[Any]] = loop.create_future()
    inside: list[Any] = []

    async def work() -> str:
        inside.append(asyncio.current_task())
        await asyncio.sleep(0)
        return "ok"

    loop.call_soon(lambda: made.set_result(eager_task(loop, work())))
    task = await made
    assert inside == [task]
    assert await task == "ok"


async def test_a_source_has_its_request_in_the_pool_when_subscribe_returns() -> None:
    # The upstream request leaves in the subscriber's step: no loop turn first.
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.set_result(await reader.readuntil(b"\r\n\r\n"))
        body = b"data: [DONE]\n\n"
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    http = http_client()
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", http_client=http)
    client.max_retries = 0
    pool: Any = http._transport._pool  # type: ignore[attr-defined]
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    subscription = sources.chat_completions(
        client, model="m", messages=[{"role": "user", "content": json.dumps("hi")}]
    ).subscribe(on_completed=lambda: done.set_result(None))
    try:
        assert len(pool._requests) == 1  # in the pool before any loop turn
        await asyncio.wait_for(done, 10)
        assert (await got).startswith(b"POST /v1/chat/completions ")
    finally:
        subscription.dispose()
        server.close()


async def test_step_now_runs_the_waiting_step_in_the_callers_step() -> None:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[str] = loop.create_future()
    seen: list[tuple[str, Any]] = []
    waiting: list[Any] = []

    async def work() -> str:
        waiting.append(waiting_step())
        value = await got
        seen.append((value, asyncio.current_task()))
        await asyncio.sleep(0)  # a turn the task takes itself
        seen.append(("after", asyncio.current_task()))
        return value

    task = eager_task(loop, work())
    await asyncio.sleep(0)  # the task has taken the future it waits for
    got.set_result("now")
    assert step_now(got, waiting[0])
    assert seen == [("now", task)]  # ran here, as the task, before any loop turn
    assert not step_now(got, waiting[0])  # it waits for something else now
    assert await task == "now"
    assert seen == [("now", task), ("after", task)]


async def test_step_now_refuses_what_it_cannot_run_ahead() -> None:
    loop = asyncio.get_running_loop()
    other: asyncio.Future[None] = loop.create_future()
    failed: asyncio.Future[None] = loop.create_future()
    waiting: list[Any] = []

    async def work() -> None:
        waiting.append(waiting_step())
        await failed

    async def plain() -> Any:
        return waiting_step()

    task = eager_task(loop, work())
    assert not step_now(other, waiting[0])  # not done, and not what it waits for
    failed.set_exception(ValueError("the task's own wake-up throws it in"))
    assert not step_now(failed, waiting[0])
    with pytest.raises(ValueError):
        await task
    assert await loop.create_task(plain()) is None  # an ordinary task cannot be stepped
    assert not step_now(failed, None)


async def test_step_now_leaves_a_task_that_has_ended_alone() -> None:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[None] = loop.create_future()
    waiting: list[Any] = []

    async def work() -> int:
        waiting.append(waiting_step())
        await got
        return 1

    task = eager_task(loop, work())
    await asyncio.sleep(0)
    got.set_result(None)
    assert await task == 1
    assert not step_now(got, waiting[0])


async def test_cancelled_after_a_step_taken_ahead_throws_where_it_waits_now() -> None:
    loop = asyncio.get_running_loop()
    first: asyncio.Future[None] = loop.create_future()
    where: list[str] = []
    waiting: list[Any] = []

    async def work() -> None:
        waiting.append(waiting_step())
        await first
        try:
            await loop.create_future()
        except asyncio.CancelledError:
            where.append("second wait")
            raise

    task = eager_task(loop, work())
    await asyncio.sleep(0)
    first.set_result(None)
    assert step_now(first, waiting[0])
    task.cancel()  # before the task has woken to take what the step left
    with pytest.raises(asyncio.CancelledError):
        await task
    assert where == ["second wait"]


async def test_a_read_that_waits_is_stepped_in_the_connections_callback() -> None:
    # rxllm's backend: data for an eager task's waiting read is read in the protocol's
    # callback, not a loop turn later.
    loop = asyncio.get_running_loop()
    sent: asyncio.Future[asyncio.StreamWriter] = loop.create_future()

    async def handle(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sent.set_result(writer)
        await asyncio.sleep(5)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stream = await AsyncioBackend().connect_tcp("127.0.0.1", port)
    protocol: Any = stream._protocol  # type: ignore[attr-defined]
    in_callback: list[bool] = []
    received = protocol.data_received

    def data_received(data: bytes) -> None:
        in_callback.append(True)
        try:
            received(data)
        finally:
            in_callback.pop()

    protocol.data_received = data_received
    read: list[tuple[bytes, bool]] = []

    async def reader() -> None:
        data = await stream.read(1024)
        read.append((data, bool(in_callback)))

    task = eager_task(loop, reader())
    try:
        (await sent).write(b"hello")
        await asyncio.wait_for(task, 10)
        assert read == [(b"hello", True)]
    finally:
        await stream.aclose()
        server.close()
