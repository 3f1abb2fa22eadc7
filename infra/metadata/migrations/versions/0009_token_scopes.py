"""Token scopes: what a project token may do (read, write, admin). Tokens made before keep what
they could do: read and write.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "api_tokens",
        sa.Column("scopes", JSONB(), nullable=False, server_default=sa.text("""'["read", "write"]'::jsonb""")),
    )
    op.alter_column("api_tokens", "scopes", server_default=None)


def downgrade() -> None:
    op.drop_column("api_tokens", "scopes")
