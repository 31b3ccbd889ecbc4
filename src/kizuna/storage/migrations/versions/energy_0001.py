"""Energy: simulation runs (results as files in the data folder, one row per run).

Revision ID: energy_0001
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "energy_0001"
down_revision = "0001"
branch_labels = ("energy",)
depends_on = None

JSONDoc = sa.JSON().with_variant(JSONB(), "postgresql")
PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "energy_runs",
        sa.Column("id", PK, primary_key=True, autoincrement=True),
        sa.Column("region_id", sa.String(64), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("fiscal_year", sa.Integer, nullable=False),
        sa.Column("synthetic", sa.Boolean, nullable=False),
        sa.Column("facilities", sa.Integer, nullable=False),
        sa.Column("folder", sa.String(64), nullable=False),
        sa.Column("summary", JSONDoc, nullable=False),
        sa.Column("created_by", sa.String(120), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("published_at", TS, nullable=True),
        sa.UniqueConstraint("folder", name="uq_energy_runs_folder"),
    )
    op.create_index("ix_energy_runs_region_created", "energy_runs", ["region_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_energy_runs_region_created", "energy_runs")
    op.drop_table("energy_runs")
