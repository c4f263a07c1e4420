"""Continuation after the first token: how many cut answers end complete, and how much later.

``python -m bench.continuation [--n 20] [--litellm-python PATH] [--json FILE]``

The built-in model runs in this process and answers every request with the
same 60-word text at ``INTERVAL`` seconds per token. In each trial, the
model cuts its first request at a chosen token (from 5 to 50, spread evenly
over the trials) in one of three ways: it drops the connection, goes silent,
or sends an error event. The next request, prefilled with the answer so
far, continues it. Every system sees the same trials:

* ``rxllm prefix``: ``failover(continue_after_first_token=True)`` with an
  upstream whose ``prefill = "prefix"``;
* ``rxllm instruction``: ``prefill = "instruction"``, the model saying the
  last 3 words again (its ``continue_overlap``), so the seam is trimmed;
* ``litellm continuation``: LiteLLM's ``Router`` with a fallback deployment
  and ``enable_mid_stream_fallback_continuation`` (prefill), run by
  ``bench/continuation_litellm.py`` under ``--litellm-python`` (an
  interpreter with ``litellm`` installed: not one of rxllm's dependencies);
* ``litellm default``: the same router without that flag.

For each system and cut it counts the answers that came out complete and
duplicate-free (exactly the uncut text), those cut short (a proper start of
it) and those with something repeated or wrong. It also reports the median
added time of the complete ones: each cut run is paired with an uncut run of
the same system made just before it, and the added time is the cut run's wall
time minus the uncut run's. The idle timeout (``--idle``) is the silence that ends a
stalled stream for both systems.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["ANSWER", "main", "outcome"]

ANSWER = (
    "Reactive streams let a consumer pull only what it can take, so a fast producer never "
    "floods a slow reader. Each stage passes its demand upstream, and every stream ends "
    "with exactly one terminal signal: completion, an error, or cancellation. This makes "
    "backpressure, retries and resumption composable parts rather than ad hoc code written "
    "again for every client."
)
INTERVAL = 0.005
CUTS: dict[str, dict[str, Any]] = {
    "drop": {"drop_after": None},
    "stall": {"stall": 30.0, "stall_after": None},
    "error": {"error_after": None},
}
_CUT_FIELD = {"drop": "drop_after", "stall": "stall_after", "error": "error_after"}


def outcome(text: str) -> str:
    """``complete`` (the uncut answer), ``short`` (a proper start of it) or ``wrong``."""
    if text == ANSWER:
        return "complete"
    if ANSWER.startswith(text):
        return "short"
    return "wrong"


def trials(n: int) -> list[tuple[str, dict[str, Any]]]:
    """``n`` trials per cut: the mock fields of each (a fresh fault key: the first request cut)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for cut, fields in CUTS.items():
        for i in range(n):
            at = 5 + (45 * i) // max(1, n - 1)
            mock = {
                "text": ANSWER,
                "interval": INTERVAL,
                "continue_overlap": 3,
                "fail_first": 1,
                "fault_key": uuid.uuid4().hex,
                **fields,
                _CUT_FIELD[cut]: at,
            }
            out.append((cut, mock))
    return out


def uncut(n: int) -> list[tuple[str, dict[str, Any]]]:
    return [("none", {"text": ANSWER, "interval": INTERVAL}) for _ in range(n)]


async def _rxllm(base_url: str, prefill: Any, specs: list[dict[str, Any]], idle: float) -> Any:
    from pipeline.runtime.failover import failover
    from pipeline.runtime.multicast import StreamRun
    from pipeline.runtime.upstreams import Upstream

    upstream = Upstream("model", base_url, "not-needed", prefill=prefill)
    results = []
    for mock in specs:
        params = {
            "model": "mock-model",
            "messages": [{"role": "user", "content": "Tell me about reactive streams"}],
            "mock": mock,
        }
        started = time.perf_counter()
        events = failover(
            [upstream],
            params,
            idle_timeout=idle,
            backoff=0.01,
            continue_after_first_token=True,
        )
        run = StreamRun(events, errors_mapped=True)
        parts: list[str] = []
        run.subscribe(lambda e, parts=parts: parts.append(e.text) if e.type == "text" else None)
        run.start()
        terminal = await run.wait()
        results.append(
            {
                "text": "".join(parts),
                "seconds": time.perf_counter() - started,
                "error": None
                if terminal is None or terminal.type == "finished"
                else f"{terminal.type}: {getattr(terminal, 'message', '')}"[:120],
                "cut_at": next((mock[f] for f in _CUT_FIELD.values() if mock.get(f)), None),
            }
        )
    await upstream.aclose()
    return results


