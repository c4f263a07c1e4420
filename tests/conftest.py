"""Shared fixtures."""

from collections.abc import Iterator

import pytest

from pipeline.apps.builtin_model import MockServer
from tests.pg import db_url as db_url
from tests.pg import postgres_server as postgres_server


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockServer]:
    """The built-in model as the upstream of a module's ``rxllm serve`` processes."""
    with MockServer() as server:
        yield server
