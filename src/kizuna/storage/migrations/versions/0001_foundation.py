"""Foundation: tenancy, auth and the broker's entity store.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONDoc = sa.JSON().with_variant(JSONB(), "postgresql")
PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tenancy_regions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name_ja", sa.String(200), nullable=False),
        sa.Column("name_en", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "tenancy_tenants",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name_ja", sa.String(200), nullable=False),
        sa.Column("name_en", sa.String(200), nullable=False),
        sa.Column("region_id", sa.String(64), sa.ForeignKey("tenancy_regions.id"), nullable=True),
        sa.Column("lg_code", sa.String(6), nullable=True),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "tenancy_open_types",
        sa.Column(
            "tenant_id", sa.String(64), sa.ForeignKey("tenancy_tenants.id"), primary_key=True
        ),
        sa.Column("entity_type", sa.String(512), primary_key=True),
    )
    op.create_table(
        "tenancy_enabled_services",
        sa.Column(
            "tenant_id", sa.String(64), sa.ForeignKey("tenancy_tenants.id"), primary_key=True
        ),
        sa.Column("service", sa.String(64), primary_key=True),
    )
    op.bulk_insert(
        sa.table("tenancy_tenants", sa.column("id"), sa.column("name_ja"), sa.column("name_en")),
        [{"id": "default", "name_ja": "既定", "name_en": "Default"}],
    )

    op.create_table(
        "auth_users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(120), nullable=False, unique=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=True),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "auth_user_tenants",
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("auth_users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("tenant_id", sa.String(64), primary_key=True),
    )
    op.create_table(
        "auth_api_keys",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("can_write", sa.Boolean, nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("revoked_at", TS, nullable=True),
    )
    op.create_table(
        "auth_tokens",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("auth_users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    )

    op.create_table(
        "broker_entities",
        sa.Column("pk", PK, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("id", sa.String(1024), nullable=False),
        sa.Column("type", sa.String(1024), nullable=False),
        sa.Column("types", JSONDoc, nullable=False),
        sa.Column("scopes", JSONDoc, nullable=True),
        sa.Column("attrs", JSONDoc, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("modified_at", TS, nullable=False),
        sa.UniqueConstraint("tenant", "id", name="uq_broker_entities_tenant_id"),
    )
    op.create_index(
        "ix_broker_entities_tenant_type_id", "broker_entities", ["tenant", "type", "id"]
    )
    op.create_table(
        "broker_entity_types",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("type", sa.String(1024), primary_key=True),
        sa.Column(
            "entity_pk",
            PK,
            sa.ForeignKey("broker_entities.pk", ondelete="CASCADE"),
            primary_key=True,
        ),
    )
    op.create_index("ix_broker_entity_types_entity_pk", "broker_entity_types", ["entity_pk"])
    op.create_table(
        "broker_geo",
        sa.Column("pk", PK, primary_key=True, autoincrement=True),
        sa.Column(
            "entity_pk", PK, sa.ForeignKey("broker_entities.pk", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("attr", sa.String(1024), nullable=False),
        sa.Column("min_lon", sa.Float, nullable=False),
        sa.Column("min_lat", sa.Float, nullable=False),
        sa.Column("max_lon", sa.Float, nullable=False),
        sa.Column("max_lat", sa.Float, nullable=False),
        sa.Column("geometry", JSONDoc, nullable=False),
    )
    op.create_index("ix_broker_geo_entity_pk", "broker_geo", ["entity_pk"])
    if op.get_bind().dialect.name == "postgresql":
        # A GiST index over the bounding box, as PostgreSQL's built-in box type: no
        # extension needed. Queries use the same expression, so the index applies.
        op.execute(
            "CREATE INDEX ix_broker_geo_bbox ON broker_geo USING gist "
            "(box(point(min_lon, min_lat), point(max_lon, max_lat)))"
        )
    else:
        op.execute(
            "CREATE VIRTUAL TABLE broker_geo_rtree USING rtree(id, min_lon, max_lon, min_lat, max_lat)"
        )
        # The R*Tree follows broker_geo through triggers, so every writer keeps it exact.
        op.execute(
            "CREATE TRIGGER broker_geo_rtree_ins AFTER INSERT ON broker_geo BEGIN "
            "INSERT INTO broker_geo_rtree VALUES (new.pk, new.min_lon, new.max_lon, "
            "new.min_lat, new.max_lat); END"
        )
        op.execute(
            "CREATE TRIGGER broker_geo_rtree_del AFTER DELETE ON broker_geo BEGIN "
            "DELETE FROM broker_geo_rtree WHERE id = old.pk; END"
        )
    op.create_table(
        "broker_contexts",
        sa.Column("url", sa.String(2048), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("body", JSONDoc, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("Kizuna migrations are forward-only; restore from a backup")
