"""A real, throwaway PostgreSQL server for the tests, and the ``db_url`` fixture.

``postgres_server`` (session scope) finds the server binaries (``initdb``,
``pg_ctl``, ``postgres``: ``$RXLLM_PG_BIN``, then ``PATH``, then Debian's
``/usr/lib/postgresql/<version>/bin``), runs ``initdb`` into a temporary
directory, starts the server on a free loopback port (as the ``postgres``
user, or ``nobody``, when run as root, which PostgreSQL refuses) and stops it
at the end of the session. Each test gets a database of its own from
:meth:`PostgresServer.create_database`.

Without the binaries the PostgreSQL tests are skipped with a loud reason,
except under CI (``$CI`` set), where they fail: CI must install them
(Debian: ``apt-get install -y postgresql``).

``db_url`` is parametrized over ``sqlite`` (a file in ``tmp_path``) and
``postgresql``, so each store test runs against both; the ``postgresql`` case
is marked ``services``, so ``pytest -m "not services"`` keeps the SQLite one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "db_url", "find_pg_bin", "postgres_server"]

BIN_ENV = "RXLLM_PG_BIN"
SUPERUSER = "rxllm"
NEEDED = ("initdb", "pg_ctl", "postgres")


def _has_binaries(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in NEEDED)


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def find_pg_bin() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or ``None``."""
    candidates: list[Path] = []
    if os.environ.get(BIN_ENV):
        candidates.append(Path(os.environ[BIN_ENV]))
    found = shutil.which("pg_ctl")
    if found:
        candidates.append(Path(found).resolve().parent)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    candidates.extend(debian)
    candidates.extend(Path(p) for p in ("/usr/local/pgsql/bin", "/usr/pgsql/bin"))
    for directory in candidates:
        if _has_binaries(directory):
            return directory
    return None


def _major_version(bin_dir: Path) -> int:
    """The major version of the server in ``bin_dir`` (``postgres --version``)."""
    done = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, timeout=60
    )
    found = re.search(r"(\d+)(?:\.\d+)?", done.stdout)
    return int(found.group(1)) if found else 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _unprivileged_user() -> str:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and found no 'postgres' or 'nobody' user to run as")


class PostgresServer:
    """A PostgreSQL server in a temporary directory, listening on 127.0.0.1:``port``."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.base = Path(tempfile.mkdtemp(prefix="rxllm-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = 0
        self.version = _major_version(bin_dir)
        self.user: str | None = None
        self._running = False
        if os.geteuid() == 0:
            self.user = _unprivileged_user()
            entry = pwd.getpwnam(self.user)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)

    def _server_command(self, args: Sequence[str]) -> list[str]:
        """``args`` run as the unprivileged user when we are root."""
        if self.user is None:
            return list(args)
        if shutil.which("runuser"):
            return ["runuser", "-u", self.user, "--", *args]
        return ["su", self.user, "-s", "/bin/sh", "-c", " ".join(map(_quote, args))]

    def _run(self, args: Sequence[str], *, as_server: bool = True, timeout: float = 120) -> None:
        command = self._server_command(args) if as_server else list(args)
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}):\n"
                f"{done.stdout}\n{done.stderr}\n{log}"
            )

    def start(self) -> None:
        """``initdb``, then ``pg_ctl start`` on a free port (three tries: ports race)."""
        bin_ = self.bin_dir
        self._run(
            [
                str(bin_ / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        error: Exception | None = None
        for _ in range(3):
            self.port = _free_port()
            try:
                self.start_server()
            except RuntimeError as exc:
                error = exc
                continue
            atexit.register(self.stop)
            return
        raise RuntimeError(f"could not start PostgreSQL: {error}")

    def start_server(self) -> None:
        """Start the server (already initialized) on ``self.port``; wait until it is up."""
        options = (
            f"-F -p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100 "
            "-c wal_level=minimal -c max_wal_senders=0"
        )
        pg_ctl = str(self.bin_dir / "pg_ctl")
        data, log = str(self.data), str(self.log)
        self._run([pg_ctl, "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start"])
        self._running = True

    def stop_server(self) -> None:
        """Stop the server, keeping its data (``start_server`` brings it back)."""
        if self._running:
            self._running = False
            pg_ctl = str(self.bin_dir / "pg_ctl")
            self._run([pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop_server()
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres", driver: str = "asyncpg") -> str:
        """A SQLAlchemy URL for ``database`` on this server."""
        return f"postgresql+{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """Create a fresh, empty database; return its ``postgresql+asyncpg://`` URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        createdb = self.bin_dir / "createdb"
        command = [str(createdb) if createdb.exists() else "createdb"]
        command += ["-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER]
        if self.version >= 15:  # a plain file copy: 4x faster for a small template
            command += ["-S", "file_copy"]
        self._run([*command, name], as_server=False, timeout=60)
        return self.url(name)


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\"'\"'") + "'"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL server for the session (skipped loudly, or failed under CI)."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        message = (
            "POSTGRESQL TESTS NOT RUN: no initdb/pg_ctl/postgres found "
            f"(install PostgreSQL, e.g. `apt-get install -y postgresql`, or set {BIN_ENV})"
        )
        if os.environ.get("CI"):
            pytest.fail(message + " -- CI is set, so this is a failure", pytrace=False)
        warnings.warn(message, stacklevel=1)
        pytest.skip(message)
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database URL: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()
