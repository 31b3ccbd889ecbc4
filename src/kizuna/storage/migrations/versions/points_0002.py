"""Points: the city's own bank account (依頼人) for the 全銀協 総合振込 file, kept per
programme so the settlement page fills it in again next month.

Revision ID: points_0002
Revises: points_0001
"""

import sqlalchemy as sa
from alembic import op

from kizuna.storage.metadata import JSONDoc

revision = "points_0002"
down_revision = "points_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("points_programmes") as table:
        table.add_column(sa.Column("zengin_originator", JSONDoc, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("points_programmes") as table:
        table.drop_column("zengin_originator")