def _litellm(
    python: str, base_url: str, specs: list[dict[str, Any]], idle: float, continuation: bool
) -> list[dict[str, Any]]:
    spec = {
        "base_url": base_url,
        "continuation": continuation,
        "idle_timeout": idle,
        "trials": [{"mock": m} for m in specs],
    }
    done = subprocess.run(
        [python, str(Path(__file__).with_name("continuation_litellm.py"))],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _paired(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each trial preceded by an uncut run (fresh fault keys: each trial's first request is cut)."""
    out: list[dict[str, Any]] = []
    for spec in specs:
        out += [uncut(1)[0][1], {**spec, "fault_key": uuid.uuid4().hex}]
    return out


def _summary(name: str, labels: list[str], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    plain, cut_runs = results[0::2], results[1::2]
    for cut in CUTS:
        mine = [(r, p) for label, r, p in zip(labels, cut_runs, plain, strict=True) if label == cut]
        kinds = [outcome(r["text"]) for r, _ in mine]
        added = [
            r["seconds"] - p["seconds"]
            for (r, p), k in zip(mine, kinds, strict=True)
            if k == "complete"
        ]
        rows.append(
            {
                "system": name,
                "cut": cut,
                "n": len(mine),
                "complete": kinds.count("complete"),
                "short": kinds.count("short"),
                "wrong": kinds.count("wrong"),
                "added_ms_median": round(statistics.median(added) * 1000, 1) if added else None,
                "not_complete": [
                    r["error"]
                    if r.get("cut_at") is None
                    else f"{r['error']} (cut at {r['cut_at']})"
                    for (r, _), k in zip(mine, kinds, strict=True)
                    if k != "complete"
                ],
            }
        )
    return rows


async def _measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    from pipeline.apps.builtin_model import MockServer

    labels_and_specs = trials(args.n)
    labels = [label for label, _ in labels_and_specs]
    specs = [spec for _, spec in labels_and_specs]
    rows: list[dict[str, Any]] = []
    with MockServer() as model:
        warm_up = [s for _, s in uncut(2)]  # the first requests pay for start-up
        for name, prefill in (("rxllm prefix", "prefix"), ("rxllm instruction", "instruction")):
            results = await _rxllm(model.base_url, prefill, warm_up + _paired(specs), args.idle)
            rows += _summary(name, labels, results[len(warm_up) :])
        if args.litellm_python:
            for name, flag in (("litellm continuation", True), ("litellm default", False)):
                results = _litellm(
                    args.litellm_python, model.base_url, warm_up + _paired(specs), args.idle, flag
                )
                rows += _summary(name, labels, results[len(warm_up) :])
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run the trials and print a table (and ``--json``)."""
    parser = argparse.ArgumentParser(prog="python -m bench.continuation")
    parser.add_argument("--n", type=int, default=20, help="trials per kind of cut")
    parser.add_argument("--idle", type=float, default=0.5, help="idle timeout (seconds)")
    parser.add_argument("--litellm-python", help="an interpreter with litellm installed")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args(argv)
    rows = asyncio.run(_measure(args))
    print("| system | cut | n | complete, no duplicate | cut short | repeated/wrong | added ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        added = "-" if r["added_ms_median"] is None else r["added_ms_median"]
        print(
            f"| {r['system']} | {r['cut']} | {r['n']} | {r['complete']} | {r['short']} "
            f"| {r['wrong']} | {added} |"
        )
    for r in rows:
        for error, count in Counter(r["not_complete"]).items():
            print(f"{r['system']}, {r['cut']}: {count} not complete: {error}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
