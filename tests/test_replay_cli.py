"""``rxllm record`` and ``rxllm replay`` end to end, each in a subprocess."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.core.events import Event, Finished, Started, TextDelta
from pipeline.runtime.replay import load_jsonl, save_jsonl
from sinks.store import Store, StoreSettings
from sinks.store.recordings import import_recording
from tests.fixtures import TEXT_STREAM

pytestmark = pytest.mark.slow  # every test starts the CLI in a subprocess (a second of imports)

ENTRY = [sys.executable, "-m", "pipeline.apps.record_replay_cli"]


def environment(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"OPENAI_BASE_URL", "OPENAI_API_KEY", "RXLLM_DB_URL"}
    }
    env.update(extra)
    return env


def rxllm(
    *args: str, cwd: Path, env: dict[str, str] | None = None, entry: list[str] = ENTRY
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*entry, *args],
        cwd=cwd,
        env=env or environment(),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def paced(stream_id: str = "paced") -> list[Event]:
    """A recording with 0.6 s between its first and last words."""
    return [
        Started(stream_id=stream_id, seq=0, t=0.0),
        TextDelta(stream_id=stream_id, seq=1, t=0.0, text="first "),
        TextDelta(stream_id=stream_id, seq=2, t=0.3, text="middle "),
        TextDelta(stream_id=stream_id, seq=3, t=0.6, text="last"),
        Finished(stream_id=stream_id, seq=4, t=0.6, finish_reason="stop"),
    ]


def test_record_then_replay(tmp_path: Path) -> None:
    recorded = rxllm(
        "record", "Tell me about streams", "-o", "a.jsonl", "--mock-rate", "300", cwd=tmp_path
    )
    assert recorded.returncode == 0, recorded.stderr
    assert 'You asked: "Tell me about streams"' in recorded.stdout
    assert "finish stop" in recorded.stdout
    events = load_jsonl(tmp_path / "a.jsonl")
    assert f"recorded {len(events)} events to a.jsonl" in recorded.stderr
    assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
    assert [e.seq for e in events] == list(range(len(events)))
    assert events[-1].t > 0  # the timing is recorded

    replayed = rxllm("replay", "a.jsonl", "--speed", "inf", cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == recorded.stdout  # the same text and the same summary line


def test_record_names_its_file_when_no_output_is_given(tmp_path: Path) -> None:
    recorded = rxllm("record", "hi", "--mock-rate", "0", cwd=tmp_path)
    assert recorded.returncode == 0, recorded.stderr
    [path] = tmp_path.glob("recording-*.jsonl")
    assert load_jsonl(path)


def test_record_to_an_unwritable_path_fails_before_streaming(tmp_path: Path) -> None:
    result = rxllm("record", "hi", "-o", "missing/dir/a.jsonl", cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot write missing/dir/a.jsonl" in result.stderr
    assert result.stdout == ""


def test_replay_plays_the_text_at_its_original_pace(tmp_path: Path) -> None:
    save_jsonl(paced(), tmp_path / "paced.jsonl")
    launched = time.monotonic()
    process = subprocess.Popen(
        [*ENTRY, "replay", "paced.jsonl"],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    seen: dict[bytes, float] = {}
    output = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not selector.select(timeout=1):
                continue
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            output += chunk
            for word in (b"first", b"middle", b"last"):
                if word in output and word not in seen:
                    seen[word] = time.monotonic()
    assert process.wait(10) == 0
    assert output.startswith(b"first middle last\n")
    # Never early: "last" comes 0.6 s after the replay started, which is after Popen.
    assert seen[b"last"] - launched >= 0.6
    # "first" came well before it (0.6 s, less however late a busy machine printed "first").
    assert seen[b"last"] - seen[b"first"] >= 0.3


def test_replay_speed_factor(tmp_path: Path) -> None:
    save_jsonl(paced(), tmp_path / "paced.jsonl")
    started = time.monotonic()
    result = rxllm("replay", "paced.jsonl", "--speed", "0.25", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 2.4  # 0.6 s at a quarter of the speed


async def test_replay_a_stored_stream_by_id(tmp_path: Path) -> None:
    save_jsonl(paced(), tmp_path / "paced.jsonl")
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    async with Store(url, settings=StoreSettings(owner="test")) as store:
        stream_id = await import_recording(store, tmp_path / "paced.jsonl")

    by_flag = rxllm("replay", stream_id, "--db", url, "--speed", "inf", cwd=tmp_path)
    assert by_flag.returncode == 0, by_flag.stderr
    assert by_flag.stdout.startswith("first middle last\n")

    by_env = rxllm(
        "replay", stream_id, "--speed", "100", cwd=tmp_path, env=environment(RXLLM_DB_URL=url)
    )
    assert by_env.returncode == 0, by_env.stderr
    assert by_env.stdout == by_flag.stdout

    unknown = rxllm("replay", "no-such-id", "--db", url, cwd=tmp_path)
    assert unknown.returncode == 2
    assert "no stored stream 'no-such-id'" in unknown.stderr


def test_replay_by_id_without_a_store_says_so_and_creates_none(tmp_path: Path) -> None:
    result = rxllm("replay", "some-id", cwd=tmp_path)
    assert result.returncode == 2
    assert "no transcript store at rxllm.db" in result.stderr
    assert not (tmp_path / "rxllm.db").exists()


def test_replay_a_raw_sse_body(tmp_path: Path) -> None:
    (tmp_path / "raw.sse").write_bytes(TEXT_STREAM)
    result = rxllm("replay", "raw.sse", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Hello, world\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "missing.jsonl"], "no such file: missing.jsonl"),
        (["replay", "bad.jsonl"], "bad.jsonl:2: not an rxllm event"),
        (["replay", "paced.jsonl", "--speed", "0"], "the speed must be > 0"),
        (["replay", "paced.jsonl", "--speed", "fast"], "not a number"),
    ],
)
def test_replay_errors(tmp_path: Path, args: list[str], message: str) -> None:
    save_jsonl(paced(), tmp_path / "paced.jsonl")
    first_line = (tmp_path / "paced.jsonl").read_text().splitlines()[0]
    (tmp_path / "bad.jsonl").write_text(first_line + "\n{}\n")
    result = rxllm(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr


def test_a_replayed_error_stream_exits_1(tmp_path: Path) -> None:
    events = paced()[:3]  # no terminal event: the stream ends with a connection error
    save_jsonl(events, tmp_path / "cut.jsonl")
    result = rxllm("replay", "cut.jsonl", "--speed", "inf", cwd=tmp_path)
    assert result.returncode == 1
    assert "[error: connection: stream ended without a terminal event]" in result.stdout


def test_the_rxllm_command_has_record_and_replay_once_wired(tmp_path: Path) -> None:
    entry = [sys.executable, "-m", "pipeline.apps.cli"]
    if rxllm("replay", "--help", cwd=tmp_path, entry=entry).returncode != 0:
        pytest.skip("pipeline.apps.cli does not call replay_cli.add_commands yet")
    save_jsonl(paced(), tmp_path / "paced.jsonl")
    result = rxllm("replay", "paced.jsonl", "--speed", "inf", cwd=tmp_path, entry=entry)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("first middle last\n")
