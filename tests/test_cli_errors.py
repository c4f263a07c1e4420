"""The ``rxllm`` command's rough edges, as a new user meets them, each in a subprocess.

Every mistake is one line on stderr (what was wrong, what to do), never a
traceback, and a non-zero exit status; the help says what the commands and
their defaults are. What needs no process of its own runs ``main()`` here.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pipeline.apps.builtin_model import MockServer
from pipeline.apps.cli import _parser, main
from pipeline.apps.server.server_settings import ServerSettings
from pipeline.runtime.replay import save_jsonl
from sinks.store import Store, StoreSettings
from sinks.store.recordings import import_recording
from tests.fixtures import chunk, sse
from tests.serving import ROOT, ServeProcess, free_port
from tests.test_replay_cli import environment, paced

CLI = [sys.executable, "-m", "pipeline.apps.cli"]


def rxllm(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        env=environment(**(env or {})),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def one_line_error(result: subprocess.CompletedProcess[str], status: int, *words: str) -> None:
    assert result.returncode == status, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """``main(args)`` here, for what needs no process of its own: its status and output."""
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "RXLLM_UPSTREAM", "RXLLM_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "400")  # help text unwrapped: words not cut at hyphens
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        status = main(list(args))
    except SystemExit as exit_:  # --help
        status = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), status, out, err)


@pytest.mark.slow  # a process of its own
def test_chat_with_a_base_url_and_no_key_talks_to_that_server() -> None:
    with MockServer() as server:
        result = rxllm("chat", "hi", env={"OPENAI_BASE_URL": server.base_url})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert '"hi"' in result.stdout  # the built-in model quoted the prompt
    assert server.recorder.last_request.headers.get("content-type") == "application/json"


@pytest.mark.slow  # a process of its own
def test_chat_to_a_server_that_is_not_there_is_one_error_line() -> None:
    result = rxllm("chat", "hi", env={"OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert "[error: connection:" in result.stdout


@pytest.mark.slow  # a process of its own
def test_serve_on_a_busy_port_says_so() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = rxllm("serve", "--port", str(port), "--no-store")
    one_line_error(result, 2, f"cannot listen on 127.0.0.1:{port}", "in use", "--port")


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["--upstream", "not-a-url"], {}, ["http(s) base URL", "'not-a-url'"]),
        ([], {"OPENAI_BASE_URL": "localhost:8000"}, ["http(s) base URL", "'localhost:8000'"]),
        (["--config", "missing.toml"], {}, ["cannot read the config file missing.toml"]),
    ],
)
def test_serve_refuses_a_bad_upstream_at_start_up(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    words: list[str],
) -> None:
    result = in_process(capsys, monkeypatch, "serve", "--no-store", *args, **env)
    one_line_error(result, 2, *words)


@pytest.mark.slow  # a process of its own
def test_replay_takes_a_path_for_db(tmp_path: Path) -> None:
    save_jsonl(paced(), tmp_path / "paced.jsonl")
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"

    async def store_it() -> str:
        async with Store(url, settings=StoreSettings(owner="test")) as store:
            return await import_recording(store, tmp_path / "paced.jsonl")

    import asyncio

    stream_id = asyncio.run(store_it())
    for db in ("./store.db", str(tmp_path / "store.db")):
        result = rxllm("replay", stream_id, "--db", db, "--speed", "inf", cwd=tmp_path)
        assert result.returncode == 0, (db, result.stderr)
        assert result.stdout.startswith("first middle last\n")
    missing = rxllm("replay", stream_id, "--db", "./nothing.db", cwd=tmp_path)
    one_line_error(missing, 2, "no transcript store at")


def test_assemble_on_a_file_that_is_not_sse(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some text\n")
    result = in_process(capsys, monkeypatch, "assemble", str(path))
    one_line_error(result, 2, "no server-sent events", "notes.txt")


def test_assemble_of_a_stream_that_ended_in_an_error_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "error.sse"
    error = {"error": {"message": "Overloaded", "type": "server_error", "code": "overloaded"}}
    path.write_bytes(sse(chunk({"content": "Hi"}), error, done=False))
    result = in_process(capsys, monkeypatch, "assemble", str(path))
    assert result.returncode == 1
    assembled = json.loads(result.stdout)
    assert assembled["choices"][0]["content"] == "Hi"  # what arrived is kept
    assert assembled["error"]["message"] == "Overloaded"


@pytest.mark.slow  # a process of its own
def test_assemble_into_a_pipe_closed_early_is_quiet(tmp_path: Path) -> None:
    path = tmp_path / "long.sse"
    path.write_bytes(sse(*(chunk({"content": f"w{i} "}) for i in range(20_000))))
    proc = subprocess.Popen(
        [*CLI, "assemble", "--events", str(path)],
        cwd=ROOT,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert json.loads(proc.stdout.readline())["type"] == "started"
    proc.stdout.close()  # what `| head -1` does
    stderr = proc.stderr.read().decode()
    proc.wait(60)
    proc.stderr.close()
    assert stderr == ""


@pytest.mark.slow  # a process of its own
def test_chat_through_serve_shows_the_real_time_to_first_token(tmp_path: Path) -> None:
    # The built-in model behind serve thinks 0.2 s before its first token; serve holds
    # its response's headers until then, so a client timing from the headers saw ~0 ms.
    with ServeProcess("--no-store", "--mock-rate", "0", log_path=tmp_path / "s.log") as proc:
        result = rxllm("chat", "hi", env={"OPENAI_BASE_URL": proc.base_url})
    assert result.returncode == 0, result.stderr
    match = re.search(r"time to first token (\d+) ms", result.stdout)
    assert match, result.stdout
    assert int(match[1]) >= 150


@pytest.mark.slow  # a process of its own
def test_serve_prints_its_start_and_stop_lines_once(tmp_path: Path) -> None:
    proc = ServeProcess("--no-store", log_path=tmp_path / "s.log")
    with proc:
        pass
    log = proc.log()
    assert log.count("rxllm serve: http://") == 1
    assert log.count("Started server process") == 1, log
    assert log.count("Finished server process") == 1, log


@pytest.mark.slow  # a process of its own
def test_serve_listens_before_it_prints_its_banner(tmp_path: Path) -> None:
    # A client that connects the moment the banner appears (a script waiting for it) was
    # refused: the socket listened only once start-up (the store opened) was done.
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), "--db", f"sqlite:///{tmp_path / 'rxllm.db'}"],
        cwd=ROOT,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    try:
        banner = proc.stdout.readline().decode()
        assert banner.startswith(f"rxllm serve: http://127.0.0.1:{port}/"), banner
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            client.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            answer = b""
            while chunk_ := client.recv(65536):
                answer += chunk_
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def test_the_help_says_what_rxllm_is_and_serve_shows_its_defaults(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    top = in_process(capsys, monkeypatch, "--help").stdout
    assert "``" not in top and "The rxllm command" not in top
    assert "reactive streams" in top.splitlines()[2]
    for command in ("chat", "assemble", "serve", "record", "replay", "mock"):
        assert command in top
    serve = " ".join(in_process(capsys, monkeypatch, "serve", "--help").stdout.split())
    defaults = ServerSettings()
    for default in (
        f"default: {defaults.port}",
        f"default: {defaults.host}",
        f"default: {defaults.heartbeat:g}",
        f"default: {defaults.replay_size}",
        f"default: {defaults.mock_tokens_per_second:g}",
        "default: the built-in model",
        "default: ./rxllm.db",
        "default: info",
    ):
        assert default in serve, default


def test_every_command_names_the_token_rate_flag_alike() -> None:
    parser = _parser()
    for argv in (["chat", "hi"], ["serve"], ["mock"], ["record", "hi"]):
        assert parser.parse_args([*argv, "--mock-rate", "5"]).mock_rate == 5.0
    assert parser.parse_args(["mock", "--token-rate", "7"]).mock_rate == 7.0  # the old name


def test_the_package_metadata_has_an_spdx_license() -> None:
    # A TOML table here makes setuptools warn on every install.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
