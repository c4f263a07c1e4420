"""Running the mock: in a background thread for tests (:class:`MockServer`), or in the foreground.

:class:`MockServer` listens on a real loopback socket (port 0) and runs
uvicorn on its own event loop in a daemon thread, so sync code, any event
loop and any client can talk to it::

    with MockServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test")

    async with MockServer(MockScript(interval=0.01)) as server:
        ...

Connections are recorded at the transport level by :class:`RecordingProtocol`
(uvicorn's h11 protocol with ``connection_made``/``connection_lost``
recorded), so ``closed_at`` is when the socket really closed.

Stopping closes idle keep-alive connections at once, gives responses still
running ``shutdown_grace`` seconds, then drops their connections: unlike
uvicorn's own shutdown, it never waits forever for a stalled stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Collection, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from pipeline.apps.builtin_model.answer_script import MockScript
from pipeline.apps.builtin_model.model_app import DEFAULT_MODEL, create_app, mock_state
from pipeline.apps.builtin_model.traffic_log import CONNECTION_KEY, ConnectionRecord, Recorder

__all__ = ["DEMO_TOKENS_PER_SECOND", "MockServer", "RecordingProtocol", "protocol_for", "serve"]

DEMO_TOKENS_PER_SECOND = 30.0


class RecordingProtocol(H11Protocol):
    """uvicorn's h11 protocol that records each connection in ``recorder``.

    The :class:`ConnectionRecord` goes into every request's
    ``scope["state"]`` (under ``CONNECTION_KEY``) so the app can find, and
    drop, its connection. Use :func:`protocol_for` to bind a recorder.
    """

    recorder: ClassVar[Recorder | None] = None
    _record: ConnectionRecord | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Record the new connection, then let uvicorn set it up."""
        super().connection_made(transport)
        if self.recorder is not None:
            self._record = self.recorder.connection_made(self.client, transport)
            self.app_state = {**self.app_state, CONNECTION_KEY: self._record}

    def connection_lost(self, exc: Exception | None) -> None:
        """Record the close (the socket is closed right after this returns)."""
        if self.recorder is not None and self._record is not None:
            self.recorder.connection_lost(self._record, exc)
        super().connection_lost(exc)


def protocol_for(recorder: Recorder) -> type[RecordingProtocol]:
    """Return a :class:`RecordingProtocol` class that records into ``recorder``."""

    class BoundRecordingProtocol(RecordingProtocol):
        pass

    BoundRecordingProtocol.recorder = recorder
    return BoundRecordingProtocol


