"""``rxllm serve`` behind a real nginx with its default ``proxy_buffering on``.

A streamed chat completion goes through nginx and the tokens must reach the
client one by one, while the upstream is still producing them, on two
locations: ``/`` with ``proxy_http_version 1.1`` (a typical deployment) and
``/http10/`` with nginx's defaults untouched (HTTP/1.0 to the upstream).

What keeps nginx from buffering: on HTTP/1.0 the upstream's body is
close-delimited and nginx holds it until a buffer fills or the upstream
ends, unless the response says ``X-Accel-Buffering: no``, as every SSE
response of ``rxllm serve`` does. The control location is the same with
``proxy_ignore_headers X-Accel-Buffering``: the same stream then arrives all
at once at its end, so the check can fail. (On HTTP/1.1 the body is chunked
and nginx 1.22 passes each complete chunk on even with the header ignored,
so the header is not what the ``/`` location depends on.)

Needs Debian's ``nginx`` (or ``nginx-light``): ``scripts/install-test-deps.sh``.
Skipped when it is missing, failed when the ``CI`` variable is set.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pipeline.apps.builtin_model import MockServer
from tests.serving import ServeProcess, free_port

pytestmark = pytest.mark.services  # needs nginx, started by the tests

WORDS = [f"w{i:02d}" for i in range(15)]
TEXT = " ".join(WORDS)
INTERVAL = 0.1
PRODUCING = INTERVAL * (len(WORDS) - 1)  # seconds from the first token to the last


def require(what: str, found: object) -> None:
    """Skip a test whose tool is missing; under ``CI`` fail it instead."""
    if found:
        return
    message = f"{what} is not installed: run scripts/install-test-deps.sh"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{message} (CI is set, so a missing tool fails)", pytrace=False)
    pytest.skip(message)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


CONFIG = """\
{user}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        # proxy_buffering is on: nginx's default, left as it is.
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
        }}
        # nginx's defaults (HTTP/1.0 to the upstream).
        location /http10/ {{
            proxy_pass http://127.0.0.1:{upstream}/;
        }}
        # The control: the same, blind to X-Accel-Buffering.
        location /http10-buffered/ {{
            proxy_pass http://127.0.0.1:{upstream}/;
            proxy_ignore_headers X-Accel-Buffering;
        }}
    }}
}}
"""


@dataclass
class Nginx:
    port: int
    tmp: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        path = self.tmp / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="module")
def nginx_bin() -> str:
    """nginx's path; checked before any server starts."""
    binary = nginx_binary()
    require("nginx", binary)
    assert binary is not None
    return binary


@pytest.fixture(scope="module")
def served(
    nginx_bin: str, upstream: MockServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("serve-nginx")
    args = ["--upstream", upstream.base_url, "--no-store"]
    with ServeProcess(*args, log_path=tmp / "serve.log") as proc:
        yield proc


@pytest.fixture(scope="module")
def nginx(
    nginx_bin: str, served: ServeProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Nginx]:
    tmp = tmp_path_factory.mktemp("nginx")
    port = free_port()
    user = "user root;" if os.geteuid() == 0 else ""  # workers must reach tmp (mode 0700)
    config = CONFIG.format(user=user, tmp=tmp, port=port, upstream=served.port)
    (tmp / "nginx.conf").write_text(config)
    server = Nginx(port, tmp)
    proc = subprocess.Popen(
        [nginx_bin, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"nginx exited ({proc.returncode}):\n{server.error_log()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"nginx did not start:\n{server.error_log()}")
                time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Timed:
    """When each content token reached the client, and when the upstream was asked and
    had answered (``time.monotonic()``; the mock runs in this process)."""

    tokens: list[tuple[float, str]]
    upstream_started_at: float
    upstream_ended_at: float

    @property
    def text(self) -> str:
        return "".join(token for _, token in self.tokens)

    @property
    def arrivals(self) -> list[float]:
        return [t for t, _ in self.tokens]


def stream_through(url: str, upstream: MockServer) -> Timed:
    body = {
        "model": "mock-model",
        "messages": [{"role": "user", "content": "Count for me"}],
        "stream": True,
        "mock": {"text": TEXT, "interval": INTERVAL},
    }
    tokens: list[tuple[float, str]] = []
    with httpx.Client(timeout=30) as http, http.stream("POST", url, json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            now = time.monotonic()
            chunk = json.loads(line.removeprefix("data: "))
            for choice in chunk["choices"]:
                content = choice["delta"].get("content")
                if content:
                    tokens.append((now, content))
    request = upstream.recorder.last_request
    assert request is not None and request.script == body["mock"]
    assert request.outcome == "completed" and request.ended_at is not None
    return Timed(tokens, request.arrived_at, request.ended_at)


@pytest.mark.parametrize("location", ["/", "/http10/"], ids=["http11", "nginx-defaults"])
def test_tokens_pass_nginx_one_by_one(nginx: Nginx, upstream: MockServer, location: str) -> None:
    timed = stream_through(f"{nginx.url}{location}v1/chat/completions", upstream)
    assert timed.text == TEXT
    assert len(timed.tokens) == len(WORDS)
    first, last = timed.arrivals[0], timed.arrivals[-1]
    # Measured from when the upstream got the request, not from when it was sent:
    # a busy machine may be slow to get there, which is not what this test is about.
    started, ended = timed.upstream_started_at, timed.upstream_ended_at
    producing = ended - started
    assert producing >= PRODUCING
    # The first token arrives long before the last one is produced...
    assert first - started < 0.4 * producing, (started, timed.arrivals, ended)
    # ...and the others follow one by one, spread over the whole stream.
    assert last - first >= 0.6 * PRODUCING
    gaps = [b - a for a, b in zip(timed.arrivals, timed.arrivals[1:], strict=False)]
    assert statistics.median(gaps) >= 0.4 * INTERVAL, gaps


def test_control_without_the_header_nginx_buffers_the_stream(
    nginx: Nginx, upstream: MockServer
) -> None:
    """Proves the test above can fail: ``/http10/`` with nginx blind to the header."""
    timed = stream_through(f"{nginx.url}/http10-buffered/v1/chat/completions", upstream)
    assert timed.text == TEXT
    first, last = timed.arrivals[0], timed.arrivals[-1]
    # Nothing arrives before the upstream has produced its last token; then all at once.
    assert first >= timed.upstream_ended_at - 0.1 * PRODUCING, timed.arrivals
    assert last - first < 0.2 * PRODUCING
