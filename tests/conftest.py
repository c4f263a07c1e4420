"""Shared fixtures, and the ``services`` and ``slow`` markers kept true.

A test that needs a server or tool the suite starts itself (PostgreSQL,
Redis, nginx, Chromium, node) is marked ``services`` (module level:
``pytestmark = pytest.mark.services``), so ``pytest -m "not services"``
runs everything else without them. A test that takes a fixture of one of
them (PostgreSQL, Redis, Chromium, nginx, node) is marked here as well, so
one that forgets can't slip into the fast subset. A test that starts
``rxllm serve`` (``tests.serving.ServeProcess``) must be marked ``slow`` or
``services``: it fails, saying so, if it is not.
"""

from collections.abc import Generator, Iterator

import pytest

import tests.serving
from pipeline.apps.builtin_model import MockServer
from tests.pg import db_url as db_url
from tests.pg import postgres_server as postgres_server

# The fixtures that find or start a service: a test that takes one (even through
# another fixture) needs that service.
SERVICE_FIXTURES = frozenset({"postgres_server", "redis_server", "chromium", "nginx_bin", "node"})


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    # Set before any fixture runs (a module-scoped one may start a server).
    tests.serving.running_test_markers = frozenset(mark.name for mark in item.iter_markers())
    try:
        return (yield)
    finally:
        tests.serving.running_test_markers = None


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockServer]:
    """The built-in model as the upstream of a module's ``rxllm serve`` processes."""
    with MockServer() as server:
        yield server
