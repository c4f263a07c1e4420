"""Shared fixtures, and the ``services`` marker kept true.

A test that needs a server or tool the suite starts itself (PostgreSQL,
Redis, nginx, Chromium, node) is marked ``services`` (module level:
``pytestmark = pytest.mark.services``), so ``pytest -m "not services"``
runs everything else without them. A test that takes the PostgreSQL or
Redis fixture is marked here as well, so one that forgets can't slip into
the fast subset.
"""

from collections.abc import Iterator

import pytest

from pipeline.apps.builtin_model import MockServer
from tests.pg import db_url as db_url
from tests.pg import postgres_server as postgres_server

SERVICE_FIXTURES = frozenset({"postgres_server", "redis_server"})


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockServer]:
    """The built-in model as the upstream of a module's ``rxllm serve`` processes."""
    with MockServer() as server:
        yield server
