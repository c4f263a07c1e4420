"""``GET /v1/models``: the models of the configured upstreams, asked from them and cached.

Each upstream is asked for its ``/models`` (with its own key; a pool lends
one), all at once, each within ``timeout`` seconds; the list is kept for
``ttl`` seconds (an upstream that did not answer is asked again after
``retry_after`` seconds instead). Added to it: the model names the config
maps (``models = { fast = "gpt-4o-mini" }``: ``fast``) and the server's
default model. Every entry has the fields the SDKs read: ``id``,
``object: "model"``, ``created`` (the upstream's, else the time the list was
made) and ``owned_by`` (the upstream's, else the upstream's name). The list
is empty only when no upstream answers and nothing is configured.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.core.error_info import classify
from pipeline.runtime.key_pool import Lease, NoKeyAvailable
from pipeline.runtime.upstreams import Upstream

__all__ = ["ModelList"]

log = logging.getLogger(__name__)


class ModelList:
    """The models of ``upstreams`` plus ``default``, for ``GET /v1/models``."""

    def __init__(
        self,
        upstreams: Sequence[Upstream],
        *,
        default: str | None = None,
        ttl: float = 300.0,
        retry_after: float = 10.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstreams = tuple(upstreams)
        self.default = default
        self.ttl = ttl
        self.retry_after = retry_after
        self.timeout = timeout
        self.clock = clock
        self._cached: list[dict[str, Any]] | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def data(self) -> list[dict[str, Any]]:
        """The ``data`` of the list (cached; concurrent callers share one round of asking)."""
        async with self._lock:
            if self._cached is None or self.clock() >= self._expires:
                answers = await asyncio.gather(*(self._ask(u) for u in self.upstreams))
                complete = all(a is not None for a in answers)
                self._cached = self._merge(answers)
                self._expires = self.clock() + (self.ttl if complete else self.retry_after)
            return list(self._cached)

    async def _ask(self, upstream: Upstream) -> list[dict[str, Any]] | None:
        """The upstream's models; ``None`` when it could not say (logged)."""
        lease: Lease | None = None
        key = upstream.key
        pool = upstream.pool
        try:
            if pool is not None:
                lease = pool.acquire()
                key = lease.key
            if "chat" not in upstream.apis and "responses" not in upstream.apis:
                # Anthropic's own list (GET /v1/models with x-api-key), in OpenAI's words
                listed = await upstream.anthropic_client(key).models.list(timeout=self.timeout)
                return [
                    {
                        "id": item.id,
                        "created": int(item.created_at.timestamp()),
                        "owned_by": "anthropic",
                    }
                    for item in listed.data
                ]
            page = await upstream.client(key).models.list(timeout=self.timeout)
            return [item.model_dump() for item in page.data]
        except NoKeyAvailable as exc:
            log.info("models of upstream %s not asked: %s", upstream.name, exc)
        except Exception as exc:
            info = classify(exc)
            log.warning("upstream %s did not list its models: %s", upstream.name, info.message)
        finally:
            if lease is not None:
                lease.release()
        return None

    def _merge(self, answers: Sequence[list[dict[str, Any]] | None]) -> list[dict[str, Any]]:
        made = int(time.time())
        out: dict[str, dict[str, Any]] = {}

        def add(model_id: Any, created: Any, owned_by: Any) -> None:
            if isinstance(model_id, str) and model_id and model_id not in out:
                out[model_id] = {
                    "id": model_id,
                    "object": "model",
                    "created": created if isinstance(created, int) else made,
                    "owned_by": owned_by if isinstance(owned_by, str) and owned_by else "rxllm",
                }

        for upstream, models in zip(self.upstreams, answers, strict=True):
            created_of = {}
            for item in models or ():
                add(item.get("id"), item.get("created"), item.get("owned_by") or upstream.name)
                created_of[item.get("id")] = item.get("created")
            for alias, target in upstream.models.items():
                if alias != "*":
                    add(alias, created_of.get(target), upstream.name)
        if self.default is not None:
            add(self.default, None, "rxllm")
        return sorted(out.values(), key=lambda m: m["id"])
