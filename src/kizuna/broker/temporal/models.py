"""Tables of the temporal API (migration branch ``temporal``).

``temporal_entities``: one row per entity that has history (tenant, id, types), so
temporal queries by type and temporal-only entities need no current entity.
``temporal_instances``: one narrow row per attribute instance ever recorded. Times are
UTC; ``value_num`` holds numeric Property values (NULL otherwise) so aggregation runs in
SQL without touching the JSON; ``instance`` is the normalized instance without system keys.
"""

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)

from kizuna.storage.metadata import JSONDoc, metadata

_PK = BigInteger().with_variant(Integer(), "sqlite")

temporal_entities = Table(
    "temporal_entities",
    metadata,
    Column("pk", _PK, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("entity_id", String(1024), nullable=False),
    Column("type", String(1024), nullable=False),  # the first expanded type
    Column("types", JSONDoc, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("modified_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("tenant", "entity_id", name="uq_temporal_entities_tenant_entity_id"),
    Index("ix_temporal_entities_tenant_type", "tenant", "type"),
)

temporal_instances = Table(
    "temporal_instances",
    metadata,
    Column("pk", _PK, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("entity_id", String(1024), nullable=False),
    Column("entity_type", String(1024), nullable=False),
    Column("attr", String(1024), nullable=False),
    Column("dataset_id", String(1024), nullable=True),
    Column("instance_id", String(128), nullable=False),
    Column("observed_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("modified_at", DateTime(timezone=True), nullable=False),
    Column("value_num", Float, nullable=True),
    Column("instance", JSONDoc, nullable=False),
    Index(
        "ix_temporal_instances_entity_attr_observed", "tenant", "entity_id", "attr", "observed_at"
    ),
    Index("ix_temporal_instances_instance_id", "tenant", "instance_id"),
    Index("ix_temporal_instances_modified", "tenant", "modified_at"),
)
