"""Tables of the temporal history.

A *series* is one attribute instance stream of one entity: (tenant, entity id, attribute
IRI, datasetId; '' for the default instance). Each change of that attribute is one narrow
row in ``temporal_instances``: the series key, the three time columns the temporal query
can select (observedAt, createdAt, modifiedAt) plus deletedAt for deletion markers, the
numeric value (for aggregation in SQL) and the instance as JSON. The instance row's
primary key is its NGSI-LD instanceId (``urn:ngsi-ld:Instance:<pk>``).

One B-tree on (series_pk, observed_at) carrying num_value serves every range scan, lastN
and the numeric aggregations as index-only scans; ``series_pk`` is eight bytes, so the index
stays small where (tenant, entity id, attribute IRI, time) strings would not.

Times are TIMESTAMPTZ on PostgreSQL and integer microseconds since the epoch on SQLite,
so both dialects compare and bucket them as numbers in SQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Numeric,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

from kizuna.storage.metadata import KeyInteger, metadata

_PK = KeyInteger
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


class Moment(TypeDecorator):
    """TIMESTAMPTZ on PostgreSQL, integer microseconds since 1970 on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        return to_micros(value) if isinstance(value, datetime) else int(value)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return from_micros(int(value))
        return value if value.tzinfo else value.replace(tzinfo=UTC)


series = Table(
    "temporal_series",
    metadata,
    Column("pk", _PK, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("entity_id", String(1024), nullable=False),
    Column("attr", String(1024), nullable=False),
    # '' is the default instance (no datasetId).
    Column("dataset_id", String(1024), nullable=False),
    UniqueConstraint("tenant", "entity_id", "attr", "dataset_id", name="uq_temporal_series_key"),
)

instances = Table(
    "temporal_instances",
    metadata,
    Column("pk", _PK, primary_key=True, autoincrement=True),
    Column("series_pk", _PK, nullable=False),
    Column("observed_at", Moment, nullable=True),
    Column("created_at", Moment, nullable=False),
    Column("modified_at", Moment, nullable=False),
    Column("deleted_at", Moment, nullable=True),
    Column("num_value", Float, nullable=True),
    # The instance in the stored (expanded) form, without the time members above.
    Column("instance", JSON, nullable=False),
    # Covering: (series_pk, observed_at) INCLUDE (num_value) on PostgreSQL, a third key
    # column on SQLite (created in the migration).
    Index("ix_temporal_instances_series_observed", "series_pk", "observed_at", "num_value"),
)

# PostgreSQL only (migration temporal_0002): per series and UTC day, the totals of the
# instances observed that day, kept exact by triggers on temporal_instances.
daily = Table(
    "temporal_daily",
    metadata,
    Column("series_pk", _PK, primary_key=True),
    Column("day", Moment, primary_key=True),
    Column("n", BigInteger, nullable=False),
    Column("n_num", BigInteger, nullable=False),
    Column("total", Numeric(asdecimal=True), nullable=True),
    Column("low", Float, nullable=True),
    Column("high", Float, nullable=True),
    Column("squares", Numeric(asdecimal=True), nullable=True),
)

INSTANCE_PREFIX = "urn:ngsi-ld:Instance:"


def instance_id(pk: int) -> str:
    return f"{INSTANCE_PREFIX}{pk}"


def instance_pk(value: str) -> int | None:
    """The row key of an instanceId this broker issued, else None."""
    if value.startswith(INSTANCE_PREFIX):
        tail = value[len(INSTANCE_PREFIX) :]
        if tail.isascii() and tail.isdigit() and len(tail) < 19:
            return int(tail)
    return None
