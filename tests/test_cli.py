"""The ``rxllm`` command: assemble a recording, chat with the built-in model."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.apps.cli import _assemble, main
from tests.fixtures import TEXT_STREAM, chunk, sse, tool


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    body = sse(
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [tool(0, '{"q": ', id="c1", name="search")]}),
        chunk({"tool_calls": [tool(0, '"rx"}')]}),
        chunk({}, finish="tool_calls"),
    )
    path = tmp_path / "tool.sse"
    path.write_bytes(body)
    return path


def test_assemble_prints_the_assembled_json(recording: Path) -> None:
    out = io.StringIO()
    assert _assemble(str(recording), False, out) == 0
    assert json.loads(out.getvalue()) == {
        "choices": [
            {
                "index": 0,
                "content": None,
                "refusal": None,
                "reasoning": None,
                "tool_calls": [{"id": "c1", "name": "search", "arguments": '{"q": "rx"}'}],
                "finish_reason": "tool_calls",
            }
        ],
        "usage": None,
        "error": None,
    }


def test_assemble_events_prints_one_event_per_line(tmp_path: Path) -> None:
    path = tmp_path / "text.sse"
    path.write_bytes(TEXT_STREAM)
    out = io.StringIO()
    assert _assemble(str(path), True, out) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["type"] == "started"
    assert lines[-1]["type"] == "finished"
    assert [line["seq"] for line in lines] == list(range(len(lines)))


def test_assemble_missing_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["assemble", str(tmp_path / "nope.sse")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.slow  # `rxllm chat` in a subprocess
def test_chat_streams_from_the_built_in_model() -> None:
    """The README's main job, end to end in a subprocess, with no API key."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.apps.cli", "chat", "What is rxllm?", "--mock-rate", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "What is rxllm?" in proc.stdout
    assert "time to first token" in proc.stdout
    assert "tokens/s" in proc.stdout
