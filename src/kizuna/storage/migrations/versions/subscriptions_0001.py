"""Subscriptions: subscriptions, per-tenant version counters, the notification outbox.

Revision ID: subscriptions_0001
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "subscriptions_0001"
down_revision = "0001"
branch_labels = ("subscriptions",)
depends_on = None

JSONDoc = sa.JSON().with_variant(JSONB(), "postgresql")
PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("pk", PK, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("id", sa.String(1024), nullable=False),
        sa.Column("doc", JSONDoc, nullable=False),
        sa.Column("is_active", sa.Boolean, nullable=False),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("time_interval", sa.Float, nullable=True),
        sa.Column("next_periodic_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("modified_at", TS, nullable=False),
        sa.Column("times_sent", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("times_failed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_notification", TS, nullable=True),
        sa.Column("last_success", TS, nullable=True),
        sa.Column("last_failure", TS, nullable=True),
        sa.UniqueConstraint("tenant", "id", name="uq_subscriptions_tenant_id"),
    )
    op.create_index("ix_subscriptions_next_periodic_at", "subscriptions", ["next_periodic_at"])
    op.create_table(
        "subscription_versions",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "subscription_outbox",
        sa.Column("pk", PK, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("subscription_pk", PK, nullable=False),
        sa.Column("endpoint", sa.String(2048), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("payload", JSONDoc, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("dead", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_subscription_outbox_due", "subscription_outbox", ["dead", "due_at"])


def downgrade() -> None:
    op.drop_table("subscription_outbox")
    op.drop_table("subscription_versions")
    op.drop_table("subscriptions")
