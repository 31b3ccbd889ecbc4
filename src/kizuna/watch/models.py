"""Tables of the watch module (mimamori and flood sensors). Secrets are stored as hashes.

The tag-to-person link lives only in ``watch_tags.label`` and ``watch_guardians``; the
detections table knows tag ids, never people. Gauges and beacons themselves are NGSI-LD
entities in the broker; ``watch_gauge_readings`` is the raw log of what devices sent.
"""

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)

from kizuna.storage.metadata import JSONDoc, KeyInteger, metadata

PK = KeyInteger
TS = DateTime(timezone=True)

# Every device that sends data: fixed receivers, vehicles, facilities, volunteer phones,
# river gauges. Each has its own secret (hash only).
devices = Table(
    "watch_devices",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("id", String(80), primary_key=True),
    Column("kind", String(16), nullable=False),  # fixed|vehicle|facility|phone|gauge
    Column("name", String(200), nullable=False),
    Column("lat", Float, nullable=True),  # fixed position; None for phones and vehicles
    Column("lon", Float, nullable=True),
    Column("secret_sha256", String(64), nullable=False),
    Column("owner_username", String(120), nullable=True),  # volunteer of a phone
    Column("entity_id", String(256), nullable=True),  # the broker entity of a gauge
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    Column("last_seen_at", TS, nullable=True),
)

# Tags the city issues; a guardian claims one with its claim code and records consent.
tags = Table(
    "watch_tags",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("claim_sha256", String(64), nullable=False),
    Column("label", String(120), nullable=True),  # the person's name: guardians only
    Column("person_kind", String(16), nullable=True),  # child|elder|other
    Column("consent", JSONDoc, nullable=True),  # consent receipt (who, relation, version, when)
    Column("claimed_at", TS, nullable=True),
    Column("not_seen_hours", Float, nullable=True),  # alert when unseen this long
    Column("not_seen_alerted_at", TS, nullable=True),
    Column("created_at", TS, nullable=False, server_default=func.now()),
)

guardians = Table(
    "watch_guardians",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("tag_id", String(64), primary_key=True),
    Column("username", String(120), primary_key=True),
    Column("relation", String(40), nullable=False),
    Column("webhook_url", String(500), nullable=True),
    Column("added_at", TS, nullable=False, server_default=func.now()),
)

detections = Table(
    "watch_detections",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("detection_id", String(80), nullable=False),
    Column("tag_id", String(64), nullable=False),
    Column("detector_id", String(80), nullable=False),
    Column("detector_kind", String(16), nullable=False),
    Column("seen_at", TS, nullable=False),
    Column("lat", Float, nullable=False),
    Column("lon", Float, nullable=False),
    Column("rssi", Integer, nullable=True),
    Column("received_at", TS, nullable=False),
    # Duplicates (a device resending after a lost acknowledgement) are dropped by this key.
    UniqueConstraint("tenant_id", "detector_id", "detection_id", name="uq_watch_detections_id"),
    Index("ix_watch_detections_trail", "tenant_id", "tag_id", "seen_at"),
    Index("ix_watch_detections_seen", "seen_at"),
)

places = Table(
    "watch_places",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("tag_id", String(64), nullable=False),
    Column("name", String(120), nullable=False),
    Column("kind", String(16), nullable=False),  # home|school|daycare|other
    Column("lat", Float, nullable=False),
    Column("lon", Float, nullable=False),
    Column("radius_m", Float, nullable=False),
    Column("inside", Boolean, nullable=True),  # None until the first detection
    Column("changed_at", TS, nullable=True),
    Column("created_by", String(120), nullable=False),
    Index("ix_watch_places_tag", "tenant_id", "tag_id"),
)

# In-app notifications of one tag's guardians (arrival, departure, not seen, missing mode).
notifications = Table(
    "watch_notifications",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("tag_id", String(64), nullable=False),
    Column("kind", String(24), nullable=False),
    Column("place_id", PK, nullable=True),
    Column("at", TS, nullable=False),
    Column("text_ja", Text, nullable=False),
    Column("text_en", Text, nullable=False),
    Column("read_by", JSONDoc, nullable=False, default=list),
    Index("ix_watch_notifications_tag", "tenant_id", "tag_id", "at"),
)

# Outgoing webhooks, delivered by a worker with retries (never lost with a crash).
outbox = Table(
    "watch_outbox",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("url", String(500), nullable=False),
    Column("payload", JSONDoc, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", TS, nullable=False),
    Column("delivered_at", TS, nullable=True),
    Column("last_error", String(500), nullable=True),
    Index("ix_watch_outbox_due", "delivered_at", "next_attempt_at"),
)

missing_cases = Table(
    "watch_missing_cases",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("tag_id", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("opened_by", String(160), nullable=False),
    Column("opened_at", TS, nullable=False),
    Column("closed_by", String(160), nullable=True),
    Column("closed_at", TS, nullable=True),
    Index("ix_watch_missing_tag", "tenant_id", "tag_id"),
)

# Every look by staff at a person's identity or positions; the tag's guardians read it.
access_log = Table(
    "watch_access_log",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("tag_id", String(64), nullable=False),
    Column("actor", String(160), nullable=False),
    Column("action", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("case_id", PK, nullable=True),
    Column("at", TS, nullable=False),
    Index("ix_watch_access_tag", "tenant_id", "tag_id", "at"),
)

# Volunteers' contribution per day: counted always, points awarded through the ledger.
volunteer_days = Table(
    "watch_volunteer_days",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("username", String(120), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("detections", Integer, nullable=False, default=0),
    Column("points_earned", Integer, nullable=False, default=0),
    Column("points_awarded", Integer, nullable=False, default=0),
)

# Raw gauge readings as received (the broker entity holds the current value).
gauge_readings = Table(
    "watch_gauge_readings",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("device_id", String(80), nullable=False),
    Column("observed_at", TS, nullable=False),
    Column("level_m", Float, nullable=False),
    UniqueConstraint("tenant_id", "device_id", "observed_at", name="uq_watch_gauge_reading"),
)

# Flood threshold crossings, one row per crossing (written when the broker notifies).
flood_alerts = Table(
    "watch_flood_alerts",
    metadata,
    Column("id", PK, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("entity_id", String(256), nullable=False),
    Column("level", Integer, nullable=False),
    Column("previous_level", Integer, nullable=False),
    Column("value", Float, nullable=True),
    Column("at", TS, nullable=False),
    Column("notification_id", String(120), nullable=True),
    UniqueConstraint("tenant_id", "notification_id", name="uq_watch_flood_alert_notification"),
)

# Street flooding beacons: BLE beacons fixed at 10 / 20 / 30 cm on a pole (a FloodSpot
# entity in the broker); receivers hear them, and one that goes silent is under water.
beacons = Table(
    "watch_beacons",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("tag_id", String(64), primary_key=True),
    Column("spot_entity_id", String(256), nullable=False),
    Column("height_m", Float, nullable=False),
    Column("last_heard_at", TS, nullable=True),
)

# Per tenant: the hash of the key the flood-alert subscription sends (receiverInfo) with each
# notification to /watch/v1/flood/alerts, and the endpoint it was made for.
alert_keys = Table(
    "watch_alert_keys",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("key_sha256", String(64), nullable=False),
    Column("endpoint", String(500), nullable=False),
)
