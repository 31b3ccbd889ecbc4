"""Points: the programme's purchased currency (地域ポイント), sold at the city's counter.

Revision ID: points_0003
Revises: points_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "points_0003"
down_revision = "points_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("points_programmes") as table:
        table.add_column(sa.Column("purchase_currency", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("points_programmes") as table:
        table.drop_column("purchase_currency")
