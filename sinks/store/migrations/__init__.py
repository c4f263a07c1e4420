"""The store's Alembic migrations, run in code (no ``alembic.ini`` needed).

:func:`upgrade` brings a database to the newest revision; the store calls it
on every ``open()``. The version is kept in ``rxllm_alembic_version``, so an
application's own Alembic history in the same database is left alone.

From the command line (``alembic -c`` is not needed)::

    python -m sinks.store.migrations upgrade head    # RXLLM_DB_URL or the default
    python -m sinks.store.migrations current
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

__all__ = [
    "INITIAL_REVISION",
    "VERSION_TABLE",
    "alembic_config",
    "current_revision",
    "head_revision",
    "upgrade",
]

VERSION_TABLE = "rxllm_alembic_version"
INITIAL_REVISION = "0001"
_HERE = Path(__file__).resolve().parent
# Any constant: serializes concurrent upgrades of one PostgreSQL database.
_PG_LOCK_KEY = 0x72786C6C6D


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` for these migrations, built in code.

    With ``connection`` (a sync connection, e.g. inside ``AsyncConnection.run_sync``)
    the migrations run on it, in its transaction; otherwise ``env.py`` opens
    ``url`` (default: ``RXLLM_DB_URL``, then ``sqlite+aiosqlite:///rxllm.db``).
    """
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision shipped."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision a database is at (``None``: not created yet)."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Upgrade the database behind a sync ``connection`` to ``revision``.

    Meant for ``await conn.run_sync(upgrade)`` inside ``engine.begin()``: the
    migrations share that transaction. On PostgreSQL an advisory lock held
    to the end of the transaction keeps two processes from migrating at once.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    command.upgrade(alembic_config(connection=connection), revision)
