"""Shared pieces of the benchmark: the streams, CPU pinning, the process helpers."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
MODEL = "mock-model"
MESSAGES: list[Any] = [{"role": "user", "content": "Run the benchmark."}]
FRAGMENT = 8  # the mock's fragment size for tool-call arguments
CALL_ARGS = 800  # bytes of arguments per tool call: 100 fragments each


# -- the two streams ---------------------------------------------------------------------


def text_script(chunks: int) -> dict[str, Any]:
    """The mock script of a text stream of ``chunks`` small content chunks (``" w123"``)."""
    return {"text": " ".join(f"w{i % 1000}" for i in range(chunks)), "interval": 0.0}


class Item(BaseModel):
    """One line of an order (the tool-call stream's arguments)."""

    sku: str
    quantity: int
    note: str


class Order(BaseModel):
    """The arguments of the benchmark's one (strict) tool."""

    customer: str
    items: list[Item]


def order_arguments(i: int, size: int = CALL_ARGS) -> str:
    """Compact JSON arguments for ``Order``, exactly ``size`` bytes long."""
    items = [
        {"sku": f"SKU-{i:05d}-{k}", "quantity": k + 1, "note": "handle with care"} for k in range(8)
    ]
    base = json.dumps({"customer": "", "items": items}, separators=(",", ":"))
    pad = size - len(base)
    if pad < 0:
        raise ValueError(f"arguments of {size} bytes are too small for {len(base)}")
    return json.dumps({"customer": "c" * pad, "items": items}, separators=(",", ":"))


def tool_script(chunks: int) -> dict[str, Any]:
    """A stream of tool calls whose argument fragments add up to ``chunks`` chunks."""
    per_call = CALL_ARGS // FRAGMENT
    calls = max(1, chunks // per_call)
    return {
        "tool_calls": [
            {"name": "place_order", "arguments": order_arguments(i)} for i in range(calls)
        ],
        "fragment_size": FRAGMENT,
        "interval": 0.0,
    }


def tool_chunks(chunks: int) -> int:
    """How many argument chunks :func:`tool_script` streams (the per-chunk divisor)."""
    per_call = CALL_ARGS // FRAGMENT
    return max(1, chunks // per_call) * per_call


def order_tools() -> list[Any]:
    """The request's ``tools``: ``Order`` as a strict function tool (what the SDK sends)."""
    import openai

    return [openai.pydantic_function_tool(Order, name="place_order")]


# -- processes and cores -----------------------------------------------------------------


@dataclass
class Cores:
    """Which CPU the servers and the measured client run on (``None``: not pinned)."""

    server: int | None
    client: int | None
    note: str

    @classmethod
    def plan(cls, pin: bool) -> Cores:
        try:
            cpus = sorted(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return cls(None, None, "not pinned (no sched_setaffinity here)")
        if not pin:
            return cls(None, None, "not pinned (--no-pin)")
        if len(cpus) < 2:
            return cls(None, None, "not pinned (one CPU)")
        return cls(
            cpus[-1],
            cpus[0],
            f"server pinned to CPU {cpus[-1]}, measured client to CPU {cpus[0]}",
        )


def pinned(cpu: int | None) -> Any:
    """A ``preexec_fn`` that pins the child to ``cpu`` (or ``None`` for no pinning)."""
    if cpu is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0 to 1) of ``values``; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, round(q * len(ordered)) - 1)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[Any], timeout: float = 60.0) -> None:
    """Wait until something accepts connections on ``port``; fail if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def python_env() -> dict[str, str]:
    """The environment of a child Python: the repository importable, quiet peers."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download at import
    env.setdefault("LITELLM_TELEMETRY", "False")
    env.setdefault("LANGSMITH_TRACING", "false")
    env.setdefault("OPENAI_API_KEY", "bench-key")
    env["PYTHONHASHSEED"] = "0"
    return env


def scratch_dir(prefix: str) -> Path:
    """A fresh folder for a run's logs, profiles and databases, removed when the process exits.

    A store's database from a real-rate run is tens of megabytes; runs add up. With
    ``RXLLM_BENCH_KEEP=1`` the folder is kept and its path printed at exit. A server that
    fails to start prints the end of its log first (:func:`start_process`).
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.environ.get("RXLLM_BENCH_KEEP"):
        atexit.register(print, f"kept: {path}", file=sys.stderr)
    else:
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def start_process(
    args: Sequence[str],
    cpu: int | None,
    port: int,
    log: Path,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[Any]:
    """Start a server process pinned to ``cpu``, wait until it listens on ``port``."""
    out = log.open("wb")
    proc = subprocess.Popen(
        list(args),
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**python_env(), **(env or {})},
        cwd=ROOT,
        preexec_fn=pinned(cpu),
    )
    try:
        wait_for_port(port, proc, timeout)
    except BaseException:
        stop_process(proc)
        out.close()
        tail = log.read_text(errors="replace")[-2000:]
        command = " ".join(map(str, args))[:200]
        print(f"{command} did not start; the end of its log:\n{tail}", file=sys.stderr)
        raise
    return proc


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Stop a process this benchmark started (SIGTERM, then SIGKILL)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def mock_command(port: int) -> list[str]:
    """The built-in model in the foreground, no pause between tokens."""
    code = (
        "from pipeline.apps.builtin_model import serve; "
        f"serve('127.0.0.1', {port}, interval=0.0, log_level='warning')"
    )
    return [sys.executable, "-c", code]


def rss_bytes(pid: int | None = None) -> int:
    """The resident set size of a process (this one by default), from ``/proc``."""
    path = f"/proc/{pid or 'self'}/status"
    with open(path) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in " + path)


def _stat_times(stat: Path) -> tuple[float, float]:
    """User and system CPU seconds from a ``/proc`` ``stat`` file (a process's or a thread's)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _stat_seconds(stat: Path) -> float:
    """User + system CPU seconds from a ``/proc`` ``stat`` file (a process's or a thread's)."""
    return sum(_stat_times(stat))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process, from ``/proc/PID/stat``."""
    return _stat_seconds(Path(f"/proc/{pid}/stat"))


def system_cpu_seconds(pid: int) -> float:
    """System CPU seconds of another process (the kernel's work for it), from ``/proc/PID/stat``."""
    return _stat_times(Path(f"/proc/{pid}/stat"))[1]


def thread_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid``'s threads other than its main one (``/proc``).

    A thread that ended in between is not counted: read it over a window where the
    threads live throughout (a store's writer thread, a thread pool).
    """
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        if task.name == str(pid):
            continue
        try:
            total += _stat_seconds(task / "stat")
        except FileNotFoundError:
            continue
    return total


# -- results -----------------------------------------------------------------------------


@dataclass
class Measured:
    """What one worker measured: ``samples`` (one per repetition) and notes."""

    samples: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    def to_json(self) -> str:
        return json.dumps({"samples": self.samples, "extra": self.extra, "skipped": self.skipped})

    @classmethod
    def from_json(cls, text: str) -> Measured:
        data = json.loads(text)
        return cls(data["samples"], data.get("extra") or {}, data.get("skipped"))

    @property
    def median(self) -> float:
        return statistics.median(self.samples)
