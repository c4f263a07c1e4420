"""Soak off the happy path: clients that leave at every phase, slow readers, slow headers.

Not a test: a bounded run on loopback against one ``rxllm serve`` process
whose upstream is the built-in model in this process (its traffic log says
when each upstream request's connection closed and how its response ended)::

    .venv/bin/python -m bench.abuse_soak --streams 1000 --concurrency 100 --seed 1

Each of ``--streams`` streams is one of (weights in ``KINDS``):

* ``normal`` -- a streamed answer read to its end (its latency is measured:
  time to the first token and to the end);
* ``leave_before_first`` -- the upstream thinks 2 s; the client leaves (a
  close or a reset, at random) 0.1-1.5 s after sending;
* ``leave_in_backoff`` -- the first attempt gets a 503 with ``Retry-After:
  1.5``; the client leaves 0.2-1.2 s after sending, during the backoff;
* ``leave_mid_stream`` -- the client leaves after reading 1-40 chunks;
* ``leave_non_streaming`` -- a non-streaming request (the upstream thinks 2 s)
  the client leaves 0.1-1.5 s after sending;
* ``slow_reader`` -- reads 4 KiB then sleeps 50 ms, to the end;
* ``stalled_reader`` -- asks for ~5 MB with a 4 KiB receive buffer, reads
  the headers, then nothing until its upstream request has ended (the
  server gave up on it, or the whole answer went into the buffers on the
  way) or for ``STALL_LIMIT`` seconds, then the send timeout; then it reads:
  "cut off" (the end without ``[DONE]``: the server's send timeout acted),
  "completed", or "not cut off" (still open after 10 s: the server is still
  feeding it, e.g. at the pace of a store that is behind).

Meanwhile ``--slow-headers`` connections each send a request's headers a
byte per second, reconnecting when the server closes them. ``--normal-only
--slow-headers 0`` runs the same number of ``normal`` streams with no abuse:
the baseline of their figures.

Reported: upstream requests left running after their client (must be 0);
how long after the client left the others ended (from the leave, or from
the request's arrival when it was sent after it): p99, largest, and how many
took over 100 ms; the p50/p99 time to first token and
to the end of ``normal`` streams; the server's peak RSS (``VmHWM``); events
lost: ``normal`` and ``slow_reader`` answers that arrived incomplete at the
client or in the store, and the store's dropped-events counter; the
connections the server closed for its limits. ``--json`` prints the report
as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import scratch_dir  # noqa: E402
from pipeline.apps.builtin_model import MockScript, MockServer  # noqa: E402
from tests.serving import ServeProcess  # noqa: E402

KINDS = {
    "normal": 0.40,
    "leave_before_first": 0.12,
    "leave_in_backoff": 0.10,
    "leave_mid_stream": 0.12,
    "leave_non_streaming": 0.10,
    "slow_reader": 0.10,
    "stalled_reader": 0.06,
}
LEAVING = {"leave_before_first", "leave_in_backoff", "leave_mid_stream", "leave_non_streaming"}
WORDS = 60  # tokens of an answer
INTERVAL = 0.02  # seconds between tokens
STALLED_TOKENS = 20_000  # ~5 MB of frames: more than the buffers on the way hold
STALL_LIMIT = 120.0  # seconds a stalled reader waits for the server to give up on it


@dataclass
class Outcome:
    index: int
    kind: str
    tag: str
    left_at: float | None = None  # when the client closed its connection
    ttft: float | None = None
    total: float | None = None
    text: str = ""
    stream_id: str | None = None
    error: str | None = None


def _answer(index: int) -> str:
    return " ".join(f"w{index}.{i}" for i in range(WORDS))


def _request(kind: str, index: int, tag: str) -> tuple[str, dict[str, Any]]:
    mock: dict[str, Any] = {"fault_key": tag, "text": _answer(index), "interval": INTERVAL}
    stream = kind != "leave_non_streaming"
    if kind in ("leave_before_first", "leave_non_streaming"):
        mock.update(stall=2.0)
    elif kind == "leave_in_backoff":
        mock.update(status=503, retry_after=1.5, fail_first=1)
    elif kind == "slow_reader":
        mock.update(text=[f"{'x' * 1000}{i} " for i in range(400)], interval=0.0)
    elif kind == "stalled_reader":  # more than the sockets' buffers hold
        mock.update(text=("x" * 30 + " ") * STALLED_TOKENS, interval=0.0)
    body = {
        "model": "mock-model",
        "messages": [{"role": "user", "content": f"stream {index}"}],
        "stream": stream,
        "mock": mock,
    }
    return "/v1/chat/completions", body


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.outcomes: list[Outcome] = []
        self.stop_attackers = asyncio.Event()
        self.attacker_connections = 0
        self.upstream: MockServer | None = None

    def upstream_ended(self, tag: str) -> bool:
        """Whether the upstream request tagged ``tag`` has ended (closed or completed)."""
        assert self.upstream is not None
        for request in list(self.upstream.recorder.requests):
            script = request.script
            if isinstance(script, dict) and script.get("fault_key") == tag:
                if request.connection and request.connection.closed_at is not None:
                    return True
                if request.outcome == "completed":
                    return True
        return False

    async def raw_open(
        self, port: int, path: str, body: dict[str, Any], rcvbuf: int | None = None
    ) -> Any:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connecting: the window is agreed then
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        data = json.dumps(body).encode()
        writer.write(
            f"POST {path} HTTP/1.1\r\nhost: soak\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()
        return reader, writer

    def leave(self, writer: asyncio.StreamWriter) -> float:
        if self.rng.random() < 0.5:
            writer.transport.abort()  # a reset
        else:
            writer.close()
        return time.monotonic()

    async def one(self, served: ServeProcess, http: httpx.AsyncClient, o: Outcome) -> None:
        path, body = _request(o.kind, o.index, o.tag)
        rng = self.rng
        try:
            if o.kind == "normal":
                start = time.monotonic()
                async with http.stream("POST", path, json=body) as response:
                    o.stream_id = response.headers.get("x-rxllm-stream-id")
                    async for line in response.aiter_lines():
                        if line.startswith("data: {") and '"content"' in line:
                            if o.ttft is None:
                                o.ttft = time.monotonic() - start
                            delta = json.loads(line[6:])["choices"][0]["delta"]
                            o.text += delta.get("content") or ""
                o.total = time.monotonic() - start
            elif o.kind in ("leave_before_first", "leave_non_streaming"):
                _, writer = await self.raw_open(served.port, path, body)
                await asyncio.sleep(rng.uniform(0.1, 1.5))
                o.left_at = self.leave(writer)
            elif o.kind == "leave_in_backoff":
                _, writer = await self.raw_open(served.port, path, body)
                await asyncio.sleep(rng.uniform(0.2, 1.2))
                o.left_at = self.leave(writer)
            elif o.kind == "leave_mid_stream":
                reader, writer = await self.raw_open(served.port, path, body)
                chunks = rng.randint(1, 40)
                for _ in range(chunks):
                    if not await reader.readline():
                        break
                o.left_at = self.leave(writer)
            elif o.kind == "slow_reader":
                async with http.stream("POST", path, json=body) as response:
                    o.stream_id = response.headers.get("x-rxllm-stream-id")
                    async for chunk in response.aiter_bytes(4096):
                        o.text += chunk.decode("utf-8", "replace")
                        await asyncio.sleep(0.05)
            elif o.kind == "stalled_reader":
                reader, writer = await self.raw_open(served.port, path, body, rcvbuf=4096)
                if not (await reader.read(1024)).startswith(b"HTTP/1.1 200"):
                    raise RuntimeError("not answered 200")
                # Read nothing until the server has given up on the stream: every
                # buffer on the way full, then the send timeout (or STALL_LIMIT).
                deadline = time.monotonic() + STALL_LIMIT
                await asyncio.sleep(self.args.send_timeout)
                while time.monotonic() < deadline:
                    if self.upstream_ended(o.tag):
                        break
                    await asyncio.sleep(0.5)
                # An upstream that completed into the buffers: its last write may still stall.
                await asyncio.sleep(self.args.send_timeout + 2)
                # Cut off: the rest of what the buffers held, then the end, without
                # [DONE]. Not cut off: the answer still flows; leave after 10 s.
                rest, o.text = b"", "not cut off"
                try:
                    async with asyncio.timeout(10):
                        while chunk := await reader.read(1 << 16):
                            rest = rest[-16:] + chunk
                        o.text = "completed" if b"[DONE]" in rest else "cut off"
                except TimeoutError:
                    pass
                writer.transport.abort()
        except Exception as exc:  # a soak reports, it does not stop
            o.error = f"{type(exc).__name__}: {exc}"

    async def slow_headers(self, port: int) -> None:
        """A connection sending a request's headers a byte a second, again when closed."""
        request = b"GET /v1/models HTTP/1.1\r\nhost: soak\r\nx-padding: " + b"a" * 200
        while not self.stop_attackers.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                self.attacker_connections += 1
                for byte in request:
                    if self.stop_attackers.is_set() or writer.is_closing():
                        break
                    writer.write(bytes([byte]))
                    await writer.drain()
                    try:
                        async with asyncio.timeout(1.0):
                            if await reader.read(1) == b"":
                                break  # closed by the server
                    except TimeoutError:
                        pass
                writer.close()
            except OSError:
                await asyncio.sleep(0.5)

    async def run(self) -> dict[str, Any]:
        args = self.args
        tmp = scratch_dir("rxllm-abuse-")
        db = f"sqlite+aiosqlite:///{tmp / 'soak.db'}"
        kinds = ["normal"] if args.normal_only else list(KINDS)
        weights = [KINDS[k] for k in kinds]
        for i in range(args.streams):
            kind = self.rng.choices(kinds, weights)[0]
            self.outcomes.append(Outcome(i, kind, f"soak-{args.seed}-{i}"))
        with MockServer(MockScript(), models=("mock-model",)) as upstream:
            self.upstream = upstream
            serve_args = ["--upstream", upstream.base_url, "--model", "mock-model", "--db", db]
            serve_args += ["--send-timeout", str(args.send_timeout)]
            serve_args += ["--header-timeout", str(args.header_timeout)]
            with ServeProcess(*serve_args, log_path=tmp / "serve.log") as served:
                assert served._proc is not None
                pid = served._proc.pid
                attackers = [
                    asyncio.create_task(self.slow_headers(served.port))
                    for _ in range(args.slow_headers)
                ]
                limits = httpx.Limits(max_connections=args.concurrency + 10)
                async with httpx.AsyncClient(
                    base_url=served.url, timeout=60, limits=limits
                ) as http:
                    started = time.monotonic()
                    gate = asyncio.Semaphore(args.concurrency)

                    async def guarded(o: Outcome) -> None:
                        async with gate:
                            await self.one(served, http, o)

                    await asyncio.gather(*(guarded(o) for o in self.outcomes))
                    elapsed = time.monotonic() - started
                    self.stop_attackers.set()
                    await asyncio.gather(*attackers, return_exceptions=True)
                    await asyncio.sleep(3)  # the store's last flush; upstream closes land
                    report = await self.report(http, upstream, pid, elapsed)
                report["serve_log_tracebacks"] = served.log().count("Traceback")
        return report

    async def report(
        self, http: httpx.AsyncClient, upstream: MockServer, pid: int, elapsed: float
    ) -> dict[str, Any]:
        by_tag: dict[str, list[Any]] = {}
        for request in upstream.recorder.requests:
            script = request.script
            if isinstance(script, dict) and isinstance(script.get("fault_key"), str):
                by_tag.setdefault(script["fault_key"], []).append(request)
        late: list[float] = []
        late_by_kind: Counter[str] = Counter()
        running_by_kind: Counter[str] = Counter()
        running = 0
        for o in self.outcomes:
            if o.left_at is None:
                continue
            for request in by_tag.get(o.tag, []):
                ends = [
                    t
                    for t in (
                        request.connection.closed_at if request.connection else None,
                        request.ended_at if request.outcome == "completed" else None,
                    )
                    if t is not None
                ]
                if not ends:  # still running at the end of the run
                    running += 1
                    running_by_kind[o.kind] += 1
                    continue
                # From when it could first be stopped: the client's leaving, or the
                # request's arrival if it was sent (and then cancelled) after that.
                delay = min(ends) - max(o.left_at, request.arrived_at)
                if delay > 0:
                    late.append(delay)
                    if delay > 0.1:
                        late_by_kind[o.kind] += 1
        normal = [o for o in self.outcomes if o.kind == "normal" and o.error is None]
        ttfts = sorted(o.ttft for o in normal if o.ttft is not None)
        totals = sorted(o.total for o in normal if o.total is not None)
        incomplete_client = [o.index for o in normal if o.text != _answer(o.index)]
        incomplete_store = 0
        for o in normal:
            if o.stream_id:
                stored = (await http.get(f"/v1/transcripts/{o.stream_id}")).json()
                if stored.get("content") != _answer(o.index) or stored.get("status") != "finished":
                    incomplete_store += 1
        metrics = (await http.get("/metrics")).text
        peak_kb = _peak_rss_kb(pid)
        return {
            "streams": len(self.outcomes),
            "kinds": dict(Counter(o.kind for o in self.outcomes)),
            "seconds": round(elapsed, 1),
            "client_errors": Counter(
                (o.kind, (o.error or "").split(":")[0]) for o in self.outcomes if o.error
            ).most_common(5),
            "left": sum(1 for o in self.outcomes if o.left_at is not None),
            "stalled_readers": dict(
                Counter(o.text for o in self.outcomes if o.kind == "stalled_reader")
            ),
            "upstream_left_running_after_client": running,
            "upstream_ended_over_100ms_after_client_left": sum(d > 0.1 for d in late),
            "by_kind_running_or_over_100ms": dict(late_by_kind + running_by_kind),
            "upstream_end_after_leave_max_ms": round(1000 * max(late, default=0.0), 1),
            "upstream_end_after_leave_p99_ms": round(1000 * _pct(sorted(late), 0.99), 1),
            "normal_ttft_p50_ms": round(1000 * _pct(ttfts, 0.5), 1),
            "normal_ttft_p99_ms": round(1000 * _pct(ttfts, 0.99), 1),
            "normal_total_p99_ms": round(1000 * _pct(totals, 0.99), 1),
            "normal_incomplete_at_client": len(incomplete_client),
            "normal_incomplete_in_store": incomplete_store,
            "store_events_dropped": _metric(metrics, "rxllm_store_buffer_dropped_total"),
            "peak_rss_mb": round(peak_kb / 1024, 1),
            "slow_header_connections": self.attacker_connections,
            "closed_header_timeout": _metric(metrics, 'reason="header_timeout"'),
            "cancelled_client_gone": _metric(metrics, 'reason="client_gone"'),
        }


def _peak_rss_kb(pid: int) -> int:
    """The process's peak resident set (``VmHWM``), in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1])


def _pct(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _metric(text: str, needle: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if needle in line and not line.startswith("#") and "_created" not in line
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--slow-headers", type=int, default=100)
    parser.add_argument("--send-timeout", type=float, default=5.0)
    parser.add_argument("--header-timeout", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--normal-only",
        action="store_true",
        help="every stream a normal one (with --slow-headers 0: the baseline of the normal "
        "streams' figures, to see how much the abuse moves them)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = asyncio.run(Soak(args).run())
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        for key, value in report.items():
            print(f"{key:45} {value}")


if __name__ == "__main__":
    main()
