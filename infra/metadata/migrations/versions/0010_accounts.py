"""Accounts: users and their OpenID Connect identities, organisations and their members,
invitations, browser sessions, OAuth device authorizations and the mail outbox; personal tokens
(a token of a user instead of a project); projects owned by an organisation; its Stripe billing,
the Stripe events acted on and the usage reported to Stripe.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("email", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("password_hash", sa.String(), nullable=True),
        sa.Column("platform_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("email"),
    )
    op.create_table(
        "user_identities",
        sa.Column("issuer", sa.String(), primary_key=True),
        sa.Column("subject", sa.String(), primary_key=True),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_index("ix_user_identities_user_id", "user_identities", ["user_id"])
    op.create_table(
        "organizations",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("plan", sa.String(), nullable=False),
        sa.Column("stripe_customer_id", sa.String(), nullable=True),
        sa.Column("stripe_subscription_id", sa.String(), nullable=True),
        sa.Column("billing_status", sa.String(), nullable=False),
        sa.Column("grace_until", TZ, nullable=True),
        sa.Column("suspended_at", TZ, nullable=True),
        sa.Column("suspended_reason", sa.String(), nullable=True),
        sa.Column("suspension_changed_at", TZ, nullable=True),
        sa.UniqueConstraint("stripe_customer_id"),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("received_at", TZ, nullable=False),
    )
    op.create_table(
        "usage_reports",
        sa.Column("organization_id", sa.Uuid(), primary_key=True),
        sa.Column("hour", TZ, primary_key=True),
        sa.Column("database_minutes", sa.Integer(), nullable=False),
        sa.Column("reported_at", TZ, nullable=False),
    )
    op.create_table(
        "memberships",
        sa.Column("organization_id", sa.Uuid(), primary_key=True),
        sa.Column("user_id", sa.Uuid(), primary_key=True),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_index("ix_memberships_user_id", "memberships", ["user_id"])
    op.create_table(
        "invitations",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("secret_digest", sa.String(), nullable=False),
        sa.Column("invited_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("accepted_at", TZ, nullable=True),
        sa.Column("accepted_by", sa.Uuid(), nullable=True),
        sa.Column("revoked_at", TZ, nullable=True),
    )
    op.create_index("ix_invitations_organization_id", "invitations", ["organization_id"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("secret_digest", sa.String(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("revoked_at", TZ, nullable=True),
    )
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])
    op.create_table(
        "device_authorizations",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("device_code_digest", sa.String(), nullable=False),
        sa.Column("user_code", sa.String(), nullable=False),
        sa.Column("client_id", sa.String(), nullable=False),
        sa.Column("scopes", JSONB(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("interval_seconds", sa.Integer(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("last_polled_at", TZ, nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("token_id", sa.Uuid(), nullable=True),
        sa.UniqueConstraint("device_code_digest"),
    )
    op.create_index("ix_device_authorizations_user_code", "device_authorizations", ["user_code"])
    op.create_table(
        "mail_outbox",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("recipient", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("body_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("sent_at", TZ, nullable=True),
    )
    op.create_index("ix_mail_outbox_recipient", "mail_outbox", ["recipient"])
    op.alter_column("api_tokens", "project_id", nullable=True)
    op.add_column("api_tokens", sa.Column("user_id", sa.Uuid(), nullable=True))
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    op.add_column("projects", sa.Column("organization_id", sa.Uuid(), nullable=True))
    op.create_index("ix_projects_organization_id", "projects", ["organization_id"])


def downgrade() -> None:
    op.drop_index("ix_projects_organization_id", "projects")
    op.drop_column("projects", "organization_id")
    op.drop_index("ix_api_tokens_user_id", "api_tokens")
    op.drop_column("api_tokens", "user_id")
    op.alter_column("api_tokens", "project_id", nullable=False)
    for name in (
        "mail_outbox",
        "device_authorizations",
        "sessions",
        "invitations",
        "memberships",
        "organizations",
        "user_identities",
        "stripe_events",
        "usage_reports",
    ):
        op.drop_table(name)
    op.drop_table("users")
