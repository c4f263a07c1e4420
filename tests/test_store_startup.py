"""The transcript store fails loudly and early: a read-only database stops the start.

Regression test: a read-only database was accepted at start-up with only
retry warnings; every transcript was then lost, and SIGTERM took 30 s.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sinks.store import Store
from tests.serving import ROOT, free_port

pytestmark = pytest.mark.slow  # starts rxllm serve


async def _migrated(url: str) -> None:
    store = Store(url)
    await store.open()
    await store.close()


@pytest.mark.parametrize("schema", [False, True], ids=["empty", "migrated"])
def test_serve_refuses_to_start_on_a_read_only_database(tmp_path: Path, schema: bool) -> None:
    path = tmp_path / "t.db"
    sqlite3.connect(path).close()  # exists, empty: the schema would have to be written
    if schema:  # reads work, nothing to migrate: only a write finds out
        asyncio.run(_migrated(f"sqlite+aiosqlite:///{path}"))
    url = f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.apps.cli",
            "serve",
            "--port",
            str(free_port()),
            "--db",
            url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "database is read-only" in output
    assert "--no-store" in output
