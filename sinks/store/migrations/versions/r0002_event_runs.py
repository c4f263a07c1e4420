"""Runs of events: ``rxllm_events.last_seq``, set on a row that holds a run of events.

A row with ``last_seq`` NULL is one event, as before; one with ``last_seq``
set holds a stream's events ``seq`` to ``last_seq`` of one type, its ``data``
a JSON array of their objects (see :mod:`sinks.store.tables`). The upgrade
only adds the column: the rows already stored stay single events. The
downgrade splits each run back into one row per event, each keeping its JSON
text, before it drops the column.

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-01 00:00:00
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_EVENTS = sa.table(
    "rxllm_events",
    sa.column("stream_id", sa.String()),
    sa.column("seq", sa.Integer()),
    sa.column("t", sa.Float()),
    sa.column("type", sa.String()),
    sa.column("data", sa.JSON()),
    sa.column("last_seq", sa.Integer()),
)
_SINGLE_COLUMNS = ("stream_id", "seq", "t", "type", "data")


def upgrade() -> None:
    with op.batch_alter_table("rxllm_events") as batch:
        batch.add_column(sa.Column("last_seq", sa.Integer(), nullable=True))


def downgrade() -> None:
    _split_runs(op.get_bind())
    with op.batch_alter_table("rxllm_events") as batch:
        batch.drop_column("last_seq")


def _split_runs(bind: sa.Connection) -> None:
    """Replace every row holding a run with one row per event of the run."""
    events = _EVENTS.c
    runs = bind.execute(
        sa.select(events.stream_id, events.type, sa.cast(events.data, sa.Text())).where(
            events.last_seq.is_not(None)
        )
    ).all()
    if not runs:
        return
    singles = [
        {"stream_id": stream_id, "seq": item["seq"], "t": item["t"], "type": kind, "data": text}
        for stream_id, kind, array in runs
        for text, item in _elements(array)
    ]
    bind.execute(sa.delete(_EVENTS).where(events.last_seq.is_not(None)))
    # Through the driver, as the store writes: the JSON text goes in as it is.
    compiled = sa.insert(_EVENTS).compile(dialect=bind.dialect, column_keys=list(_SINGLE_COLUMNS))
    order = tuple(compiled.positiontup or ())
    if sorted(order) != sorted(_SINGLE_COLUMNS):
        raise RuntimeError(f"unexpected parameter order {order}")
    bind.exec_driver_sql(str(compiled), [tuple(row[key] for key in order) for row in singles])


def _elements(array: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each element of a JSON array of objects: its text, verbatim, and its value."""
    decoder = json.JSONDecoder()
    index = array.index("[") + 1
    while True:
        while array[index] in " \t\r\n,":
            index += 1
        if array[index] == "]":
            return
        value, end = decoder.raw_decode(array, index)
        yield array[index:end], value
        index = end
