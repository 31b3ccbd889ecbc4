"""Watch: the key the broker's flood-alert subscription presents to /watch/v1/flood/alerts.

Revision ID: watch_0002
Revises: watch_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "watch_0002"
down_revision = "watch_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "watch_alert_keys",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("key_sha256", sa.String(64), nullable=False),
        sa.Column("endpoint", sa.String(500), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_watch_alert_keys")),
    )


def downgrade() -> None:
    op.drop_table("watch_alert_keys")
