"""Temporal: per-series daily rollups of the numeric history, kept by triggers (PostgreSQL).

One row per (series, UTC day) with count, numeric count, exact sum, min, max and exact
sum of squares of the instances observed that day. Statement-level triggers with
transition tables keep it exact on every write to temporal_instances, whatever the path
(COPY, entity writes, instance modify/delete, attribute and entity deletes, retention):
inserts add their day totals (sums are NUMERIC, so the order of addition cannot change a
result); deletes and updates recount the days they touched from the instances. SQLite
has no rollups: aggregation there always reads the instances.

Revision ID: temporal_0002
Revises: temporal_0001
"""

from alembic import op

revision = "temporal_0002"
down_revision = "temporal_0001"
branch_labels = None
depends_on = None

_DAY = "date_bin('1 day', observed_at, TIMESTAMPTZ '1970-01-01 00:00:00+00')"
# The day totals of a set of instance rows; float8 -> numeric per value, as the raw
# aggregation query does, so both give the same sums.
_TOTALS = (
    "count(*), count(num_value), sum(num_value::numeric), min(num_value), max(num_value), "
    "sum(num_value::numeric * num_value::numeric)"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE TABLE temporal_daily (
            series_pk BIGINT NOT NULL,
            day TIMESTAMPTZ NOT NULL,
            n BIGINT NOT NULL,
            n_num BIGINT NOT NULL,
            total NUMERIC,
            low DOUBLE PRECISION,
            high DOUBLE PRECISION,
            squares NUMERIC,
            PRIMARY KEY (series_pk, day)
        )
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION temporal_daily_add() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO temporal_daily AS d (series_pk, day, n, n_num, total, low, high, squares)
            SELECT series_pk, {_DAY}, {_TOTALS}
            FROM added WHERE observed_at IS NOT NULL GROUP BY 1, 2
            ON CONFLICT (series_pk, day) DO UPDATE SET
                n = d.n + excluded.n,
                n_num = d.n_num + excluded.n_num,
                total = coalesce(d.total + excluded.total, d.total, excluded.total),
                low = least(d.low, excluded.low),
                high = greatest(d.high, excluded.high),
                squares = coalesce(d.squares + excluded.squares, d.squares, excluded.squares);
            RETURN NULL;
        END $$
        """
    )
    # min and max cannot be taken back: a day that lost or changed instances is recounted.
    op.execute(
        f"""
        CREATE FUNCTION temporal_daily_recount(pks BIGINT[], days TIMESTAMPTZ[])
        RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM temporal_daily d
            USING unnest(pks, days) AS t(series_pk, day)
            WHERE d.series_pk = t.series_pk AND d.day = t.day;
            INSERT INTO temporal_daily (series_pk, day, n, n_num, total, low, high, squares)
            SELECT i.series_pk, t.day, {_TOTALS}
            FROM unnest(pks, days) AS t(series_pk, day)
            JOIN temporal_instances i
              ON i.series_pk = t.series_pk
             AND i.observed_at >= t.day AND i.observed_at < t.day + interval '24 hours'
            GROUP BY 1, 2;
        END $$
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION temporal_daily_removed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM temporal_daily_recount(array_agg(series_pk), array_agg(day))
            FROM (SELECT DISTINCT series_pk, {_DAY} AS day FROM removed
                  WHERE observed_at IS NOT NULL) AS touched;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION temporal_daily_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM temporal_daily_recount(array_agg(series_pk), array_agg(day))
            FROM (SELECT series_pk, {_DAY} AS day FROM removed WHERE observed_at IS NOT NULL
                  UNION
                  SELECT series_pk, {_DAY} FROM added WHERE observed_at IS NOT NULL) AS touched;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER temporal_daily_on_insert AFTER INSERT ON temporal_instances "
        "REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION temporal_daily_add()"
    )
    op.execute(
        "CREATE TRIGGER temporal_daily_on_delete AFTER DELETE ON temporal_instances "
        "REFERENCING OLD TABLE AS removed "
        "FOR EACH STATEMENT EXECUTE FUNCTION temporal_daily_removed()"
    )
    op.execute(
        "CREATE TRIGGER temporal_daily_on_update AFTER UPDATE ON temporal_instances "
        "REFERENCING OLD TABLE AS removed NEW TABLE AS added "
        "FOR EACH STATEMENT EXECUTE FUNCTION temporal_daily_changed()"
    )
    op.execute(
        f"INSERT INTO temporal_daily (series_pk, day, n, n_num, total, low, high, squares) "
        f"SELECT series_pk, {_DAY}, {_TOTALS} FROM temporal_instances "
        f"WHERE observed_at IS NOT NULL GROUP BY 1, 2"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for trigger in ("on_insert", "on_delete", "on_update"):
        op.execute(f"DROP TRIGGER temporal_daily_{trigger} ON temporal_instances")
    op.execute("DROP FUNCTION temporal_daily_changed()")
    op.execute("DROP FUNCTION temporal_daily_removed()")
    op.execute("DROP FUNCTION temporal_daily_recount(BIGINT[], TIMESTAMPTZ[])")
    op.execute("DROP FUNCTION temporal_daily_add()")
    op.execute("DROP TABLE temporal_daily")
