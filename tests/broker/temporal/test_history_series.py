"""Series keys of the temporal history: found, created once, and looked up by index."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from kizuna.broker.changes import EntityChange, close_group, open_group
from kizuna.broker.ngsild import Entity
from kizuna.broker.temporal import history
from kizuna.storage.driver import fetch


def test_series_keys_are_created_once_and_found_again(engine):
    keys = [
        ("urn:ngsi-ld:Sensor:1", "https://example.org/temperature", ""),
        ("urn:ngsi-ld:Sensor:1", "https://example.org/temperature", "urn:ngsi-ld:Dataset:b"),
        ("urn:ngsi-ld:Sensor:2", "https://example.org/humidity", ""),
    ]
    with engine.begin() as conn:
        created = history.series_pks(conn, "a", keys)
        assert set(created) == set(keys)
        assert len(set(created.values())) == 3
        # Same keys again, mixed with a new one and the same key in another tenant.
        again = history.series_pks(conn, "a", keys + [("urn:ngsi-ld:Sensor:3", "x", "")])
        assert {k: again[k] for k in keys} == created
        other = history.series_pks(conn, "b", keys[:1])
        assert other[keys[0]] not in created.values()
        # Without ``create`` only existing series come back.
        assert history.series_pks(conn, "a", [("nope", "x", ""), keys[2]], create=False) == {
            keys[2]: created[keys[2]]
        }


@pytest.mark.parametrize("analysed", [False, True], ids=["stale statistics", "analysed"])
def test_postgresql_looks_series_up_by_index_on_a_large_table(pg_engine, analysed):
    """A write batch's lookup must not scan or hash the tenant's whole series list.

    With ``entity_id IN (...)``, and then with a plain join of the keys, PostgreSQL planned
    that whenever its statistics lagged behind the table (autovacuum off, or behind a bulk
    load), so each write batch got slower as history grew.
    """
    tenant = f"plan-{analysed}"
    with pg_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO temporal_series (tenant, entity_id, attr, dataset_id)"
                " SELECT :tenant, 'urn:ngsi-ld:Sensor:' || n, 'https://example.org/' || a, ''"
                " FROM generate_series(1, 50000) n, (VALUES ('t'), ('h'), ('p'), ('w')) v(a)"
            ),
            {"tenant": tenant},
        )
        if analysed:
            conn.execute(text("ANALYZE temporal_series"))
        keys = [(f"urn:ngsi-ld:Sensor:{n}", "https://example.org/t", "") for n in range(1, 1001)]
        ids = history.joined_text(sorted({key[0] for key in keys}))
        explain = f"EXPLAIN {history._PG_SERIES_OF_ENTITIES}"
        plan = "\n".join(r[0] for r in fetch(conn, explain, (ids, tenant)))
        assert "Index Scan using uq_temporal_series_key" in plan, plan
        assert "Hash" not in plan and "Seq Scan" not in plan and "Bitmap" not in plan, plan
        assert len(history.series_pks(conn, tenant, keys, create=False)) == 1000


def _change(entity_id: str, value: float | None, at: datetime, before=None) -> EntityChange:  # noqa: ANN001
    after = (
        None
        if value is None
        else Entity(
            entity_id,
            ["https://example.org/Sensor"],
            None,
            {TEMP: [{"type": "Property", "value": value}]},
        )
    )
    return EntityChange("a", entity_id, before, after, at)


TEMP = "https://example.org/temperature"


def _values(conn, entity_id: str) -> list:  # noqa: ANN001
    rows = conn.execute(
        select(history.instances.c.instance, history.instances.c.modified_at)
        .join(history.series, history.series.c.pk == history.instances.c.series_pk)
        .where(history.series.c.entity_id == entity_id)
        .order_by(history.instances.c.pk)
    ).all()
    return [r.instance.get("value") for r in rows]


def test_a_write_group_records_its_history_once_at_its_end_in_order(engine):
    recorder = history.HistoryRecorder()
    t0 = datetime(2026, 11, 23, 9, tzinfo=UTC)
    created = _change("urn:s:1", 20.0, t0)
    updated = _change("urn:s:1", 21.5, t0 + timedelta(seconds=1), before=created.after)
    other = _change("urn:s:2", 5.0, t0)
    doomed = _change("urn:s:3", 1.0, t0)
    with engine.begin() as conn:
        open_group(conn)
        for change in (created, updated, other, doomed):
            recorder(conn, [change])
        recorder(conn, [_change("urn:s:3", None, t0 + timedelta(seconds=2), before=doomed.after)])
        assert _values(conn, "urn:s:1") == []  # queued, not yet written
        close_group(conn, flush=True)
        assert _values(conn, "urn:s:1") == [20.0, 21.5]
        assert _values(conn, "urn:s:2") == [5.0]
        # Created then deleted in the same group: the deletion took its history with it.
        assert _values(conn, "urn:s:3") == []
        # Dropped work (an abandoned transaction) writes nothing.
        open_group(conn)
        recorder(conn, [_change("urn:s:4", 3.0, t0)])
        close_group(conn, flush=False)
        assert _values(conn, "urn:s:4") == []


def test_a_created_entity_whose_series_exist_records_into_them(engine):
    """A created entity's series are written without a look-up; if some exist already
    (history the temporal API kept of an entity that was created again), the write falls
    back to finding them, and the new ones are still created."""
    humidity = "https://example.org/humidity"
    recorder = history.HistoryRecorder()
    t0 = datetime(2026, 11, 23, 9, tzinfo=UTC)
    with engine.begin() as conn:
        kept = history.series_pks(conn, "a", [("urn:s:7", TEMP, "")])
        attrs = {
            TEMP: [{"type": "Property", "value": 20.0}],
            humidity: [{"type": "Property", "value": 0.5}],
        }
        entity = Entity("urn:s:7", ["https://example.org/Sensor"], None, attrs)
        recorder(conn, [EntityChange("a", "urn:s:7", None, entity, t0)])
        temperature, moist = ("urn:s:7", TEMP, ""), ("urn:s:7", humidity, "")
        found = history.series_pks(conn, "a", [temperature, moist], create=False)
        assert found[temperature] == kept[temperature]
        rows = conn.execute(
            select(history.instances.c.series_pk, history.instances.c.num_value).where(
                history.instances.c.series_pk.in_(list(found.values()))
            )
        ).all()
        assert sorted(rows) == sorted([(found[temperature], 20.0), (found[moist], 0.5)])
