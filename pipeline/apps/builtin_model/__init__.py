"""The built-in OpenAI-compatible model server ("the mock").

Tests, demos and benchmarks talk to it through the real ``openai`` SDK over
real HTTP on loopback; it is also the default upstream when no API key is
set. It streams scripted answers in the real wire shapes of Chat Completions
and the Responses API, injects faults on request, and records every request
and TCP connection::

    async with MockServer() as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test")
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True,
            extra_body={"mock": {"text": "Hello there", "drop_after": 1}},
        )

See :mod:`pipeline.apps.builtin_model.answer_script` for the script and fault fields.
"""

from __future__ import annotations

from pipeline.apps.builtin_model.answer_script import (
    MockScript,
    ToolCall,
    default_answer,
    split_tokens,
)
from pipeline.apps.builtin_model.model_app import DEFAULT_MODEL, MockState, create_app, mock_state
from pipeline.apps.builtin_model.model_server import (
    DEMO_TOKENS_PER_SECOND,
    MockServer,
    RecordingProtocol,
    protocol_for,
    serve,
)
from pipeline.apps.builtin_model.traffic_log import (
    ConnectionRecord,
    Outcome,
    Recorder,
    RecordingMiddleware,
    RequestRecord,
)

__all__ = [
    "DEFAULT_MODEL",
    "DEMO_TOKENS_PER_SECOND",
    "ConnectionRecord",
    "MockScript",
    "MockServer",
    "MockState",
    "Outcome",
    "Recorder",
    "RecordingMiddleware",
    "RecordingProtocol",
    "RequestRecord",
    "ToolCall",
    "create_app",
    "default_answer",
    "mock_state",
    "protocol_for",
    "serve",
    "split_tokens",
]
