"""LiteLLM's router on the same cut streams as ``bench.continuation`` (run by it, in its own venv).

Only the standard library and ``litellm`` are imported: it runs under the
interpreter of a virtual environment where ``litellm`` is installed (it is
not one of rxllm's dependencies). It reads the trials as JSON on stdin and
prints one JSON result per trial, in order::

    {"base_url": ..., "continuation": true, "idle_timeout": 0.5,
     "trials": [{"mock": {...}}, ...]}

Two deployments of the built-in model, ``primary`` and ``backup`` (fallback
of ``primary``), both marked ``supports_assistant_prefill``; with
``continuation`` the router's ``enable_mid_stream_fallback_continuation`` is on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

__all__ = ["main"]


async def _trial(router: Any, mock: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    parts: list[str] = []
    error = None
    try:
        response = await router.acompletion(
            model="primary",
            messages=[{"role": "user", "content": "Tell me about reactive streams"}],
            stream=True,
            extra_body={"mock": mock},
        )
        async for chunk in response:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
    except Exception as exc:  # the outcome is what is measured
        error = type(exc).__name__
    return {"text": "".join(parts), "seconds": time.perf_counter() - started, "error": error}


async def _run(spec: dict[str, Any]) -> list[dict[str, Any]]:
    import litellm

    litellm.suppress_debug_info = True
    params = {
        "model": "openai/mock-model",
        "api_base": spec["base_url"],
        "api_key": "not-needed",
        "stream_timeout": spec["idle_timeout"],
    }
    info = {"supports_assistant_prefill": True}
    router = litellm.Router(
        model_list=[
            {"model_name": name, "litellm_params": params, "model_info": info}
            for name in ("primary", "backup")
        ],
        fallbacks=[{"primary": ["backup"]}],
        num_retries=0,
        enable_mid_stream_fallback_continuation=bool(spec["continuation"]),
    )
    return [await _trial(router, trial["mock"]) for trial in spec["trials"]]


def main() -> None:
    """Read the spec from stdin, print the results as JSON lines."""
    logging.disable(logging.WARNING)
    spec = json.load(sys.stdin)
    for result in asyncio.run(_run(spec)):
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
