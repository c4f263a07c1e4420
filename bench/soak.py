"""Soak: thousands of streams through two ``rxllm serve`` processes sharing PostgreSQL and Redis.

Not a test: a bounded run (``--streams``, ``--max-seconds``) on loopback that
reports what clients received against what the transcript store holds::

    .venv/bin/python -m bench.soak --streams 10000 --concurrency 48 --seed 1

It starts, in temporary directories and as the tests do: a PostgreSQL
(``tests/pg.py``), a ``redis-server`` (``tests/redis_server.py``), the
built-in model as its own process, and two ``rxllm serve --db PG --redis
REDIS`` processes (``tests/serving.py``). Then ``--concurrency`` clients run
``--streams`` streams, each:

1. ``POST /v1/streams`` on a random process (the owner), with a mock script
   drawn at random: a plain answer (10 to 30 tokens, 5 to 20 ms apart); an
   upstream that fails its first attempt with a 503 (the retry, a
   ``failover`` event, then the answer); one that always answers 500 (an
   ``error`` before the first token); one that drops the connection after a
   few tokens (an ``error`` after it); or a client that cancels the stream
   (60 tokens, 30 ms apart) after reading 2 to 8 of its events, through a
   random process (``POST /v1/streams/{id}/cancel``);
2. reads its rxllm events with ``GET /v1/streams/{id}/events`` on a random
   process; a third of the clients disconnect at random one to three times
   and reconnect (on a random process) with ``Last-Event-ID``; any
   connection that ends without the terminal event is resumed the same way.

Half-way through, Redis is killed (its data lost) and restarted a second
later on the same port.

At the end, each stream's events as the clients received them (all
connections joined) are compared with the store's (read through
``GET /v1/transcripts/{id}``): events **lost** (stored, never received),
**duplicated** (received twice), **phantom** (received, not stored),
**different** (same ``seq``, different content), and the store's own gaps.
Reported too: streams completed (``finished``), failed over (a ``failover``
event, then ``finished``), cancelled, ended in an injected error, left
incomplete; reads served by the process that did not run the stream; and the
processes' Redis bus counters. ``--json`` prints the report as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import scratch_dir  # noqa: E402
from tests.pg import PostgresServer, find_pg_bin  # noqa: E402
from tests.redis_server import RedisServer, find_redis_server  # noqa: E402
from tests.serving import ServeProcess, free_port  # noqa: E402

TERMINAL = {"finished", "error", "cancelled"}
KINDS = {  # scenario -> weight
    "plain": 0.60,
    "failover": 0.10,
    "error_before": 0.05,
    "drop_after": 0.10,
    "cancel": 0.15,
}
EXPECTED = {  # scenario -> the terminal event it should end with
    "plain": "finished",
    "failover": "finished",
    "error_before": "error",
    "drop_after": "error",
    "cancel": "cancelled",
}


@dataclass
class StreamResult:
    """What one client saw of one stream."""

    index: int
    kind: str
    owner: int
    stream_id: str | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    elsewhere: int = 0  # connections served by the process that does not run it
    disconnects: int = 0  # disconnects the client chose
    resumes: int = 0  # connections after the first
    not_found: int = 0  # 404 answers to a read (the store not written yet, Redis down)
    cancel_status: int | None = None  # the answer to the client's cancel request
    cancel_retries: int = 0  # cancel requests answered 503 (Redis unreachable), sent again
    errors: list[str] = field(default_factory=list)

    @property
    def terminal(self) -> str | None:
        if self.received and self.received[-1]["type"] in TERMINAL:
            return str(self.received[-1]["type"])
        return None


class Soak:
    """The servers, the clients and the tallies."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.results: list[StreamResult] = []
        self.urls: list[str] = []
        self.redis: RedisServer | None = None
        self.redis_restarted_at: float | None = None
        self.launched = 0
        self.t0 = 0.0

    # -- one stream --------------------------------------------------------------

    def script(self, i: int, kind: str, rng: random.Random) -> dict[str, Any]:
        n = rng.randint(10, 30)
        # A cancelled stream must outlast the client's reading of a few events (8 at
        # most), however far behind a busy client reads: 1.8 s.
        interval = 0.03 if kind == "cancel" else rng.choice([0.005, 0.01, 0.02])
        n = 60 if kind == "cancel" else n
        script: dict[str, Any] = {
            "text": " ".join(f"s{i}w{k}" for k in range(n)),
            "interval": interval,
        }
        if kind == "failover":
            script.update(status=503, fail_first=1, fault_key=f"soak-{self.args.seed}-{i}")
        elif kind == "error_before":
            script.update(status=500)
        elif kind == "drop_after":
            script.update(drop_after=rng.randint(2, n - 2))
        return script

    async def one(self, http: httpx.AsyncClient, i: int) -> StreamResult:
        rng = random.Random(f"{self.args.seed}-{i}")
        kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
        result = StreamResult(i, kind, owner=rng.randrange(2))
        body = {
            "model": "mock-model",
            "messages": [{"role": "user", "content": f"soak stream {i}"}],
            "mock": self.script(i, kind, rng),
        }
        try:
            response = await http.post(f"{self.urls[result.owner]}/v1/streams", json=body)
        except httpx.HTTPError as exc:
            result.errors.append(f"start: {type(exc).__name__}")
            return result
        if response.status_code != 201:
            result.errors.append(f"start: HTTP {response.status_code}")
            return result
        stream_id = result.stream_id = response.json()["id"]
        disconnects = rng.choice([1, 2, 3]) if rng.random() < 1 / 3 else 0
        cancel_after = rng.randint(2, 8) if kind == "cancel" else None
        deadline = time.monotonic() + 60
        cancel_task: asyncio.Task[None] | None = None
        while result.terminal is None and time.monotonic() < deadline:
            proc = rng.randrange(2)
            result.connections += 1
            result.resumes += result.connections > 1
            result.elsewhere += proc != result.owner
            cut = rng.randint(1, 12) if disconnects else None
            headers = {}
            if result.received:
                headers["Last-Event-ID"] = str(result.received[-1]["seq"])
            url = f"{self.urls[proc]}/v1/streams/{stream_id}/events"
            got = 0
            try:
                async with aconnect_sse(http, "GET", url, headers=headers) as source:
                    if source.response.status_code == 404:
                        result.not_found += 1
                        await asyncio.sleep(0.1)
                        continue
                    if source.response.status_code != 200:
                        result.errors.append(f"read: HTTP {source.response.status_code}")
                        await asyncio.sleep(0.1)
                        continue
                    async for sse in source.aiter_sse():
                        event = json.loads(sse.data)
                        result.received.append(event)
                        got += 1
                        if event["type"] in TERMINAL:
                            break
                        if cancel_after is not None and len(result.received) >= cancel_after:
                            cancel_after = None
                            target = self.urls[rng.randrange(2)]
                            cancel_task = asyncio.create_task(
                                self.cancel(http, target, stream_id, result)
                            )
                        if cut is not None and got >= cut:
                            disconnects -= 1
                            result.disconnects += 1
                            break  # leaving the block closes the connection
            except httpx.HTTPError as exc:
                result.errors.append(f"read: {type(exc).__name__}")
                await asyncio.sleep(0.1)
            if result.terminal is None and not got:
                await asyncio.sleep(0.05)
        if cancel_task is not None:
            await cancel_task
        return result

    async def cancel(
        self, http: httpx.AsyncClient, url: str, stream_id: str, result: StreamResult
    ) -> None:
        for _ in range(50):  # a 503 (Redis unreachable) is retried, as a client would
            try:
                response = await http.post(f"{url}/v1/streams/{stream_id}/cancel")
            except httpx.HTTPError as exc:
                result.errors.append(f"cancel: {type(exc).__name__}")
                return
            result.cancel_status = response.status_code
            if response.status_code != 503:
                return
            result.cancel_retries += 1
            await asyncio.sleep(0.1)

    # -- the run -------------------------------------------------------------------

    async def clients(self) -> None:
        args = self.args
        limits = httpx.Limits(max_connections=args.concurrency * 3, max_keepalive_connections=64)
        timeout = httpx.Timeout(30.0)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(args.streams):
            queue.put_nowait(i)
        stop_at = time.monotonic() + args.max_seconds

        async def worker(http: httpx.AsyncClient) -> None:
            while time.monotonic() < stop_at:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                self.launched += 1
                self.results.append(await self.one(http, i))
                done = len(self.results)
                if done % 500 == 0:
                    rate = done / (time.monotonic() - self.t0)
                    print(f"  {done} streams ({rate:.0f}/s)", file=sys.stderr, flush=True)

        async def restart_redis() -> None:
            while self.launched < args.streams // 2 and time.monotonic() < stop_at:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            assert self.redis is not None
            print("  killing Redis, restarting it in 1 s", file=sys.stderr, flush=True)
            self.redis_restarted_at = time.monotonic() - self.t0
            await asyncio.to_thread(self.redis.restart, keep_data=False, down_for=1.0)

        async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
            restarter = asyncio.create_task(restart_redis())
            await asyncio.gather(*(worker(http) for _ in range(args.concurrency)))
            if not restarter.done():
                restarter.cancel()
            await asyncio.wait([restarter])

    async def stored(self, http: httpx.AsyncClient, stream_id: str) -> list[dict[str, Any]] | None:
        for _ in range(100):
            response = await http.get(f"{self.urls[0]}/v1/transcripts/{stream_id}")
            if response.status_code == 200 and response.json()["status"] != "running":
                events: list[dict[str, Any]] = response.json()["events"]
                return events
            await asyncio.sleep(0.1)
        return None

    async def compare(self) -> dict[str, Any]:
        tally: Counter[str] = Counter()
        outcomes: Counter[str] = Counter()
        unexpected: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        sem = asyncio.Semaphore(16)

        async with httpx.AsyncClient(timeout=30) as http:

            async def check(result: StreamResult) -> None:
                for error in result.errors:
                    errors[error] += 1
                tally["connections"] += result.connections
                tally["reads_elsewhere"] += result.elsewhere
                tally["client_disconnects"] += result.disconnects
                tally["resumes"] += result.resumes
                tally["reads_not_found"] += result.not_found
                if result.stream_id is None:
                    outcomes["not_started"] += 1
                    return
                terminal = result.terminal or "incomplete"
                outcomes[terminal] += 1
                if terminal == "finished" and any(e["type"] == "failover" for e in result.received):
                    tally["failed_over_then_finished"] += 1
                if result.cancel_status is not None:
                    tally[f"cancel_answered_{result.cancel_status}"] += 1
                tally["cancel_retried_503"] += result.cancel_retries
                late = result.kind == "cancel" and result.cancel_status == 404
                if late and terminal == "finished":
                    tally["cancel_after_the_end"] += 1  # the cancel arrived after it finished
                elif terminal != EXPECTED[result.kind]:
                    unexpected[f"{result.kind}->{terminal}"] += 1
                async with sem:
                    stored = await self.stored(http, result.stream_id)
                if stored is None:
                    tally["store_not_final"] += 1
                    return
                by_seq = {e["seq"]: e for e in stored}
                if sorted(by_seq) != list(range(len(stored))) or (
                    stored and stored[-1]["type"] not in TERMINAL
                ):
                    tally["store_gaps"] += 1
                seqs = [e["seq"] for e in result.received]
                tally["events_received"] += len(seqs)
                tally["events_stored"] += len(stored)
                tally["duplicated"] += len(seqs) - len(set(seqs))
                if seqs != sorted(set(seqs)):
                    tally["out_of_order_streams"] += 1
                received = {e["seq"]: e for e in result.received}
                tally["lost"] += len(by_seq.keys() - received.keys())
                tally["phantom"] += len(received.keys() - by_seq.keys())
                tally["different"] += sum(
                    1 for s, e in received.items() if s in by_seq and by_seq[s] != e
                )

            await asyncio.gather(*(check(r) for r in self.results))
        return {
            "outcomes": dict(outcomes),
            "unexpected_outcomes": dict(unexpected),
            "client_errors": dict(errors),
            **dict(tally),
        }

    async def bus_counters(self) -> dict[str, float]:
        out: dict[str, float] = {}
        async with httpx.AsyncClient(timeout=10) as http:
            for n, url in enumerate(self.urls):
                text = (await http.get(f"{url}/metrics")).text
                for line in text.splitlines():
                    if line.startswith("rxllm_store_buffer_dropped_total{"):
                        out[f"proc{n}:{line.split(' ')[0]}"] = float(line.rsplit(" ", 1)[1])
        return out

    def run(self) -> dict[str, Any]:
        args = self.args
        pg_bin, redis_bin = find_pg_bin(), find_redis_server()
        if pg_bin is None or redis_bin is None:
            raise SystemExit("the soak needs PostgreSQL and redis-server (install-services.sh)")
        logs = scratch_dir("rxllm-soak-")
        pg = PostgresServer(pg_bin)
        pg.start()
        self.redis = RedisServer(redis_bin).start()
        mock_port = free_port()
        code = (
            "from pipeline.apps.builtin_model import serve; "
            f"serve('127.0.0.1', {mock_port}, log_level='warning')"
        )
        mock_log = (logs / "mock.log").open("ab")
        mock = subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, stdout=mock_log, stderr=subprocess.STDOUT
        )
        servers: list[ServeProcess] = []
        try:
            _wait_for_port(mock_port, mock)
            db = pg.create_database()
            common = [
                "--upstream",
                f"http://127.0.0.1:{mock_port}/v1",
                "--db",
                db,
                "--redis",
                self.redis.url,
                "--log-level",
                "warning",
            ]
            for name in ("a", "b"):
                proc = ServeProcess(*common, "--instance", name, log_path=logs / f"{name}.log")
                servers.append(proc.start())
            self.urls = [s.url for s in servers]
            where = f"logs in {logs} (RXLLM_BENCH_KEEP=1 keeps them after the run)"
            print(f"soak: {args.streams} streams, {where}", file=sys.stderr, flush=True)
            self.t0 = time.monotonic()
            asyncio.run(self.clients())
            elapsed = time.monotonic() - self.t0
            report = asyncio.run(self.compare())
            report["bus_dropped"] = asyncio.run(self.bus_counters())
            bus_log_lines = [
                line
                for s in servers
                for line in s.log().splitlines()
                if "redis bus:" in line or "Traceback" in line
            ]
            report["server_log_redis_lines"] = bus_log_lines[:20]
            report.update(
                streams_asked=args.streams,
                streams_run=len(self.results),
                concurrency=args.concurrency,
                seed=args.seed,
                seconds=round(elapsed, 1),
                redis_restarted_at=None
                if self.redis_restarted_at is None
                else round(self.redis_restarted_at, 1),
                logs=str(logs),
            )
            return report
        finally:
            for server in servers:
                server.stop()
            mock.terminate()
            try:
                mock.wait(10)
            except subprocess.TimeoutExpired:
                mock.kill()
            mock_log.close()
            self.redis.stop()
            pg.stop()


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], limit: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the built-in model exited before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def _print(report: dict[str, Any]) -> None:
    outcomes = report["outcomes"]
    lines = [
        f"streams run            {report['streams_run']} of {report['streams_asked']} "
        f"in {report['seconds']} s (concurrency {report['concurrency']}, seed {report['seed']})",
        f"completed (finished)   {outcomes.get('finished', 0)}",
        f"  of which failed over {report.get('failed_over_then_finished', 0)}",
        f"cancelled              {outcomes.get('cancelled', 0)} (cancel requests answered "
        f"200: {report.get('cancel_answered_200', 0)}, 202: "
        f"{report.get('cancel_answered_202', 0)}, 404 as the stream had ended: "
        f"{report.get('cancel_after_the_end', 0)}; 503 answers retried: "
        f"{report.get('cancel_retried_503', 0)})",
        f"injected errors        {outcomes.get('error', 0)}",
        f"incomplete             {outcomes.get('incomplete', 0)}",
        f"not started            {outcomes.get('not_started', 0)}",
        f"unexpected outcomes    {report['unexpected_outcomes'] or 'none'}",
        f"reads (connections)    {report.get('connections', 0)}, served by the other process: "
        f"{report.get('reads_elsewhere', 0)}, resumes: {report.get('resumes', 0)} "
        f"({report.get('client_disconnects', 0)} chosen disconnects), "
        f"answered 404 then retried: {report.get('reads_not_found', 0)}",
        f"events received        {report.get('events_received', 0)} "
        f"(stored: {report.get('events_stored', 0)})",
        f"events lost            {report.get('lost', 0)}",
        f"events duplicated      {report.get('duplicated', 0)}",
        f"phantom / different    {report.get('phantom', 0)} / {report.get('different', 0)}",
        f"store gaps / not final {report.get('store_gaps', 0)} / "
        f"{report.get('store_not_final', 0)}",
        f"Redis restarted at     {report['redis_restarted_at']} s",
        f"Redis bus dropped      {report['bus_dropped'] or 'none'}",
        f"client errors          {report['client_errors'] or 'none'}",
    ]
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--max-seconds", type=float, default=1800, help="stop starting streams after this"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = Soak(args).run()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
