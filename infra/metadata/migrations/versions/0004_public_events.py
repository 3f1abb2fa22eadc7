"""Public events: each project's events for subscribers, numbered per project.

Events that happened before this revision are not backfilled; ``pgplane replay projection``
shows what a rebuild from the stream would hold.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("project_id", sa.Uuid(), primary_key=True),
        sa.Column("sequence", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("id", sa.Uuid(), nullable=False, unique=True),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", JSONB(), nullable=False),
    )
    op.create_table(
        "event_sequences",
        sa.Column("project_id", sa.Uuid(), primary_key=True),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("event_sequences")
    op.drop_table("events")
