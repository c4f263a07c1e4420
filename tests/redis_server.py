"""A real, throwaway ``redis-server`` for the tests, and the ``redis_server`` fixture.

:class:`RedisServer` runs ``redis-server --port <free> --save '' --appendonly no
--daemonize no`` in a temporary directory, waits until it answers ``PING``
and can be restarted on the same port: :meth:`RedisServer.restart` either
keeps the data (``SHUTDOWN SAVE``, then a start that loads the snapshot: a
graceful restart) or loses it (a kill: a crash of a server without
persistence).

``redis_server`` (session scope) is one shared server; tests that restart a
server start their own with :func:`start_redis`. Without the binary the Redis
tests are skipped with a loud reason, except under CI (``$CI`` set), where
they fail: CI must install it (Debian: ``apt-get install -y redis-server``;
``scripts/install-services.sh`` does).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisServer", "find_redis_server", "redis_server", "start_redis"]

BIN_ENV = "RXLLM_REDIS_SERVER"


def find_redis_server() -> str | None:
    """The ``redis-server`` executable: ``$RXLLM_REDIS_SERVER``, then ``PATH``, or ``None``."""
    candidate = os.environ.get(BIN_ENV) or shutil.which("redis-server")
    if candidate and os.access(candidate, os.X_OK):
        return candidate
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _command(port: int, line: bytes, timeout: float = 1.0) -> bytes:
    """Send one inline command; return the first reply line (``OSError`` if unreachable)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(line + b"\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply


class RedisServer:
    """``redis-server`` on ``127.0.0.1:port`` in a temporary directory."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.base = Path(tempfile.mkdtemp(prefix="rxllm-redis-"))
        self.log = self.base / "server.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """A ``redis://`` URL for database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start on a free port (three tries: ports race), or on ``self.port`` if set."""
        error: Exception | None = None
        for _ in range(3):
            if not self.port:
                self.port = _free_port()
            try:
                self._start_process()
                atexit.register(self.stop)
                return self
            except RuntimeError as exc:
                error = exc
                self.port = 0
        raise RuntimeError(f"could not start redis-server: {error}")

    def _start_process(self, timeout: float = 20.0) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.base),
            "--logfile",
            str(self.log),
        ]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                raise RuntimeError(f"redis-server exited:\n{self._log_tail()}")
            with contextlib.suppress(OSError):
                if _command(self.port, b"PING").startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer PING:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def kill(self) -> None:
        """Stop the server at once, losing its data (a crash)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait(10)

    def shutdown_save(self) -> None:
        """Stop the server after it saved its data (``SHUTDOWN SAVE``)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            _command(self.port, b"SHUTDOWN SAVE", timeout=10)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def start_again(self) -> None:
        """Start on the same port (after :meth:`kill` or :meth:`shutdown_save`)."""
        self._start_process()

    def restart(self, *, keep_data: bool, down_for: float = 0.0) -> None:
        """Restart on the same port, keeping the data or losing it, down ``down_for`` s."""
        if keep_data:
            self.shutdown_save()
        else:
            self.kill()
            (self.base / "dump.rdb").unlink(missing_ok=True)  # an older snapshot, if any
        time.sleep(down_for)
        self.start_again()

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        self.kill()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_redis() -> RedisServer:
    """A started :class:`RedisServer`; skips (or fails, under CI) without the binary."""
    binary = find_redis_server()
    if binary is None:
        message = (
            "REDIS TESTS NOT RUN: no redis-server found (install it, e.g. "
            f"`apt-get install -y redis-server`, or set {BIN_ENV})"
        )
        if os.environ.get("CI"):
            pytest.fail(message + " -- CI is set, so this is a failure", pytrace=False)
        warnings.warn(message, stacklevel=2)
        pytest.skip(message)
    return RedisServer(binary).start()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A running ``redis-server`` for the session (skipped loudly, or failed under CI)."""
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()
