"""Alembic environment for the transcript store (online migrations only).

Run with a connection given in ``config.attributes["connection"]`` (what
:func:`sinks.store.migrations.upgrade` does), or from the command line, where
it opens ``sqlalchemy.url`` / ``RXLLM_DB_URL`` with an async engine.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from sinks.store.migrations import VERSION_TABLE
from sinks.store.tables import metadata

DEFAULT_URL = "sqlite+aiosqlite:///rxllm.db"


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def main() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("RXLLM_DB_URL") or DEFAULT_URL
    asyncio.run(_run_async(url))


if context.is_offline_mode():
    raise SystemExit("the rxllm store migrations run online only (give a database URL)")
main()
