"""The metadata schema as the first release created it (``create_all`` at start-up).

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
TEXT = sa.String()


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", TEXT, nullable=False),
        sa.Column("plan", TEXT, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "databases",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("project_id", sa.Uuid(), nullable=False, index=True),
        sa.Column("name", TEXT, nullable=False),
        sa.Column("host_id", TEXT, nullable=False),
        sa.Column("dbname", TEXT, nullable=False),
        sa.Column("role", TEXT, nullable=False),
        sa.Column("status", TEXT, nullable=False),
        sa.Column("credentials_version", sa.Integer(), nullable=False),
        sa.Column("last_operation_id", sa.Uuid(), nullable=False),
        sa.Column("last_verified_backup_id", sa.Uuid(), nullable=True),
        sa.Column("last_verified_restore_at", TZ, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_index(
        "databases_live_name",
        "databases",
        ["project_id", "name"],
        unique=True,
        postgresql_where=sa.text("status NOT IN ('deleted', 'failed')"),
    )
    op.create_table(
        "backups",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("project_id", sa.Uuid(), nullable=False, index=True),
        sa.Column("database_id", sa.Uuid(), nullable=False, index=True),
        sa.Column("status", TEXT, nullable=False),
        sa.Column("trigger", TEXT, nullable=False),
        sa.Column("object_key", TEXT, nullable=False),
        sa.Column("operation_id", sa.Uuid(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("dump_bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", TEXT, nullable=True),
        sa.Column("key_id", TEXT, nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("error", TEXT, nullable=True),
        sa.Column("last_verified_at", TZ, nullable=True),
        sa.Column("verify_duration_ms", sa.Integer(), nullable=True),
        sa.Column("verified_tables", sa.Integer(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("completed_at", TZ, nullable=True),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "backup_policies",
        sa.Column("database_id", sa.Uuid(), primary_key=True),
        sa.Column("project_id", sa.Uuid(), nullable=False, index=True),
        sa.Column("schedule", TEXT, nullable=True),
        sa.Column("retain_days", sa.Integer(), nullable=False),
        sa.Column("keep_last", sa.Integer(), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "base_backups",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("host_id", TEXT, nullable=False, index=True),
        sa.Column("start_segment", TEXT, nullable=False),
        sa.Column("stop_segment", TEXT, nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("finished_at", TZ, nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "wal_segments",
        sa.Column("host_id", TEXT, primary_key=True),
        sa.Column("segment", TEXT, primary_key=True),
        sa.Column("archived_at", TZ, nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "operations",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("project_id", sa.Uuid(), nullable=False, index=True),
        sa.Column("database_id", sa.Uuid(), nullable=False, index=True),
        sa.Column("kind", TEXT, nullable=False),
        sa.Column("status", TEXT, nullable=False),
        sa.Column("backup_id", sa.Uuid(), nullable=True),
        sa.Column("point_in_time", TZ, nullable=True),
        sa.Column("error", TEXT, nullable=True),
        sa.Column("actor", TEXT, nullable=False),
        sa.Column("last_sequence", sa.Integer(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "operation_steps",
        sa.Column("operation_id", sa.Uuid(), primary_key=True),
        sa.Column("name", TEXT, primary_key=True),
        sa.Column("status", TEXT, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("detail", TEXT, nullable=True),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("project_id", sa.Uuid(), nullable=False, index=True),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("actor", TEXT, nullable=False),
        sa.Column("action", TEXT, nullable=False),
        sa.Column("resource_type", TEXT, nullable=False),
        sa.Column("resource_id", sa.Uuid(), nullable=False),
        sa.Column("operation_id", sa.Uuid(), nullable=True),
        sa.Column("outcome", TEXT, nullable=False),
        sa.Column("detail", JSONB(), nullable=False),
    )
    op.create_table(
        "projector_checkpoint",
        sa.Column("name", TEXT, primary_key=True),
        sa.Column("last_sequence", sa.Integer(), nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("project_id", sa.Uuid(), nullable=False, index=True),
        sa.Column("name", TEXT, nullable=False),
        sa.Column("secret_digest", TEXT, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("revoked_at", TZ, nullable=True),
    )
    op.create_table(
        "database_credentials",
        sa.Column("database_id", sa.Uuid(), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("password_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("principal", TEXT, primary_key=True),
        sa.Column("key", TEXT, primary_key=True),
        sa.Column("request_digest", TEXT, nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", JSONB(), nullable=False),
        sa.Column("created_at", TZ, nullable=False, index=True),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("msg_id", TEXT, nullable=False),
        sa.Column("subject", TEXT, nullable=False),
        sa.Column("stream", TEXT, nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("published_at", TZ, nullable=True, index=True),
    )
    op.create_table(
        "backup_slots",
        sa.Column("database_id", sa.Uuid(), primary_key=True),
        sa.Column("slot", TZ, primary_key=True),
        sa.Column("operation_id", sa.Uuid(), nullable=True),
        sa.Column("missed_at", TZ, nullable=True),
    )


def downgrade() -> None:
    for name in (
        "backup_slots",
        "outbox",
        "idempotency_keys",
        "database_credentials",
        "api_tokens",
        "projector_checkpoint",
        "audit_log",
        "operation_steps",
        "operations",
        "wal_segments",
        "base_backups",
        "backup_policies",
        "backups",
        "databases",
        "projects",
    ):
        op.drop_table(name)
