"""When a deleted database stopped taking writes: its restore window ends there.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("databases", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE databases SET deleted_at = updated_at WHERE status = 'deleted'")


def downgrade() -> None:
    op.drop_column("databases", "deleted_at")
