"""Ledger: purchase limits per wallet on a currency (per purchase, per fiscal year).

Revision ID: ledger_0003
Revises: ledger_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "ledger_0003"
down_revision = "ledger_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ledger_currencies") as table:
        table.add_column(sa.Column("max_yen_per_purchase", sa.BigInteger, nullable=True))
        table.add_column(sa.Column("max_yen_per_year", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger_currencies") as table:
        table.drop_column("max_yen_per_year")
        table.drop_column("max_yen_per_purchase")
