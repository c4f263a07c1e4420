"""Which API each upstream is called with, and the body it gets, for one request.

A request arrives in one API (``chat``, ``responses``, ``anthropic``: the
route's). :func:`plan_calls` decides, before any upstream is called, how each
upstream of the failover list takes it: in the same API when the upstream
speaks it (the body goes as it is, fields rxllm does not know included), else
translated (:mod:`pipeline.runtime.translate`). An upstream no translation
reaches, or that cannot carry a field of this request, is left out of this
request's list; when none is left, the first reason is the answer (a 400
naming the field). :func:`attempt_source` makes each failover attempt's
source from the plan.

Example::

    plan = plan_calls(upstreams, "anthropic", body)      # UntranslatableError if none can
    events = failover(plan.upstreams, {"model": body["model"]},
                      attempt_source=attempt_source(plan))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reactivex import Observable

from operators.extract_deltas import RawChunk
from pipeline.core.errors import UntranslatableError
from pipeline.runtime import sources
from pipeline.runtime.translate import translate_request, upstream_api
from pipeline.runtime.upstreams import Upstream

__all__ = ["Plan", "UpstreamCall", "attempt_source", "plan_calls", "tools_for"]


@dataclass(frozen=True)
class UpstreamCall:
    """How one upstream is called: in which API, with which body (model not yet mapped)."""

    api: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """The upstreams that can take a request, in order, and how each is called."""

    api: str
    upstreams: tuple[Upstream, ...]
    calls: Mapping[str, UpstreamCall]

    @property
    def native(self) -> bool:
        """Whether every upstream takes the request in its own API (nothing translated)."""
        return all(call.api == self.api for call in self.calls.values())


def plan_calls(upstreams: Sequence[Upstream], api: str, body: dict[str, Any]) -> Plan:
    """Decide how each upstream takes ``body``, a request of ``api``.

    Errors: :class:`UntranslatableError` (the first upstream's reason) when no
    upstream can take it.
    """
    kept: list[Upstream] = []
    calls: dict[str, UpstreamCall] = {}
    first: UntranslatableError | None = None
    for upstream in upstreams:
        target = upstream_api(api, upstream.apis)
        try:
            if target is None:
                raise UntranslatableError(
                    "(request)",
                    f"is a {api} request and the upstream {upstream.name!r} speaks only "
                    f"{', '.join(upstream.apis)}",
                )
            call_body = translate_request(body, api, target)
        except UntranslatableError as exc:
            first = first or exc
            continue
        if target == "chat" and call_body.get("stream_options") is None:
            call_body = {**call_body, "stream_options": {"include_usage": True}}
        kept.append(upstream)
        calls[upstream.name] = UpstreamCall(target, call_body)
    if not kept:
        assert first is not None
        raise first
    return Plan(api, tuple(kept), calls)


_SOURCES: dict[str, Callable[[Upstream, str | None, dict[str, Any]], Observable[Any]]] = {
    "chat": lambda u, key, body: sources.chat_completions(u.client(key), **body),
    "responses": lambda u, key, body: sources.responses(u.client(key), **body),
    "anthropic": lambda u, key, body: sources.anthropic_messages(u.anthropic_client(key), **body),
}


def attempt_source(plan: Plan) -> Callable[[Upstream, str | None], Observable[RawChunk]]:
    """The failover hook that makes an attempt's source on an upstream, as ``plan`` says."""

    def make(upstream: Upstream, key: str | None) -> Observable[RawChunk]:
        call = plan.calls[upstream.name]
        body = dict(call.body)
        if "model" in body:
            body["model"] = upstream.model_for(body["model"])
        source: Observable[RawChunk] = _SOURCES[call.api](upstream, key, body)
        return source

    return make


def tools_for(api: str, body: Mapping[str, Any]) -> Any:
    """The request's tools as :func:`operators.assemble_tool_calls` validates them.

    Chat Completions and Responses tools as they are; Anthropic's as name ->
    ``input_schema`` (its server tools have no arguments to check).
    """
    tools = body.get("tools")
    if api != "anthropic" or not isinstance(tools, list):
        return tools
    return {
        tool["name"]: tool["input_schema"]
        for tool in tools
        if isinstance(tool, dict) and "input_schema" in tool and isinstance(tool.get("name"), str)
    } or None
