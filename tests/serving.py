"""``rxllm serve`` as a real subprocess on a loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

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
