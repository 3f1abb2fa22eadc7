"""Token expiry and last use, failed sign-in throttling, deleted projects, operators' error details.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("api_tokens", sa.Column("expires_at", TZ, nullable=True))
    op.add_column("api_tokens", sa.Column("last_used_at", TZ, nullable=True))
    op.add_column("projects", sa.Column("deleted_at", TZ, nullable=True))
    op.add_column("operations", sa.Column("error_detail", sa.String(), nullable=True))
    op.create_table(
        "auth_failures",
        sa.Column("client", sa.String(), primary_key=True),
        sa.Column("window_started", TZ, nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("auth_failures")
    op.drop_column("operations", "error_detail")
    op.drop_column("projects", "deleted_at")
    op.drop_column("api_tokens", "last_used_at")
    op.drop_column("api_tokens", "expires_at")
