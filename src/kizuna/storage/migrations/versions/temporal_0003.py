"""Temporal: room on temporal_daily's pages for in-place updates of the rollups (PostgreSQL).

Each instance with an observedAt updates its series' row of that day in temporal_daily (the
trigger of temporal_0002): a sensor reporting every 10 minutes rewrites the row 144 times a
day. On full pages every new row version went to another page and needed a new entry in the
primary key; with half of each page left free the new version stays on its page (a HOT
update, no index entry; earlier versions are pruned when the page fills). Measured on COPYs of
1,000 entities' reports (4 numeric instances each): the trigger's share fell from ~30 to ~19 µs
of server CPU an entity, the cost of a first report. The table holds one row per series and
day, so the doubled size is small (~10 MB for a year of 100 sensors' 4 values).

Pages written before this migration stay full until the table is rewritten (VACUUM FULL).

Revision ID: temporal_0003
Revises: temporal_0002
"""

from alembic import op

revision = "temporal_0003"
down_revision = "temporal_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE temporal_daily SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE temporal_daily RESET (fillfactor)")
