"""Shared fixtures."""

from tests.pg import db_url as db_url
from tests.pg import postgres_server as postgres_server