class _QuietThreads(logging.Filter):
    """Drops uvicorn's INFO lines from the mock's threads ("Started server process"...).

    In ``rxllm serve`` the built-in model runs beside the real server in the
    same process, and their start and stop lines read as the server's, twice.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        thread = record.threadName or ""
        return record.levelno > logging.INFO or not thread.startswith(_THREAD_PREFIX)


_THREAD_PREFIX = "rxllm-mock-"
_quiet = _QuietThreads()


class _ThreadServer(uvicorn.Server):
    """A uvicorn server that starts and stops on request from another thread."""

    def __init__(self, config: uvicorn.Config, recorder: Recorder, grace: float) -> None:
        super().__init__(config)
        self.recorder = recorder
        self.grace = grace
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit: asyncio.Event | None = None

    def run_in_thread(self, sock: socket.socket) -> None:
        try:
            asyncio.run(self.serve(sockets=[sock]))
        finally:
            self.ready.set()  # also when startup failed: start() must wake up
            sock.close()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._exit = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)
        self.ready.set()

    async def main_loop(self) -> None:
        assert self._exit is not None
        while not await self.on_tick(0):  # refreshes the Date header, checks should_exit
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._exit.wait()

    def request_exit(self) -> None:
        self.should_exit = True
        loop, event = self._loop, self._exit
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                loop.call_soon_threadsafe(event.set)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # closes idle ones; running responses end, then close
        recorder = self.recorder
        with contextlib.suppress(TimeoutError):
            await recorder.wait_for_async(lambda: not recorder.open_connections, self.grace)
        for record in recorder.open_connections:
            record._drop(reset=False)
        tasks = list(self.server_state.tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.grace)
            for task in pending:
                task.cancel()
        for server in self.servers:
            await server.wait_closed()


class MockServer:
    """The mock on ``127.0.0.1``, a free port, in a background thread.

    ``script`` is the default script (answers, timing, faults); requests
    override it with ``extra_body={"mock": {...}}``. ``recorder`` holds what
    the server saw. ``reject_keys`` are API keys answered with a 401
    ``invalid_api_key`` (for key-pool tests; never recorded). Use it as a
    context manager (``with`` or ``async with``) or call :meth:`start` and
    :meth:`stop`.
    """

    def __init__(
        self,
        script: MockScript | None = None,
        *,
        models: Sequence[str] = (DEFAULT_MODEL,),
        strict_models: bool = False,
        reject_keys: Collection[str] = (),
        max_records: int | None = None,
        shutdown_grace: float = 0.5,
        startup_timeout: float = 10.0,
    ) -> None:
        self.recorder = Recorder(max_records)
        self.app = create_app(
            script,
            recorder=self.recorder,
            models=models,
            strict_models=strict_models,
            reject_keys=reject_keys,
        )
        self.shutdown_grace = shutdown_grace
        self.startup_timeout = startup_timeout
        self._server: _ThreadServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def script(self) -> MockScript:
        """The default script; assign to change it for the next requests."""
        return mock_state(self.app).script

    @script.setter
    def script(self, script: MockScript) -> None:
        mock_state(self.app).script = script

    @property
    def port(self) -> int:
        """The port it listens on; raises ``RuntimeError`` before :meth:`start`."""
        if self._port is None:
            raise RuntimeError("the mock server is not running: call start() or use `with`")
        return self._port

    @property
    def url(self) -> str:
        """The server's root URL, like ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, like ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    def start(self) -> Self:
        """Start serving; return once the socket accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the mock server is already running")
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        except OSError:
            sock.close()
            raise
        config = uvicorn.Config(
            self.app,
            http=protocol_for(self.recorder),
            lifespan="off",
            log_config=None,
            log_level=None,
            access_log=False,
        )
        logging.getLogger("uvicorn.error").addFilter(_quiet)  # addFilter skips one it has
        server = _ThreadServer(config, self.recorder, self.shutdown_grace)
        thread = threading.Thread(
            target=server.run_in_thread, args=(sock,), name=f"{_THREAD_PREFIX}{port}", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        if not server.ready.wait(self.startup_timeout) or not server.started:
            self.stop()
            raise RuntimeError("the mock server did not start; see the log for why")
        self._port = port
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread to end (idempotent)."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.request_exit()
        thread.join(self.shutdown_grace * 2 + 5.0)
        self._server = self._thread = None
        self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


def serve(
    host: str = "127.0.0.1",
    port: int = 8001,
    *,
    script: MockScript | None = None,
    tokens_per_second: float = DEMO_TOKENS_PER_SECOND,
    log_level: str = "info",
    **fields: Any,
) -> None:
    """Run the mock in the foreground until interrupted (Ctrl+C).

    ``fields`` are :class:`MockScript` fields laid over ``script``. Tokens
    come at ``tokens_per_second`` unless ``interval`` is given (0: no pause).
    Keeps the last 1000 records. Raises ``pydantic.ValidationError`` for bad fields.
    """
    base = script or MockScript()
    if "interval" not in fields and "interval" not in base.model_fields_set:
        fields["interval"] = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0
    recorder = Recorder(max_records=1000)
    app = create_app(base.merged(fields), recorder=recorder)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_for(recorder),
        lifespan="off",
        log_level=log_level,
        timeout_graceful_shutdown=1,  # a stalled demo stream must not block Ctrl+C
    )
    uvicorn.Server(config).run()
