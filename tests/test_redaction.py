"""The one redaction module: free text, URLs, request values and parameter names."""

from __future__ import annotations

import pytest

from pipeline.apps.server.request_bodies import ChatRequest
from pipeline.core.error_info import scrub
from pipeline.core.redaction import (
    SECRET_NAMES,
    is_secret_name,
    redact_text,
    redact_url,
    redact_value,
)
from pipeline.runtime.upstreams import Upstream
from sinks.store import scrub_request

KEY = "sk-live-SECRET123456"


@pytest.mark.parametrize(
    "text",
    [
        f"Incorrect API key provided: {KEY}.",
        f"Authorization: Bearer {KEY}",
        f"{{'api-key': '{KEY}'}}",
        f"GET https://x.example/v1/models?key={KEY}&alt=sse",
        f"cannot connect to https://user:{KEY}@x.example/v1",
    ],
)
def test_text_loses_every_secret_it_names(text: str) -> None:
    redacted = redact_text(text)
    assert "SECRET" not in redacted and "***" in redacted


def test_a_password_holding_an_at_sign_is_masked_whole() -> None:
    assert redact_url("https://user:p@ss@example.invalid/v1") == "https://***@example.invalid/v1"
    assert redact_url("https://h/v1?x=1&sig=abc#top") == "https://h/v1?x=1&sig=***#top"


def test_urls_without_secrets_are_unchanged() -> None:
    for url in ("https://api.example/v1", "https://h/p?email=a@b.example&x=1", "no url at all"):
        assert redact_url(url) == url


def test_values_lose_secret_names_at_any_depth_and_keep_contents() -> None:
    value = {
        "messages": [{"role": "user", "content": "my api_key is in here"}],
        "extra_body": {"provider": {"API-Key": KEY, "order": ["a"]}},
        "Authorization": f"Bearer {KEY}",
        "base_url": f"https://u:{KEY}@h/v1?token={KEY}",
        "client": object(),
        "callback": object(),
    }
    assert redact_value(value) == {
        "messages": [{"role": "user", "content": "my api_key is in here"}],
        "extra_body": {"provider": {"order": ["a"]}},
        "base_url": "https://***@h/v1?token=***",
        "callback": "<object>",
    }


def test_names_compare_lowercase_with_dashes_as_underscores() -> None:
    assert is_secret_name("X-API-Key") and is_secret_name("authorization")
    assert not is_secret_name("model") and not is_secret_name("messages")
    assert "api_key" in SECRET_NAMES


def test_every_user_of_redaction_uses_the_one_list() -> None:
    """The error messages, the store, the server's upstream request and an upstream's repr."""
    assert "SECRET" not in scrub(f"HTTP 401: key {KEY} at https://u:{KEY}@h")
    request = scrub_request({"model": "m", "headers": {"x": KEY}, "X-Api-Key": KEY})
    assert request == {"model": "m"}
    body = ChatRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "Api-Key": KEY, "top_k": 2}
    )
    assert body.upstream_params() == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "top_k": 2,
    }
    assert "SECRET" not in repr(Upstream("a", base_url=f"https://u:{KEY}@h/v1?key={KEY}"))
