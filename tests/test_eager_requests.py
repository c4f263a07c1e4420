"""``EagerRequests``: a request's first step runs in the read that brought it, not a turn later."""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import Coroutine
from typing import Any

from pipeline.apps.server.connection_guard import guarded_protocol
from pipeline.apps.server.eager_requests import RUN_ASGI, EagerRequests
from pipeline.runtime.eager_task import ready_task
from tests.serving import app_in_loop

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def _on_new_loop(test: Coroutine[Any, Any, None]) -> None:
    """Run ``test`` on a loop of its own: a task factory set on it dies with it."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(test)
    finally:
        loop.close()


def _installed(request: Any) -> tuple[asyncio.AbstractEventLoop, EagerRequests]:
    """The running loop, with an ``EagerRequests`` for ``request``'s coroutines installed."""
    loop = asyncio.get_running_loop()
    eager = EagerRequests(request.__code__)
    eager.install(loop)
    return loop, eager


def test_a_request_task_waits_for_run_and_its_first_step_runs_as_the_task() -> None:
    steps: list[tuple[str, Any]] = []

    async def request(go: asyncio.Future[None]) -> str:
        steps.append(("first", asyncio.current_task()))
        await go
        steps.append(("later", asyncio.current_task()))
        return "answered"

    async def test() -> None:
        loop, eager = _installed(request)
        go: asyncio.Future[None] = loop.create_future()
        task = loop.create_task(request(go))
        assert steps == []  # made, not stepped
        eager.run()
        assert steps == [("first", task)]
        assert asyncio.current_task() is not task
        go.set_result(None)
        assert await task == "answered"
        assert steps == [("first", task), ("later", task)]

    _on_new_loop(test())


def test_one_request_is_stepped_per_loop_turn_and_the_others_at_their_turn() -> None:
    steps: list[str] = []

    async def request(name: str) -> None:
        steps.append(name)

    async def test() -> None:
        loop, eager = _installed(request)
        first, second = loop.create_task(request("a")), loop.create_task(request("b"))
        eager.run()
        assert steps == ["a"]  # "b" waits for its turn
        eager.run()
        assert steps == ["a"]  # still this turn
        await asyncio.gather(first, second)
        assert steps == ["a", "b"]
        third = loop.create_task(request("c"))
        eager.run()  # a later turn: stepped again
        assert steps == ["a", "b", "c"]
        await third

    _on_new_loop(test())


def test_a_task_that_has_stepped_on_its_own_is_not_stepped_again() -> None:
    steps: list[str] = []

    async def request(go: asyncio.Future[None]) -> None:
        steps.append("first")
        await go
        steps.append("later")

    async def test() -> None:
        loop, eager = _installed(request)
        go: asyncio.Future[None] = loop.create_future()
        task = loop.create_task(request(go))
        await asyncio.sleep(0)  # its own first step, at its turn
        assert steps == ["first"]
        eager.run()  # nothing left to run: it waits for go
        assert steps == ["first"]
        go.set_result(None)
        await task
        assert steps == ["first", "later"]

    _on_new_loop(test())


def test_other_coroutines_become_ordinary_tasks_of_the_factory_that_was_there() -> None:
    made: list[str] = []

    async def request() -> str:
        return "request"

    async def other() -> str:
        return "other"

    def previous(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        made.append(coro.__name__ if hasattr(coro, "__name__") else type(coro).__name__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def test() -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(previous)
        eager = EagerRequests(request.__code__)
        eager.install(loop)
        plain = loop.create_task(other())
        held = loop.create_task(request())
        assert plain.get_coro().__name__ == "other"  # type: ignore[union-attr]
        assert held.get_coro() is not None and not hasattr(held.get_coro(), "cr_code")
        assert made == ["other", "_Resumed"]  # both made by the factory that was there
        eager.run()
        assert await plain == "other" and await held == "request"

    _on_new_loop(test())


def test_the_context_given_to_create_task_is_the_one_the_request_runs_in() -> None:
    seen: list[str] = []

    async def request() -> None:
        seen.append(VAR.get())
        VAR.set("changed by the request")

    async def test() -> None:
        loop, eager = _installed(request)
        context = contextvars.Context()
        context.run(VAR.set, "given")
        task = loop.create_task(request(), context=context)
        eager.run()
        await task
        assert seen == ["given"]
        assert context[VAR] == "changed by the request" and VAR.get() == "unset"

    _on_new_loop(test())


def test_an_empty_context_given_to_create_task_stays_empty() -> None:
    """uvicorn's ``reset_contextvars`` gives each request an empty ``Context()``."""
    seen: list[str] = []

    async def request() -> None:
        seen.append(VAR.get())

    async def test() -> None:
        loop, eager = _installed(request)
        VAR.set("the caller's")
        task = loop.create_task(request(), context=contextvars.Context())
        eager.run()
        await task
        assert seen == ["unset"]

    _on_new_loop(test())


def test_a_first_step_that_raises_hands_the_error_to_the_task() -> None:
    async def request() -> None:
        raise ValueError("bad request")

    async def test() -> None:
        loop, eager = _installed(request)
        task = loop.create_task(request())
        eager.run()
        try:
            await task
        except ValueError as exc:
            assert str(exc) == "bad request"
        else:
            raise AssertionError("the task did not raise")

    _on_new_loop(test())


def test_ready_task_steps_once_only() -> None:
    steps: list[str] = []

    async def work() -> None:
        steps.append("first")
        await asyncio.sleep(0)
        steps.append("later")

    async def test() -> None:
        loop = asyncio.get_running_loop()
        task, first_step = ready_task(loop, work(), contextvars.copy_context(), loop.create_task)
        assert first_step() is True
        assert first_step() is False
        await task
        assert steps == ["first", "later"]

    _on_new_loop(test())


def test_the_request_task_it_holds_back_is_uvicorns() -> None:
    from uvicorn.protocols.http.h11_impl import RequestResponseCycle

    assert RUN_ASGI is RequestResponseCycle.run_asgi.__code__


async def test_through_uvicorn_the_app_runs_with_its_whole_body_before_the_loop_turns() -> None:
    """In the read that brought the request: before a callback that read scheduled runs."""
    loop = asyncio.get_running_loop()
    order: list[str] = []
    eager = EagerRequests()

    def on_data() -> None:
        if not eager.installed:
            eager.install(loop)
        loop.call_soon(order.append, "the loop's next turn")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            return
        message = await receive()
        order.append(f"app: {message['body'].decode()} more={message['more_body']}")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    protocol = guarded_protocol(
        header_timeout=None,
        max_connections=None,
        on_closed=lambda reason: None,
        on_data=on_data,
        on_parsed=eager.run,
    )
    previous = loop.get_task_factory()
    try:
        async with app_in_loop(None, http=protocol, app=app) as (port, _):  # type: ignore[arg-type]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            body = json.dumps({"hello": "world"}).encode()
            writer.write(
                b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
            answer = await reader.read(1000)
            writer.close()
    finally:
        loop.set_task_factory(previous)
    assert answer.startswith(b"HTTP/1.1 200")
    assert order[:2] == [
        'app: {"hello": "world"} more=False',
        "the loop's next turn",
    ]
