"""Temporal API: entities with history and one row per attribute instance.

Revision ID: temporal_0001
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "temporal_0001"
down_revision = "0001"
branch_labels = ("temporal",)
depends_on = None

JSONDoc = sa.JSON().with_variant(JSONB(), "postgresql")
PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "temporal_entities",
        sa.Column("pk", PK, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("entity_id", sa.String(1024), nullable=False),
        sa.Column("type", sa.String(1024), nullable=False),
        sa.Column("types", JSONDoc, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("modified_at", TS, nullable=False),
        sa.UniqueConstraint("tenant", "entity_id", name="uq_temporal_entities_tenant_entity_id"),
    )
    op.create_index("ix_temporal_entities_tenant_type", "temporal_entities", ["tenant", "type"])
    op.create_table(
        "temporal_instances",
        sa.Column("pk", PK, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("entity_id", sa.String(1024), nullable=False),
        sa.Column("entity_type", sa.String(1024), nullable=False),
        sa.Column("attr", sa.String(1024), nullable=False),
        sa.Column("dataset_id", sa.String(1024), nullable=True),
        sa.Column("instance_id", sa.String(128), nullable=False),
        sa.Column("observed_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("modified_at", TS, nullable=False),
        sa.Column("value_num", sa.Float, nullable=True),
        sa.Column("instance", JSONDoc, nullable=False),
    )
    op.create_index(
        "ix_temporal_instances_entity_attr_observed",
        "temporal_instances",
        ["tenant", "entity_id", "attr", "observed_at"],
    )
    op.create_index(
        "ix_temporal_instances_instance_id", "temporal_instances", ["tenant", "instance_id"]
    )
    op.create_index(
        "ix_temporal_instances_modified", "temporal_instances", ["tenant", "modified_at"]
    )


def downgrade() -> None:
    op.drop_table("temporal_instances")
    op.drop_table("temporal_entities")
