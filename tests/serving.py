"""``rxllm serve`` on a loopback port, for end-to-end tests: a real subprocess, or the app
served by uvicorn in the test's own loop (:func:`app_in_loop`, where a test needs the
server's objects or counts loop turns)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    import uvicorn

    from pipeline.apps.server.server_settings import ServerSettings

ROOT = Path(__file__).resolve().parents[1]

# The markers of the test pytest is running, set by tests/conftest.py; None outside
# pytest (bench/soak.py uses this module too). A test that starts `rxllm serve` must be
# marked `slow` (or `services`), so that `make test-fast` never waits for one.
running_test_markers: frozenset[str] | None = None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def app_in_loop(
    settings: ServerSettings,
    *,
    send_buffer: int | None = None,
    http: type[asyncio.Protocol] | str = "auto",
    app: Any = None,
) -> AsyncIterator[tuple[int, uvicorn.Server]]:
    """rxllm's app (or ``app``) served by uvicorn in the running loop: its port and the server.

    ``send_buffer`` sets the listening socket's ``SO_SNDBUF`` (accepted sockets
    inherit it: a small one makes the server's writes wait sooner); ``http``
    is uvicorn's protocol (``rxllm serve``'s own: ``connection_guard.guarded_protocol``).
    """
    import uvicorn

    from pipeline.apps.server.http_api import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if send_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    app = create_app(settings) if app is None else app
    config = uvicorn.Config(app, lifespan="on", log_level="warning", http=http)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(1000):
            if server.started:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("uvicorn did not start")
        yield sock.getsockname()[1], server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


class ServeProcess:
    """``python -m pipeline.apps.cli serve ARGS`` with its output in ``log_path``."""

    def __init__(self, *args: str, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.args = ["serve", "--port", str(self.port), "--heartbeat", "2", *args]
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self) -> Self:
        if running_test_markers is not None and not {"slow", "services"} & running_test_markers:
            raise RuntimeError(
                "this test starts `rxllm serve`: mark it `@pytest.mark.slow` (or the module: "
                "`pytestmark = pytest.mark.slow`) so `make test-fast` leaves it out"
            )
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.apps.cli", *self.args],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"rxllm serve exited:\n{self.log()}")
            try:
                urllib.request.urlopen(f"{self.url}/v1/models", timeout=1).close()
                return self
            except urllib.error.HTTPError:
                return self  # it answers (401 with auth on)
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"rxllm serve did not start:\n{self.log()}")

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
