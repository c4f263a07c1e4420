"""Every malformed request is a 4xx JSON error naming the problem, before any upstream call.

Regression tests for inputs that were answered with a 500 and a traceback
(deep JSON, a non-string text part, a huge ``?q=``, ``?offset=`` past 2^63,
a malformed ``Last-Event-ID`` / ``?after=`` / ``expires``) or as an upstream
failure a client would retry (502/504 for NaN, bad tools, wrongly typed
request options, a lone surrogate, an infinite timeout header), or taken
silently (``?limit=-1``, ``"stream": "yes"``), and for request options that
changed the gateway's own upstream call (``timeout``, ``extra_query``).
The upstream is the built-in model in this process: it counts what it was asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.apps.builtin_model import MockScript, MockServer
from tests.serving import ServeProcess

pytestmark = pytest.mark.slow  # starts rxllm serve

MESSAGES = [{"role": "user", "content": "hi"}]
UI = [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]
TOKEN = "bad-input-token"


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockServer]:
    with MockServer(MockScript(text="fine")) as server:
        yield server


@pytest.fixture(scope="module")
def served(
    upstream: MockServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("bad")
    db = f"sqlite+aiosqlite:///{tmp / 'transcripts.db'}"
    with ServeProcess("--upstream", upstream.base_url, "--db", db, log_path=tmp / "s.log") as proc:
        with httpx.Client(base_url=proc.url, timeout=10) as http:  # a stored transcript
            answer = http.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES})
            assert answer.status_code == 200
        yield proc


def chat(**fields: Any) -> dict[str, Any]:
    return {"json": {"model": "m", "messages": MESSAGES, **fields}}


def raw(text: str) -> dict[str, Any]:
    return {"content": text.encode(), "headers": {"content-type": "application/json"}}


DEEP = '{"model": "m", "messages": [{"role": "user", "content": "hi"}], "x": ' + "[" * 1000
DEEP += "]" * 1000 + "}"
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}

CASES: list[tuple[str, str, str, dict[str, Any], int, str | None]] = [
    # (id, method, path, request arguments, status, the param named)
    ("deep-json", "POST", "/v1/chat/completions", raw(DEEP), 400, None),
    ("deep-json-streams", "POST", "/v1/streams", raw(DEEP), 400, None),
    ("deep-json-ui", "POST", "/api/chat", raw(DEEP), 400, None),
    (
        "text-part-not-a-string-ui",
        "POST",
        "/api/chat",
        {
            "json": {
                "model": "m",
                "messages": [{"role": "user", "parts": [{"type": "text", "text": 5}]}],
            }
        },
        400,
        "messages",
    ),
    (
        "text-part-not-a-string-streams",
        "POST",
        "/v1/streams",
        {
            "json": {
                "model": "m",
                "messages": [{"role": "user", "parts": [{"type": "text", "text": {}}]}],
            }
        },
        400,
        "messages",
    ),
    ("huge-q", "GET", "/v1/transcripts?q=" + "a" * 60_000, {}, 400, "q"),
    ("offset-past-2**63", "GET", f"/v1/transcripts?offset={2**63}", {}, 400, "offset"),
    ("offset-superscript", "GET", "/v1/transcripts?offset=%C2%B2", {}, 400, "offset"),
    ("limit-negative", "GET", "/v1/transcripts?limit=-1", {}, 400, "limit"),
    ("status-bogus", "GET", "/v1/transcripts?status=bogus", {}, 400, "status"),
    ("after-30-digits", "GET", "/v1/streams/x/events?after=" + "9" * 30, {}, 400, "after"),
    ("after-superscript", "GET", "/v1/streams/x/events?after=%C2%B2", {}, 400, "after"),
    (
        "last-event-id-30-digits",
        "GET",
        "/v1/streams/x/events",
        {"headers": {"last-event-id": "9" * 30}},
        400,
        "Last-Event-ID",
    ),
    (
        "last-event-id-not-digits",
        "GET",
        "/v1/streams/x/events",
        {"headers": {"last-event-id": "12a"}},
        400,
        "Last-Event-ID",
    ),
    (
        "huge-number",
        "POST",
        "/v1/chat/completions",
        raw(DEEP[:62] + ', "top_p": 1e999}'),
        400,
        None,
    ),
    ("nan", "POST", "/v1/chat/completions", raw(DEEP[:62] + ', "temperature": NaN}'), 400, None),
    (
        "infinity",
        "POST",
        "/v1/chat/completions",
        raw(DEEP[:62] + ', "temperature": -Infinity}'),
        400,
        None,
    ),
    (
        "tool-without-name",
        "POST",
        "/v1/chat/completions",
        chat(tools=[{"type": "function", "function": {"parameters": {}}}]),
        400,
        "tools",
    ),
    (
        "tool-parameters-not-an-object",
        "POST",
        "/v1/chat/completions",
        chat(tools=[{"type": "function", "function": {"name": "f", "parameters": 5}}]),
        400,
        "tools",
    ),
    (
        "tool-function-not-an-object",
        "POST",
        "/v1/chat/completions",
        chat(tools=[{"type": "function", "function": "f"}]),
        400,
        "tools",
    ),
    (
        "tool-invalid-schema",
        "POST",
        "/v1/chat/completions",
        chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": 7}}}]),
        400,
        "tools",
    ),
    ("timeout-wrong-type", "POST", "/v1/chat/completions", chat(timeout="x"), 400, "timeout"),
    ("timeout-negative", "POST", "/v1/chat/completions", chat(timeout=-1), 400, "timeout"),
    ("extra-body-list", "POST", "/v1/chat/completions", chat(extra_body=[1]), 400, "extra_body"),
    (
        "extra-query",
        "POST",
        "/v1/chat/completions",
        chat(extra_query={"api-version": "evil"}),
        400,
        "extra_query",
    ),
    ("extra-query-str", "POST", "/v1/streams", chat(extra_query="x"), 400, "extra_query"),
    (
        "lone-surrogate",
        "POST",
        "/v1/chat/completions",
        raw('{"model": "m", "messages": [{"role": "user", "content": "a\\ud800b"}]}'),
        400,
        None,
    ),
    (
        "timeout-header-inf",
        "POST",
        "/v1/chat/completions",
        {**chat(), "headers": {"x-rxllm-total-timeout": "inf"}},
        400,
        "x-rxllm-total-timeout",
    ),
    ("stream-yes", "POST", "/v1/chat/completions", chat(stream="yes"), 400, "stream"),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "param"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_a_malformed_request_is_a_4xx_json_error_before_any_upstream_call(
    served: ServeProcess,
    upstream: MockServer,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    param: str | None,
) -> None:
    before = len(upstream.recorder.requests)
    with httpx.Client(base_url=served.url, timeout=10) as http:
        response = http.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert error["message"] and "Traceback" not in error["message"]
        assert len(error["message"]) < 400  # says the problem; dumps no schema or body
        if param is not None:
            assert error["param"] is not None and error["param"].startswith(param)
        assert http.get("/v1/models").status_code == 200  # it keeps serving
    assert len(upstream.recorder.requests) == before


def test_n_beyond_the_limit_is_a_400_from_the_built_in_model(served: ServeProcess) -> None:
    with httpx.Client(base_url=served.url, timeout=10) as http:
        response = http.post("/v1/chat/completions", **chat(n=1000))
    assert response.status_code == 400
    assert "'n'" in response.json()["error"]["message"]


def test_request_options_pass_when_the_operator_allows_them(
    upstream: MockServer, tmp_path: Path
) -> None:
    args = ["--upstream", upstream.base_url, "--no-store", "--allow-request-options"]
    with (
        ServeProcess(*args, log_path=tmp_path / "s.log") as proc,
        httpx.Client(base_url=proc.url, timeout=10) as http,
    ):
        ok = http.post("/v1/chat/completions", **chat(extra_query={"v": "1"}, timeout=20))
        assert ok.status_code == 200, ok.text
        assert upstream.recorder.last_request.path.endswith("/chat/completions")
        for value in ("1e999", '"20"', "0", "true"):
            body = '{"model": "m", "messages": [{"role": "user", "content": "hi"}], "timeout": '
            bad = http.post("/v1/chat/completions", **raw(body + value + "}"))
            assert bad.status_code == 400, value


@pytest.mark.parametrize("expires", ["²", "9" * 40, "-1", "1e9", ""])
def test_a_malformed_capability_expiry_is_a_401_not_a_500(tmp_path: Path, expires: str) -> None:
    with ServeProcess("--auth-token", TOKEN, "--no-store", log_path=tmp_path / "s.log") as proc:
        with httpx.Client(base_url=proc.url, timeout=10) as http:
            response = http.get(
                "/v1/streams/x/events", params={"access": "0" * 64, "expires": expires}
            )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert "Traceback" not in proc.log()


def test_no_traceback_in_the_log(served: ServeProcess) -> None:
    assert "Traceback" not in served.log()
