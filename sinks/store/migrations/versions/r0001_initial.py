"""Initial schema: rxllm_streams and rxllm_events.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sinks.store.tables import UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "rxllm_streams",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("request", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("finish_reason", sa.String(64), nullable=True),
        sa.Column("choices", sa.JSON(), nullable=True),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("usage", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column("first_token_at", sa.Float(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("event_count", sa.Integer(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_rxllm_streams"),
    )
    op.create_index("ix_rxllm_streams_created_at", "rxllm_streams", ["created_at"])
    op.create_index("ix_rxllm_streams_model", "rxllm_streams", ["model"])
    op.create_index("ix_rxllm_streams_status", "rxllm_streams", ["status"])
    op.create_index("ix_rxllm_streams_owner_status", "rxllm_streams", ["owner", "status"])
    op.create_table(
        "rxllm_events",
        sa.Column("stream_id", sa.String(128), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("t", sa.Float(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["stream_id"],
            ["rxllm_streams.id"],
            name="fk_rxllm_events_stream_id_rxllm_streams",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("stream_id", "seq", name="pk_rxllm_events"),
    )


def downgrade() -> None:
    op.drop_table("rxllm_events")
    op.drop_index("ix_rxllm_streams_owner_status", table_name="rxllm_streams")
    op.drop_index("ix_rxllm_streams_status", table_name="rxllm_streams")
    op.drop_index("ix_rxllm_streams_model", table_name="rxllm_streams")
    op.drop_index("ix_rxllm_streams_created_at", table_name="rxllm_streams")
    op.drop_table("rxllm_streams")
