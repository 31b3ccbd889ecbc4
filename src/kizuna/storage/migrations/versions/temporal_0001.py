"""Temporal history: attribute series and their instances.

Revision ID: temporal_0001
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "temporal_0001"
down_revision = "0001"
branch_labels = ("temporal",)
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# TIMESTAMPTZ on PostgreSQL; integer microseconds since 1970 on SQLite (see temporal/models.py).
MOMENT = sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "temporal_series",
        sa.Column("pk", PK, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("entity_id", sa.String(1024), nullable=False),
        sa.Column("attr", sa.String(1024), nullable=False),
        sa.Column("dataset_id", sa.String(1024), nullable=False),
        sa.UniqueConstraint(
            "tenant", "entity_id", "attr", "dataset_id", name="uq_temporal_series_key"
        ),
    )
    op.create_table(
        "temporal_instances",
        sa.Column("pk", PK, primary_key=True, autoincrement=True),
        sa.Column("series_pk", PK, nullable=False),
        sa.Column("observed_at", MOMENT, nullable=True),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.Column("modified_at", MOMENT, nullable=False),
        sa.Column("deleted_at", MOMENT, nullable=True),
        sa.Column("num_value", sa.Float, nullable=True),
        sa.Column("instance", sa.JSON, nullable=False),
    )
    # Range scans, lastN and aggregation of avg/min/max/sum read only this index: it
    # carries num_value (INCLUDE on PostgreSQL, a trailing key column on SQLite).
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE INDEX ix_temporal_instances_series_observed ON temporal_instances "
            "(series_pk, observed_at) INCLUDE (num_value)"
        )
    else:
        op.create_index(
            "ix_temporal_instances_series_observed",
            "temporal_instances",
            ["series_pk", "observed_at", "num_value"],
        )


def downgrade() -> None:
    op.drop_index("ix_temporal_instances_series_observed", "temporal_instances")
    op.drop_table("temporal_instances")
    op.drop_table("temporal_series")
