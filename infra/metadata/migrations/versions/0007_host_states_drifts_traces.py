"""Reconciliation and tracing: each data host's last state report, the drifts found against it,
and the trace context of each public event.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("traceparent", sa.String(), nullable=True))
    op.create_table(
        "host_states",
        sa.Column("host_id", sa.String(), primary_key=True),
        sa.Column("report_id", sa.Uuid(), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("wal_lsn", sa.String(), nullable=True),
        sa.Column("databases", JSONB(), nullable=False),
        sa.Column("roles", JSONB(), nullable=False),
        sa.Column("routes", JSONB(), nullable=False),
        sa.Column("verifier_mismatch", JSONB(), nullable=False),
    )
    op.create_table(
        "drifts",
        sa.Column("host_id", sa.String(), primary_key=True),
        sa.Column("kind", sa.String(), primary_key=True),
        sa.Column("object", sa.String(), primary_key=True),
        sa.Column("database_id", sa.Uuid(), nullable=True),
        sa.Column("project_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("repair", sa.Boolean(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("repaired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("drifts")
    op.drop_table("host_states")
    op.drop_column("events", "traceparent")
