"""A write batch locks its entities one index probe each, whatever PostgreSQL's statistics
say (the write paths: group commits and batch upserts / updates / merges / deletes).

Not covered: unlocked lookups (batch create, linked entities), for which PostgreSQL 15 with
stale statistics may still choose the (tenant, type, id) index (see store._load_many)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from kizuna.auth.service import SYSTEM
from kizuna.broker import store
from kizuna.storage.driver import fetch
from kizuna.tenancy.service import TenantScope


@pytest.mark.parametrize("analysed", [False, True], ids=["stale statistics", "analysed"])
def test_postgresql_locks_a_batchs_entities_one_index_probe_each(pg_engine, analysed, monkeypatch):
    tenant = f"lookup-{analysed}"
    with pg_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO broker_entities"
                " (tenant, id, type, types, attrs, created_at, modified_at)"
                " SELECT :tenant, 'urn:ngsi-ld:Sensor:' || n, 'Sensor', '[\"Sensor\"]', '{}',"
                " now(), now() FROM generate_series(1, 20000) n"
            ),
            {"tenant": tenant},
        )
        if analysed:
            conn.execute(text("ANALYZE broker_entities"))
    ids = [f"urn:ngsi-ld:Sensor:{n}" for n in range(1, 20001, 100)] + ["urn:ngsi-ld:Sensor:none"]
    seen: list[tuple[str, tuple]] = []

    def record(conn, sql, params):  # noqa: ANN001
        seen.append((sql, params))
        return fetch(conn, sql, params)

    monkeypatch.setattr(store, "fetch", record)
    with pg_engine.begin() as conn:
        found = store.load_many(conn, TenantScope(tenant, SYSTEM, True), ids, lock=True)
        [(statement, parameters)] = seen
        plan = "\n".join(r[0] for r in fetch(conn, f"EXPLAIN {statement}", parameters))
    assert sorted(found) == sorted(ids[:-1])
    assert "Index Scan using uq_broker_entities_tenant_id" in plan, plan
    assert "Hash" not in plan and "Seq Scan" not in plan and "Bitmap" not in plan, plan
