"""Series keys of the temporal history: found, created once, and looked up by index."""

from __future__ import annotations

from sqlalchemy import text

from kizuna.broker.temporal import history


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


def test_postgresql_looks_series_up_by_index_on_a_large_table(pg_engine):
    """A write batch's lookup must not scan the tenant's whole series list.

    With ``entity_id IN (...)`` PostgreSQL planned a scan of every series of the tenant,
    so each write batch got slower as history grew (seconds per batch at a few million).
    """
    with pg_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO temporal_series (tenant, entity_id, attr, dataset_id)"
                " SELECT 'a', 'urn:ngsi-ld:Sensor:' || n, 'https://example.org/' || a, ''"
                " FROM generate_series(1, 50000) n, (VALUES ('t'), ('h'), ('p'), ('w')) v(a)"
            )
        )
        conn.execute(text("ANALYZE temporal_series"))
        keys = [(f"urn:ngsi-ld:Sensor:{n}", "https://example.org/t", "") for n in range(1, 1001)]
        entity_ids, attrs, datasets = (list(c) for c in zip(*keys, strict=True))
        params = {"tenant": "a", "entity_ids": entity_ids, "attrs": attrs, "datasets": datasets}
        compiled = history._PG_SERIES_BY_KEY.compile(pg_engine)
        plan = "\n".join(
            r[0]
            for r in conn.exec_driver_sql(
                f"EXPLAIN {compiled.string}", compiled.construct_params(params)
            )
        )
        assert "uq_temporal_series_key" in plan, plan
        assert "Seq Scan on temporal_series" not in plan, plan
        assert len(history.series_pks(conn, "a", keys, create=False)) == 1000
