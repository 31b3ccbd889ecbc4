"""Tables of NGSI-LD subscriptions and their notification outbox.

``subscriptions`` keeps each subscription's normalized document (names expanded to
IRIs, so any @context can render it) beside the columns the workers select on, and its
delivery counters. ``subscription_versions`` holds one counter per tenant, bumped in the
same transaction as any subscription change, so every process can tell with one key
lookup whether its cached matchers are current. ``subscription_outbox`` holds one row
per notification to deliver, written in the transaction of the entity change that
caused it; a worker claims a row by moving ``due_at`` past a lease (a dead worker's
claims come due again), deletes it once delivered, and on failure moves ``due_at`` by
an exponential backoff.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from kizuna.storage.metadata import JSONDoc, KeyInteger, metadata

_PK = KeyInteger

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("pk", _PK, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("id", String(1024), nullable=False),
    Column("doc", JSONDoc, nullable=False),  # the normalized subscription (expanded names)
    Column("is_active", Boolean, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("time_interval", Float, nullable=True),
    Column("next_periodic_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("modified_at", DateTime(timezone=True), nullable=False),
    Column("times_sent", BigInteger, nullable=False, default=0),
    Column("times_failed", BigInteger, nullable=False, default=0),
    Column("last_notification", DateTime(timezone=True), nullable=True),
    Column("last_success", DateTime(timezone=True), nullable=True),
    Column("last_failure", DateTime(timezone=True), nullable=True),
    UniqueConstraint("tenant", "id", name="uq_subscriptions_tenant_id"),
    Index("ix_subscriptions_next_periodic_at", "next_periodic_at"),
)

subscription_versions = Table(
    "subscription_versions",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("version", BigInteger, nullable=False),
)

outbox = Table(
    "subscription_outbox",
    metadata,
    Column("pk", _PK, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False),  # the Notification id receivers dedupe on
    Column("tenant", String(64), nullable=False),
    Column("subscription_pk", _PK, nullable=False),
    Column("endpoint", String(2048), nullable=False),  # per-endpoint isolation in claims
    Column("trigger", String(32), nullable=False),
    # [{"after": entity|None, "before": entity|None}] in stored (expanded) form, or
    # {"rendered": [...]} for periodic notifications rendered when due.
    Column("payload", JSONDoc, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("dead", Boolean, nullable=False, default=False),
    Index("ix_subscription_outbox_due", "dead", "due_at"),
)
