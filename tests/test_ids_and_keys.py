"""Stream ids are minted in one place; API keys come from the environment through one module."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.apps.server.server_settings import ServerSettings
from pipeline.core.ids import new_stream_id
from pipeline.runtime.api_keys import NO_KEY, api_key, client_key, keys_from, upstream_in_env
from pipeline.runtime.sources import sse_body
from pipeline.runtime.standard_chain import llm_stream
from pipeline.runtime.upstreams import UpstreamConfig
from tests.fixtures import TEXT_STREAM

ROOT = Path(__file__).resolve().parent.parent


def test_a_stream_id_is_32_hex_digits_and_new_each_time() -> None:
    ids = {new_stream_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_a_stream_without_an_id_gets_a_minted_one() -> None:
    events: list[str] = []
    llm_stream(sse_body(TEXT_STREAM)).subscribe(lambda e: events.append(e.stream_id))
    assert len(set(events)) == 1 and re.fullmatch(r"[0-9a-f]{32}", events[0])


def test_keys_resolve_from_the_variables_in_order() -> None:
    env = {"OPENAI_API_KEY": "sk-o", "RXLLM_UPSTREAM_API_KEY": "", "POOL": "k1, k2\nk3"}
    assert api_key(env=env) == "sk-o"
    assert api_key("RXLLM_UPSTREAM_API_KEY", "OPENAI_API_KEY", env=env) == "sk-o"  # "" is unset
    assert api_key("MISSING", env=env) is None
    assert keys_from("POOL", env) == ["k1", "k2", "k3"] and keys_from("MISSING", env) == []
    assert client_key("sk-given", env) == "sk-given"
    assert client_key(None, env) == "sk-o" and client_key(None, {}) == NO_KEY
    assert upstream_in_env({"OPENAI_BASE_URL": "http://h/v1"}) and not upstream_in_env({})


def test_the_server_and_config_files_read_keys_through_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("RXLLM_UPSTREAM_API_KEY", "sk-serve")
    monkeypatch.setenv("MY_KEYS", "sk-1,sk-2")
    assert ServerSettings.from_env().api_key == "sk-serve"
    monkeypatch.delenv("RXLLM_UPSTREAM_API_KEY")
    assert ServerSettings.from_env().api_key == "sk-openai"
    assert UpstreamConfig(name="a", api_key_env="MY_KEYS").keys() == ["sk-1", "sk-2"]


def test_no_other_module_reads_an_api_key_variable() -> None:
    """One place resolves API keys: a new reader of OPENAI_API_KEY & co. goes through it."""
    reads = re.compile(r"(?:\.get|getenv|environ)\s*[\[(]\s*['\"][A-Z_]*API_KEY")
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("pipeline", "operators", "sinks")
        for path in (ROOT / package).rglob("*.py")
        if reads.search(path.read_text("utf-8")) and path.name != "api_keys.py"
    ]
    assert offenders == []
