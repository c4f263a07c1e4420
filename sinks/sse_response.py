"""The SSE responder: server-sent event encoding and an ASGI streaming response.

:func:`encode_event` writes one event frame, :func:`encode_comment` a comment
(the heartbeat ``: ping``). :class:`SSEResponse` streams an async iterator of
events -- or of batches of events, as :func:`operators.batch_flush` makes them
-- to the client through a dialect (:mod:`sinks.dialects`: rxllm's own events,
OpenAI ``chat.completion.chunk`` objects, the Vercel AI SDK UI message stream).

Example::

    async def chat(request: Request) -> Response:
        run = StreamRun(llm_stream(chat_completions(client, **body)), errors_mapped=True)
        events = hub.events(hub.register(run))
        run.start()
        return SSEResponse(events, dialect="openai", on_disconnect=run.cancel)

Behaviour:

* Every event (or every batch) is one ``http.response.body`` message with
  ``more_body=True``: one write, one flush. Frames carry ``id: <seq>``, so a
  reconnecting ``EventSource`` sends ``Last-Event-ID`` (:func:`last_event_id`
  reads it back).
* Headers: ``Content-Type: text/event-stream; charset=utf-8``,
  ``Cache-Control: no-cache``, ``X-Accel-Buffering: no`` (nginx),
  ``Connection: keep-alive``, plus the dialect's. ``Content-Encoding`` is never
  set; Starlette's ``GZipMiddleware`` skips ``text/event-stream`` (its
  ``DEFAULT_EXCLUDED_CONTENT_TYPES``), so events are not held in a compressor.
* A heartbeat comment goes out after ``heartbeat`` seconds without a write
  (``: ping`` with no blank line after it: see :func:`encode_comment`).
* The client is gone when ``receive()`` says ``http.disconnect``, when a write
  raises (``OSError``, Starlette's ``ClientDisconnect``), or when a write does
  not complete within ``send_timeout`` seconds (a stalled reader). Then
  ``on_disconnect(reason)`` is called once (typically ``run.cancel``: the
  upstream request is cancelled and the other sinks get ``cancelled``) and the
  response ends without an exception; nothing is logged above DEBUG.
* The response owns three tasks (the writer, the disconnect listener, the
  heartbeat/watchdog); whatever happens, it cancels and awaits each one and
  closes the event iterator (``aclose``).

Why not ``sse-starlette``: it is well kept and its encoder is the model for
ours (line breaks split ``data`` into several ``data:`` lines and are stripped
from ``id`` and ``event``), but its ``EventSourceResponse`` writes one
``ServerSentEvent`` object per send and re-encodes it, clearly slower per
event than plain Starlette with pre-encoded frames (bench/README.md); it has no
way to write a batch of frames in one send, and a send timeout and per-stream
dialects would be wrapped around it anyway. What remains is about 150 lines,
tested against an independent SSE parser (``httpx-sse``). The send timeout is
a watchdog (one timer per interval, not one per write): an
``asyncio.timeout()`` around every write would cost a timer per event.

Errors: an exception raised by the event iterator (a bug upstream) propagates
after the cleanup; the ASGI server then closes the connection.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from pipeline.core.events import EventBase, is_content, is_terminal

if TYPE_CHECKING:
    from sinks.dialects import Dialect

__all__ = [
    "BODY_SEND",
    "CLIENT_GONE_HOOKS",
    "HEARTBEAT",
    "SSE_HEADERS",
    "Item",
    "SSEResponse",
    "encode_comment",
    "encode_event",
    "last_event_id",
]

log = logging.getLogger(__name__)

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FIELD_BREAK = re.compile(r"[\r\n]")

#: The heartbeat comment: one comment line, deliberately with no blank line after it.
HEARTBEAT = b": ping\n"

#: The scope key under which an app may put the server's own ``send`` for the response's
#: body messages, when every middleware between it and the response passes them through
#: unchanged (``rxllm serve``'s app does): a body message then skips their ``send`` wrappers.
#: It may also have a ``write_now(body: bytes) -> bool`` method: a middle chunk of the body
#: written at once, no message and no coroutine (``False``: it was not; use the ``send``).
BODY_SEND = "rxllm.body_send"

#: The scope key of a list of callables a server may call, with no argument, in the very
#: callback where it learns that the request's client connection closed (``rxllm serve``'s
#: protocol does; the app puts the list in the scope). A response or a handler adds its
#: own while it runs: the upstream is cancelled then, not after the tasks waiting on
#: ``receive()`` have woken up (a loop turn each, long ones on a saturated loop).
CLIENT_GONE_HOOKS = "rxllm.client_gone"

#: Headers every SSE response sends (``Content-Type`` is added by the response).
SSE_HEADERS: Mapping[str, str] = {
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
    "connection": "keep-alive",
}

_PING: Message = {"type": "http.response.body", "body": HEARTBEAT, "more_body": True}

#: What an :class:`SSEResponse` reads: single events, or batches of them.
Item: TypeAlias = EventBase | Sequence[EventBase]


def encode_event(
    data: str,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    r"""Encode one server-sent event (a frame ending in a blank line).

    ``data`` is split on every kind of line break (``\r\n``, ``\r``, ``\n``)
    into several ``data:`` lines, which a client joins with ``\n``; so a
    client reads ``data`` back with its line breaks normalized to ``\n``.
    Line breaks are removed from ``event`` and ``id`` (and NUL from ``id``,
    which would make a client ignore it): no value can end a line early and
    forge a field or an event.

    Example::

        >>> encode_event("a\nb", event="text", id="7")
        b'id: 7\nevent: text\ndata: a\ndata: b\n\n'
    """
    parts: list[str] = []
    if id is not None:
        parts.append(f"id: {_FIELD_BREAK.sub('', id).replace(chr(0), '')}\n")
    if event is not None:
        parts.append(f"event: {_FIELD_BREAK.sub('', event)}\n")
    if retry is not None:
        parts.append(f"retry: {int(retry)}\n")
    if "\n" in data or "\r" in data:
        parts.extend(f"data: {line}\n" for line in _LINE_BREAK.split(data))
    else:
        parts.append(f"data: {data}\n")
    parts.append("\n")
    return "".join(parts).encode()


def encode_comment(text: str = "ping") -> bytes:
    r"""Encode a comment, which clients ignore (a heartbeat keeps proxies from timing out).

    Each line of ``text`` becomes one ``:`` line. ``encode_comment()`` is
    :data:`HEARTBEAT`, ``b": ping\n"``.

    Unlike sse-starlette's ``: ping\n\n``, no blank line follows: the
    ``openai`` SDK's decoder (and ``httpx-sse``, which it copies) dispatches an
    event on every blank line once any ``id:`` has been seen, even with no
    ``data``, and the SDK then fails on ``json.loads("")``. A comment line on
    its own between two frames is skipped by every parser.
    """
    return "".join(f": {line}\n" for line in _LINE_BREAK.split(text)).encode()


def last_event_id(headers: Mapping[str, str]) -> int | None:
    """The sequence number in a ``Last-Event-ID`` request header, or ``None``.

    Returns ``None`` when the header is missing or is not a non-negative integer
    (a resume then starts from the beginning).
    """
    value = headers.get("last-event-id")
    if value is None:
        return None
    value = value.strip()
    # ASCII digits only ("²".isdigit() is true; int() refuses it), and a 64-bit integer.
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None


class _ClientGone(Exception):
    """Raised inside the response's tasks when the client can't be written to."""


class SSEResponse(Response):
    """Stream events to the client as server-sent events; see the module docstring.

    ``content`` yields events or batches (sequences) of events; every item is
    written in one send. ``dialect`` is a :class:`sinks.dialects.Dialect`
    (one per response: it keeps the stream's state) or a dialect's name
    (``"rxllm"``, ``"openai"``, ``"vercel"``). The response ends after the
    dialect's closing frames once a terminal event has been written or
    ``content`` is exhausted.

    ``first`` are items already at hand (events a server waited for before
    choosing the status): they are written in one send right after the
    headers, before ``content`` is read, which saves the first token a loop
    turn.

    ``early_answer`` makes the response wait, before it starts, for the
    stream's first content or terminal event: ``early_answer(held)`` (the
    events so far, that one last) returns the response to send instead (an
    upstream failure before the first token answered with its HTTP status),
    or ``None`` to stream them. On a live reader (one with ``deliver_to``
    and ``wait_buffered``: :meth:`StreamRun.iterate`'s) the headers and the
    first frames are written in the step that produced the first token, a
    loop turn before a handler awaiting that token could write them.

    ``on_disconnect(reason)`` is called once if the client goes away (or
    stalls for ``send_timeout`` seconds) before the end; exceptions it raises
    are logged. ``heartbeat`` (seconds, ``None`` for none) is the idle time
    before a ``: ping`` comment; ``retry`` (milliseconds) is sent first as
    the client's reconnection delay.

    Errors: ``ValueError`` for an unknown dialect name or a non-positive
    ``heartbeat`` or ``send_timeout``.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterable[Item],
        *,
        first: Sequence[Item] = (),
        dialect: Dialect | str = "rxllm",
        on_disconnect: Callable[[str], object] | None = None,
        heartbeat: float | None = 15.0,
        send_timeout: float | None = 30.0,
        retry: int | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
        early_answer: Callable[[list[EventBase]], Response | None] | None = None,
    ) -> None:
        if heartbeat is not None and heartbeat <= 0:
            raise ValueError(f"heartbeat must be > 0 seconds or None, got {heartbeat!r}")
        if send_timeout is not None and send_timeout <= 0:
            raise ValueError(f"send_timeout must be > 0 seconds or None, got {send_timeout!r}")
        if isinstance(dialect, str):
            # Imported here: the dialects import this module's encoders.
            from sinks.dialects import make_dialect

            dialect = make_dialect(dialect)
        self.content = content
        self.first = list(first)
        self.dialect = dialect
        self.on_disconnect = on_disconnect
        self.heartbeat = heartbeat
        self.send_timeout = send_timeout
        self.retry = retry
        self.status_code = status_code
        self.background = background
        self.early_answer = early_answer
        self.disconnect_reason: str | None = None
        merged = {**SSE_HEADERS, **dialect.headers, **(headers or {})}
        self.init_headers(merged)
        self._busy_since: float | None = None  # a write is in flight since then
        self._last_write = 0.0
        self._lock = asyncio.Lock()
        self._closing = False  # the writer is writing the end: no more heartbeats
        self._ending = False  # the response is ending: no more direct writes
        self._in_flight: asyncio.Task[None] | None = None  # the rest of a direct write
        self._broken: asyncio.Future[BaseException] | None = None  # why a direct write failed
        # The server's synchronous body write, if its BODY_SEND has one.
        self._write_body: Callable[[bytes], bool] | None = None
        self._started = False  # the headers went out from the producer's step (early_answer)
        # "retry:" joins the first frame: alone, its blank line would make the
        # openai SDK's decoder dispatch an empty event (see encode_comment).
        self._prefix = b"" if retry is None else f"retry: {int(retry)}\n".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The loop is kept: asyncio.get_running_loop() checks the pid (a system call) per call.
        self._loop = loop = asyncio.get_running_loop()
        self._broken = broken = loop.create_future()
        tasks: list[asyncio.Task[None]] = []
        raised: BaseException | None = None
        hooks = scope.get(CLIENT_GONE_HOOKS)
        if isinstance(hooks, list):
            hooks.append(self._connection_lost)
        # The body may skip the app's send wrappers, which only note the start.
        body_send = scope.get(BODY_SEND, send)
        try:
            listener = loop.create_task(_wait_for_disconnect(receive))
            tasks = [listener]
            if self.early_answer is not None:
                answer = await self._first_events(send, body_send, listener)
                if answer is not None:
                    await _aclose(aiter(self.content))
                    await answer(scope, receive, send)
                    return
            try:
                if self.disconnect_reason is not None:
                    raise _ClientGone(self.disconnect_reason)
                if not self._started:
                    start = self._start_message()
                    await self._send_with_timeout(send, start)
                    self._body_send, self._write_body = body_send, _write_now_of(body_send)
                    # What is at hand goes out now, not a loop turn later from the writer task.
                    body = b"".join([self._encode(item) for item in self.first])
                    if body:
                        await self._send_with_timeout(body_send, _body(body))
                    self._last_write = loop.time()
            except _ClientGone as gone:
                self._client_gone(str(gone))
                await _aclose(aiter(self.content))
                return
            writer = loop.create_task(self._write_all(body_send))
            tasks = [writer, listener]
            if self.heartbeat is not None or self.send_timeout is not None:
                tasks.append(loop.create_task(self._keep_alive(body_send)))
            await asyncio.wait([*tasks, broken], return_when=asyncio.FIRST_COMPLETED)
            self._ending = True
            try:
                reason = _outcome(tasks, broken)
            except BaseException as exc:  # what the writer, a direct write or the watchdog raised
                raised = exc
                raise
            if reason is not None:
                self._client_gone(reason)
        finally:
            if isinstance(hooks, list):
                hooks.remove(self._connection_lost)
            # The owner cancels and awaits every task, whatever happened.
            self._ending = True
            if self._in_flight is not None:
                tasks.append(self._in_flight)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
                _retrieve(tasks, raised)
        if self.disconnect_reason is None and self.background is not None:
            await self.background()

    def _start_message(self) -> Message:
        return {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": self.raw_headers,
        }

    async def _first_events(
        self, send: Send, body_send: Send, listener: asyncio.Task[None]
    ) -> Response | None:
        """Wait for the first content or terminal event; ``early_answer`` decides.

        Returns the response to send instead, or ``None``: then the response
        has started (``_started``) if the first token came on a live reader,
        else the caller starts it with the events held (``first``). Returns
        ``None`` too when the client left meanwhile (``disconnect_reason``).
        """
        assert self.early_answer is not None and self._broken is not None
        held: list[EventBase] = []
        loop = self._loop
        iterator = aiter(self.content)
        deliver_to = getattr(iterator, "deliver_to", None)
        wait_buffered = getattr(iterator, "wait_buffered", None)
        decided: asyncio.Future[None] = loop.create_future()

        def take(event: EventBase) -> bool:
            """The first events, in the producer's step; the first token starts the response."""
            held.append(event)
            if is_content(event) or is_terminal(event):
                assert deliver_to is not None
                deliver_to(None)  # the rest waits in the reader for the writer task
                decided.set_result(None)
                answer = self.early_answer
                if is_content(event) and answer is not None and answer(held) is None:
                    self._start_now(send, body_send, held)
            return True

        if deliver_to is not None and wait_buffered is not None:
            deliver_to(take)
            # Items already buffered (the consumer only takes while none are) or the end.
            buffered = loop.create_task(wait_buffered())
            try:
                await asyncio.wait(
                    [decided, buffered, listener, self._broken],
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                if not decided.done():
                    deliver_to(None)
                buffered.cancel()
            if listener.done() and not decided.done():
                self._client_gone("client disconnected")
            if self.disconnect_reason is not None:
                return None
        if not decided.done():  # not a live reader, or something was buffered: read on
            reading = loop.create_task(_read_first(iterator, held))
            waiting: list[asyncio.Future[Any]] = [reading, listener, self._broken]
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():  # the client left first
                reading.cancel()
                await asyncio.wait([reading])
                self._client_gone("client disconnected")
                return None
            reading.result()  # the content's own error, if it raised one
        if self._started:
            return None
        self.first.extend(held)
        return self.early_answer(held) if held else None

    def _start_now(self, send: Send, body_send: Send, held: list[EventBase]) -> None:
        """Send the headers and the held events in the producer's step (see early_answer).

        The start goes through the app's send wrappers, stepped by hand like
        :meth:`_write_now`'s send: uvicorn's completes at once unless the
        socket's buffer is full; if it has to wait, a task finishes it and
        writes the events, and the writer task waits for that.
        """
        if self._ending:  # the client left meanwhile
            return
        self._started = True
        self._body_send, self._write_body = body_send, _write_now_of(body_send)
        body = b"".join([self._encode(item) for item in [*self.first, *held]])
        self.first = []
        try:
            steps = send(self._start_message()).__await__()
            try:
                waiting = steps.send(None)
            except StopIteration:
                self._last_write = self._loop.time()
                if body:
                    self._send_now(body)
                return
        except Exception as exc:
            self._break(_failure(exc))
            return
        self._busy_since = self._loop.time()
        self._in_flight = self._loop.create_task(self._finish(steps, waiting, body))

    def _connection_lost(self) -> None:
        """The server says the client's connection closed (:data:`CLIENT_GONE_HOOKS`)."""
        if not self._ending:
            self._break(_ClientGone("client disconnected"))  # no direct write from here on
            self._client_gone("client disconnected")

    def _client_gone(self, reason: str) -> None:
        if self.disconnect_reason is not None:  # heard already (the server's hook, then a task)
            return
        self.disconnect_reason = reason
        log.debug("SSE client gone (%s)", reason)
        if self.on_disconnect is not None:
            try:
                self.on_disconnect(reason)
            except Exception:
                log.exception("the on_disconnect callback of an SSE response failed")

    def _encode(self, item: Item) -> bytes:
        """One item's frames (the ``retry:`` field before the first frame)."""
        encode = self.dialect.encode
        if isinstance(item, EventBase):
            body = encode(item)
        else:
            body = b"".join([encode(event) for event in item])
        if self._prefix and body:
            body, self._prefix = self._prefix + body, b""
        return body

    async def _write_all(self, send: Send) -> None:
        """The writer task: every item of ``content`` in one send each, then the end.

        A live reader (one with ``deliver_to``: :meth:`StreamRun.iterate`'s,
        :meth:`StreamHub.events`') hands the events that arrive while the
        client keeps up to :meth:`_write_now` instead; this task writes the
        rest (what waited while a write was in flight, the terminal event)
        and the end.
        """
        dialect = self.dialect
        iterator = aiter(self.content)
        # The reader's consumer hook (pipeline.runtime.async_bridges.BufferedObserver.deliver_to).
        deliver_to: Callable[[Callable[[Any], bool] | None], None] | None = getattr(
            iterator, "deliver_to", None
        )
        try:
            if not dialect.done:  # ``first`` may have held the end already
                if deliver_to is not None:
                    deliver_to(self._write_now)
                async for item in iterator:
                    body = self._encode(item)
                    if body:
                        await self._write(send, body)
                    if dialect.done:
                        break
        finally:
            if deliver_to is not None:
                deliver_to(None)
            await _aclose(iterator)
        # No heartbeat from here on: one sent after the last message would be a
        # message after the response's end (uvicorn raises for it).
        self._closing = True
        tail = self._prefix + dialect.close()
        if tail:
            await self._write(send, tail)
        await self._settle()
        self._busy_since = self._last_write = self._loop.time()
        try:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except _DISCONNECTED as exc:
            raise _gone(exc) from None
        self._busy_since = None

    async def _settle(self) -> None:
        """Wait for the writes in flight elsewhere: the rest of a direct write, a heartbeat."""
        if self._in_flight is not None:
            await self._in_flight
        if self._lock.locked():
            async with self._lock:
                pass
        if self._ending:  # a direct write failed, or the response is over: nothing more
            raise _ClientGone("the response is ending")

    async def _write(self, send: Send, body: bytes) -> None:
        if self._in_flight is not None or self._lock.locked() or self._ending:
            await self._settle()
        self._busy_since = now = self._loop.time()
        try:
            await send(_body(body))
        except _DISCONNECTED as exc:
            raise _gone(exc) from None
        self._busy_since = None
        self._last_write = now

    def _write_now(self, event: EventBase) -> bool:
        """Write ``event`` in the producer's own step (the live reader's consumer).

        Returns ``False`` (the reader buffers it for the writer task, and
        the events after it) while another write is in flight (the writer
        task's, a heartbeat, the rest of a direct write), once the response
        is ending, and for a terminal event: the writer task writes that one,
        then the end. The send is stepped by hand: uvicorn's completes at
        once unless the socket's buffer is full; if it has to wait, a task
        finishes it (:meth:`_finish`) and the writer task waits for that
        before writing on. Never raises: a failure ends the response as one
        in the writer task would (:meth:`_break`).
        """
        # Per event, no call here but the dialect's encode and the server's write: what
        # _encode does for one event and _send_now's first way, inline.
        if self._busy_since is not None or self._ending or event.ends_stream:
            return False
        write = self._write_body
        try:
            body = self.dialect.encode(event)
            if self._prefix and body:
                body, self._prefix = self._prefix + body, b""
            written = bool(body) and write is not None and write(body)
        except Exception as exc:
            self._break(_failure(exc))
            return True
        if written:
            self._last_write = self._loop.time()
        elif body:
            self._send_stepped(body)
        return True

    def _send_now(self, body: bytes) -> None:
        """Write ``body`` in this step (see :meth:`_write_now`); never raises."""
        try:
            if self._write_body is not None and self._write_body(body):
                self._last_write = self._loop.time()
                return
        except Exception as exc:
            self._break(_failure(exc))
            return
        self._send_stepped(body)

    def _send_stepped(self, body: bytes) -> None:
        """The app's send of ``body``, stepped by hand (see :meth:`_write_now`); never raises."""
        try:
            steps = self._body_send(_body(body)).__await__()
            try:
                waiting = steps.send(None)
            except StopIteration:
                self._last_write = self._loop.time()
                return
        except Exception as exc:
            self._break(_failure(exc))
            return
        self._busy_since = self._loop.time()
        self._in_flight = self._loop.create_task(self._finish(steps, waiting))

    async def _finish(
        self, steps: Generator[Any, None, None], waiting: Any, then: bytes = b""
    ) -> None:
        """The rest of a direct write that had to wait (see :meth:`_write_now`), then ``then``."""
        try:
            await _Resumed(steps, waiting)
            if then:
                await self._body_send(_body(then))
        except Exception as exc:
            self._break(_failure(exc))
        else:
            self._last_write = self._loop.time()
        finally:
            self._busy_since = None
            self._in_flight = None

    def _break(self, exc: BaseException) -> None:
        """A direct write failed: the response ends as if the writer task had raised ``exc``."""
        self._ending = True
        if self._broken is not None and not self._broken.done():
            self._broken.set_result(exc)

    async def _keep_alive(self, send: Send) -> None:
        """The heartbeat and watchdog task: pings when idle, fails a stalled write."""
        loop = asyncio.get_running_loop()
        heartbeat, timeout = self.heartbeat, self.send_timeout
        while True:
            now = loop.time()
            busy = self._busy_since
            if busy is not None:
                if timeout is None:
                    wake = now + (heartbeat or 1.0)
                elif now - busy >= timeout:
                    raise _ClientGone(f"a write did not complete within {timeout:g}s")
                else:
                    wake = busy + timeout
            else:
                wake = now + timeout if timeout is not None else float("inf")
                if heartbeat is not None and not self._closing:
                    due = self._last_write + heartbeat
                    if now >= due:
                        async with self._lock:
                            if not self._closing:  # else the writer is ending the response
                                # Busy while it pings: a direct write (_write_now) waits.
                                self._busy_since = now
                                try:
                                    await self._send_with_timeout(send, _PING)
                                finally:
                                    self._busy_since = None
                        self._last_write = loop.time()
                        continue
                    wake = min(wake, due)
            await asyncio.sleep(wake - now)

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        try:
            async with asyncio.timeout(self.send_timeout):
                await send(message)
        except TimeoutError:
            raise _ClientGone(f"a write did not complete within {self.send_timeout:g}s") from None
        except _DISCONNECTED as exc:
            raise _gone(exc) from None


_DISCONNECTED = (OSError, ClientDisconnect)
"""What a ``send`` raises when the client has gone."""


def _gone(exc: BaseException) -> _ClientGone:
    return _ClientGone(f"client disconnected ({type(exc).__name__})")


def _failure(exc: Exception) -> BaseException:
    """Why a direct write ends the response: the client gone, or the error itself."""
    return _gone(exc) if isinstance(exc, _DISCONNECTED) else exc


class _Resumed:
    """Awaiting it goes on with an awaitable that was started by hand and is waiting.

    ``steps`` is the awaitable's iterator (``__await__()``), already sent
    its first ``None``; ``waiting`` is what it yielded (the future it waits
    on). This passes each value it yields up to the awaiting task, and what
    the task sends or throws back (a cancellation) down to it: what an
    ``asyncio.Task`` does for a coroutine it runs, for one whose first step
    ran in another task's step.
    """

    __slots__ = ("_steps", "_waiting")

    def __init__(self, steps: Generator[Any, None, None], waiting: Any) -> None:
        self._steps = steps
        self._waiting = waiting

    def __await__(self) -> Generator[Any, None, None]:
        steps, waiting = self._steps, self._waiting
        while True:
            try:
                yield waiting
            except BaseException as exc:  # thrown in by the task: cancelled
                try:
                    waiting = steps.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting = steps.send(None)
                except StopIteration:
                    return


async def _read_first(iterator: AsyncIterator[Item], held: list[EventBase]) -> None:
    """Read ``iterator`` into ``held`` up to its first content or terminal event."""
    async for item in iterator:
        events = [item] if isinstance(item, EventBase) else list(item)
        held.extend(events)
        if any(is_content(event) or is_terminal(event) for event in events):
            return


def _write_now_of(send: Send) -> Callable[[bytes], bool] | None:
    """The server's synchronous body write, if its ``BODY_SEND`` has one."""
    write_now: Callable[[bytes], bool] | None = getattr(send, "write_now", None)
    return write_now


def _body(body: bytes) -> Message:
    return {"type": "http.response.body", "body": body, "more_body": True}


def _outcome(tasks: list[asyncio.Task[None]], broken: asyncio.Future[BaseException]) -> str | None:
    """Why the response ended: ``None`` if it was written to the end, else the reason.

    ``tasks`` is ``[writer, listener, keep_alive?]``; ``broken`` holds what a
    direct write raised. A direct write's failure wins (it came first: the
    writer stops on it), then the writer's outcome. An exception other than
    :class:`_ClientGone` is raised again.
    """
    writer, listener = tasks[0], tasks[1]
    if broken.done():
        failure = broken.result()
        if isinstance(failure, _ClientGone):
            return str(failure)
        raise failure
    if writer.done():
        exc = writer.exception()
        if exc is None:
            return None
        if isinstance(exc, _ClientGone):
            return str(exc)
        raise exc
    for task in tasks[1:]:
        if task.done():
            exc = task.exception()
            if exc is None and task is listener:
                return "client disconnected"
            if isinstance(exc, _ClientGone):
                return str(exc)
            if exc is not None:
                raise exc
    raise AssertionError("asyncio.wait returned before any task was done")  # pragma: no cover


def _retrieve(tasks: list[asyncio.Task[None]], raised: BaseException | None) -> None:
    """Mark the tasks' exceptions retrieved; log one that was not raised."""
    for task in tasks:
        if task.cancelled():
            continue
        exc = task.exception()
        if exc is not None and exc is not raised and not isinstance(exc, _ClientGone):
            log.error("a task of an SSE response failed", exc_info=exc)


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()
