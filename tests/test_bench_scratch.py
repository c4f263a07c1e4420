"""The benchmark's scratch folders: gone when the run ends, unless asked to keep them; a
server that does not start shows the end of its log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import ROOT, free_port, start_process

_MAKE = (
    "from bench.common import scratch_dir\n"
    "path = scratch_dir('rxllm-test-scratch-')\n"
    "(path / 'bench.db').write_bytes(b'x' * 1000)\n"
    "print(path, flush=True)\n"
)


def _run(keep: bool) -> tuple[Path, str]:
    env = {k: v for k, v in os.environ.items() if k != "RXLLM_BENCH_KEEP"}
    if keep:
        env["RXLLM_BENCH_KEEP"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", _MAKE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip()), done.stderr


def test_a_scratch_folder_is_removed_when_the_run_ends() -> None:
    path, _ = _run(keep=False)
    assert path.name.startswith("rxllm-test-scratch-")
    assert not path.exists()


def test_a_scratch_folder_is_kept_when_asked_and_its_path_printed() -> None:
    path, stderr = _run(keep=True)
    try:
        assert (path / "bench.db").stat().st_size == 1000
        assert f"kept: {path}" in stderr
    finally:
        for child in path.iterdir():
            child.unlink()
        path.rmdir()


def test_a_server_that_does_not_start_shows_the_end_of_its_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = [
        sys.executable,
        "-c",
        "print('no such upstream: bench-upstream'); raise SystemExit(3)",
    ]
    with pytest.raises(RuntimeError, match="exited with 3"):
        start_process(command, None, free_port(), tmp_path / "server.log", timeout=30)
    err = capsys.readouterr().err
    assert "did not start" in err
    assert "no such upstream: bench-upstream" in err
