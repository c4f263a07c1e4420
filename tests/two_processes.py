"""Two ``rxllm serve`` processes sharing PostgreSQL and Redis in front of one built-in model.

Fixtures for the multi-process tests: import ``upstream`` and ``pair`` into a
test module (with ``redis_server``) to use them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.apps.builtin_model import MockScript, MockServer
from tests.pg import PostgresServer
from tests.redis_server import RedisServer
from tests.serving import ServeProcess

__all__ = ["pair", "upstream"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockServer]:
    with MockServer(MockScript(), models=("mock-model",)) as server:
        yield server


@pytest.fixture(scope="module")
def pair(
    upstream: MockServer,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    """Processes ``a`` and ``b``: same database, same Redis, same upstream."""
    tmp = tmp_path_factory.mktemp("two-processes")
    db = postgres_server.create_database()
    common = ["--upstream", upstream.base_url, "--db", db, "--redis", redis_server.url]
    with (
        ServeProcess(*common, "--instance", "a", log_path=tmp / "a.log") as a,
        ServeProcess(*common, "--instance", "b", log_path=tmp / "b.log") as b,
    ):
        yield a, b
