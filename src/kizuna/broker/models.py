"""Tables of the broker.

An entity is one row. ``attrs`` holds its attributes keyed by expanded attribute IRI,
each a list of instances (one per datasetId, the default instance first) in the
NGSI-LD normalized form with the core keys kept short (``type``, ``value``,
``object``, ``observedAt``, ...) and sub-attributes keyed by expanded IRI (a single
instance each). Values are stored as the client sent them.
"""

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    String,
    Table,
    UniqueConstraint,
)

from kizuna.storage.metadata import JSONDoc, KeyInteger, metadata

# BIGINT on PostgreSQL, but INTEGER on SQLite so it aliases the rowid.
_PK = KeyInteger

entities = Table(
    "broker_entities",
    metadata,
    Column("pk", _PK, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("id", String(1024), nullable=False),
    # The first expanded type, indexed; every type of a multi-typed entity is also
    # in broker_entity_types.
    Column("type", String(1024), nullable=False),
    Column("types", JSONDoc, nullable=False),
    Column("scopes", JSONDoc, nullable=True),
    Column("attrs", JSONDoc, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("modified_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("tenant", "id", name="uq_broker_entities_tenant_id"),
    Index("ix_broker_entities_tenant_type_id", "tenant", "type", "id"),
)

# Only for entities with more than one type, so single-typed writes stay one row.
entity_types = Table(
    "broker_entity_types",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("type", String(1024), primary_key=True),
    Column(
        "entity_pk", _PK, ForeignKey("broker_entities.pk", ondelete="CASCADE"), primary_key=True
    ),
    Index("ix_broker_entity_types_entity_pk", "entity_pk"),
)

# Bounding boxes of every GeoProperty instance, for indexed geo-queries. The index
# itself is an R*Tree on SQLite and a GiST index on a box column on PostgreSQL
# (created in the migration, not declared here).
geo_index = Table(
    "broker_geo",
    metadata,
    Column("pk", _PK, primary_key=True, autoincrement=True),
    Column("entity_pk", _PK, ForeignKey("broker_entities.pk", ondelete="CASCADE"), nullable=False),
    Column("tenant", String(64), nullable=False),
    Column("attr", String(1024), nullable=False),
    Column("min_lon", Float, nullable=False),
    Column("min_lat", Float, nullable=False),
    Column("max_lon", Float, nullable=False),
    Column("max_lat", Float, nullable=False),
    Column("geometry", JSONDoc, nullable=False),
    Index("ix_broker_geo_entity_pk", "entity_pk"),
)

# @context documents stored through /jsonldContexts (hosted) or fetched and cached.
contexts = Table(
    "broker_contexts",
    metadata,
    Column("url", String(2048), primary_key=True),
    Column("kind", String(16), nullable=False),  # hosted | cached
    Column("body", JSONDoc, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
