"""Watch (mimamori and flood sensors): devices, tags, guardians, detections, places,
notifications, webhook outbox, missing-person cases, access log, volunteers, gauges, beacons.

Revision ID: watch_0001
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "watch_0001"
down_revision = "0001"
branch_labels = ("watch",)
depends_on = None

JSONDoc = sa.JSON().with_variant(JSONB(), "postgresql")
PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "watch_access_log",
        sa.Column("id", PK, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("tag_id", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=160), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("case_id", PK, nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_watch_access_log")),
    )
    op.create_index(
        "ix_watch_access_tag", "watch_access_log", ["tenant_id", "tag_id", "at"], unique=False
    )
    op.create_table(
        "watch_beacons",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("tag_id", sa.String(length=64), nullable=False),
        sa.Column("spot_entity_id", sa.String(length=256), nullable=False),
        sa.Column("height_m", sa.Float(), nullable=False),
        sa.Column("last_heard_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "tag_id", name=op.f("pk_watch_beacons")),
    )
    op.create_table(
        "watch_detections",
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("detection_id", sa.String(length=80), nullable=False),
        sa.Column("tag_id", sa.String(length=64), nullable=False),
        sa.Column("detector_id", sa.String(length=80), nullable=False),
        sa.Column("detector_kind", sa.String(length=16), nullable=False),
        sa.Column("seen_at", TS, nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("rssi", sa.Integer(), nullable=True),
        sa.Column("received_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_watch_detections")),
        sa.UniqueConstraint(
            "tenant_id", "detector_id", "detection_id", name="uq_watch_detections_id"
        ),
    )
    op.create_index("ix_watch_detections_seen", "watch_detections", ["seen_at"], unique=False)
    op.create_index(
        "ix_watch_detections_trail",
        "watch_detections",
        ["tenant_id", "tag_id", "seen_at"],
        unique=False,
    )
    op.create_table(
        "watch_devices",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("owner_username", sa.String(length=120), nullable=True),
        sa.Column("entity_id", sa.String(length=256), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("last_seen_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_watch_devices")),
    )
    op.create_table(
        "watch_flood_alerts",
        sa.Column("id", PK, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("entity_id", sa.String(length=256), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("previous_level", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("notification_id", sa.String(length=120), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_watch_flood_alerts")),
        sa.UniqueConstraint(
            "tenant_id", "notification_id", name="uq_watch_flood_alert_notification"
        ),
    )
    op.create_table(
        "watch_gauge_readings",
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=80), nullable=False),
        sa.Column("observed_at", TS, nullable=False),
        sa.Column("level_m", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_watch_gauge_readings")),
        sa.UniqueConstraint("tenant_id", "device_id", "observed_at", name="uq_watch_gauge_reading"),
    )
    op.create_table(
        "watch_guardians",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("tag_id", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=120), nullable=False),
        sa.Column("relation", sa.String(length=40), nullable=False),
        sa.Column("webhook_url", sa.String(length=500), nullable=True),
        sa.Column("added_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "tag_id", "username", name=op.f("pk_watch_guardians")),
    )
    op.create_table(
        "watch_missing_cases",
        sa.Column("id", PK, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("tag_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("opened_by", sa.String(length=160), nullable=False),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("closed_by", sa.String(length=160), nullable=True),
        sa.Column("closed_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_watch_missing_cases")),
    )
    op.create_index(
        "ix_watch_missing_tag", "watch_missing_cases", ["tenant_id", "tag_id"], unique=False
    )
    op.create_table(
        "watch_notifications",
        sa.Column("id", PK, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("tag_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("place_id", PK, nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("text_ja", sa.Text(), nullable=False),
        sa.Column("text_en", sa.Text(), nullable=False),
        sa.Column("read_by", JSONDoc, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_watch_notifications")),
    )
    op.create_index(
        "ix_watch_notifications_tag",
        "watch_notifications",
        ["tenant_id", "tag_id", "at"],
        unique=False,
    )
    op.create_table(
        "watch_outbox",
        sa.Column("id", PK, autoincrement=True, nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("payload", JSONDoc, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("delivered_at", TS, nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_watch_outbox")),
    )
    op.create_index(
        "ix_watch_outbox_due", "watch_outbox", ["delivered_at", "next_attempt_at"], unique=False
    )
    op.create_table(
        "watch_places",
        sa.Column("id", PK, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("tag_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("radius_m", sa.Float(), nullable=False),
        sa.Column("inside", sa.Boolean(), nullable=True),
        sa.Column("changed_at", TS, nullable=True),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_watch_places")),
    )
    op.create_index("ix_watch_places_tag", "watch_places", ["tenant_id", "tag_id"], unique=False)
    op.create_table(
        "watch_tags",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("claim_sha256", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=120), nullable=True),
        sa.Column("person_kind", sa.String(length=16), nullable=True),
        sa.Column("consent", JSONDoc, nullable=True),
        sa.Column("claimed_at", TS, nullable=True),
        sa.Column("not_seen_hours", sa.Float(), nullable=True),
        sa.Column("not_seen_alerted_at", TS, nullable=True),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name=op.f("pk_watch_tags")),
    )
    op.create_table(
        "watch_volunteer_days",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=120), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("detections", sa.Integer(), nullable=False),
        sa.Column("points_earned", sa.Integer(), nullable=False),
        sa.Column("points_awarded", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "username", "day", name=op.f("pk_watch_volunteer_days")
        ),
    )


def downgrade() -> None:
    op.drop_table("watch_volunteer_days")
    op.drop_table("watch_tags")
    op.drop_index("ix_watch_places_tag", table_name="watch_places")
    op.drop_table("watch_places")
    op.drop_index("ix_watch_outbox_due", table_name="watch_outbox")
    op.drop_table("watch_outbox")
    op.drop_index("ix_watch_notifications_tag", table_name="watch_notifications")
    op.drop_table("watch_notifications")
    op.drop_index("ix_watch_missing_tag", table_name="watch_missing_cases")
    op.drop_table("watch_missing_cases")
    op.drop_table("watch_guardians")
    op.drop_table("watch_gauge_readings")
    op.drop_table("watch_flood_alerts")
    op.drop_table("watch_devices")
    op.drop_index("ix_watch_detections_trail", table_name="watch_detections")
    op.drop_index("ix_watch_detections_seen", table_name="watch_detections")
    op.drop_table("watch_detections")
    op.drop_table("watch_beacons")
    op.drop_index("ix_watch_access_tag", table_name="watch_access_log")
    op.drop_table("watch_access_log")
