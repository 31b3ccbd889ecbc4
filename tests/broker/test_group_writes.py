"""Concurrent single-entity writes share group commits: each keeps its own effect.

The group commit locks and reads the group's entities once and writes their updates once
at the end, so these tests make many requests on the same entities at the same time and
check the entity, its history and its index rows afterwards.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from sqlalchemy import func, select

from kizuna.auth.service import SYSTEM
from kizuna.broker import store
from kizuna.broker.changes import close_group, open_group
from kizuna.broker.models import geo_index
from kizuna.broker.ngsild import Entity
from kizuna.tenancy.service import TenantScope

BASE = "/ngsi-ld/v1"
EID = "urn:ngsi-ld:Sensor:group"
ATTRS = [f"reading{n:02d}" for n in range(16)]
ROUNDS = 8


def _create(client, entity_id, **attrs):
    body = {"id": entity_id, "type": "Sensor", **attrs}
    assert client.post(f"{BASE}/entities", json=body).status_code == 201


def test_concurrent_updates_of_one_entity_all_land_with_their_history(client):
    _create(client, EID, **{a: {"type": "Property", "value": -1} for a in ATTRS})

    def writer(attr):
        for value in range(ROUNDS):
            r = client.patch(f"{BASE}/entities/{EID}/attrs/{attr}", json={"value": value})
            assert r.status_code == 204, r.text

    with ThreadPoolExecutor(len(ATTRS)) as pool:
        list(pool.map(writer, ATTRS))

    entity = client.get(f"{BASE}/entities/{EID}", params={"options": "keyValues"}).json()
    assert {a: entity[a] for a in ATTRS} == {a: ROUNDS - 1 for a in ATTRS}
    history = client.get(
        f"{BASE}/temporal/entities/{EID}", params={"lastN": "100", "options": "temporalValues"}
    ).json()
    for attr in ATTRS:
        values = [v for v, _ in history[attr]["values"]]
        assert values == [-1, *range(ROUNDS)], attr


def test_an_update_racing_a_delete_leaves_no_index_rows(client, engine):
    point = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [134.79, 34.76]}}
    _create(client, EID, location=point)

    def move(n):
        moved = {"type": "Point", "coordinates": [134.79 + n / 1000, 34.76]}
        r = client.patch(f"{BASE}/entities/{EID}/attrs/location", json={"value": moved})
        assert r.status_code in (204, 404), r.text

    with ThreadPoolExecutor(8) as pool:
        moves = [pool.submit(move, n) for n in range(40)]
        deleted = pool.submit(client.delete, f"{BASE}/entities/{EID}")
        [m.result() for m in moves]
    assert deleted.result().status_code == 204

    assert client.get(f"{BASE}/entities/{EID}").status_code == 404
    tenant = client.headers["NGSILD-Tenant"]
    with engine.connect() as conn:
        left = conn.execute(
            select(func.count()).select_from(geo_index).where(geo_index.c.tenant == tenant)
        ).scalar_one()
    assert left == 0


def _located(lon: float) -> dict:
    point = {"type": "Point", "coordinates": [lon, 34.76]}
    return {"https://example.org/location": [{"type": "GeoProperty", "value": point}]}


def test_in_one_group_an_update_then_a_delete_of_the_entity_leaves_nothing(engine):
    """The order the group commit runs them in: the queued update must not be written
    after the delete (it would put the entity's geo rows back)."""
    scope = TenantScope("group-test", SYSTEM, True)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        store.insert_many(conn, scope, [Entity(EID, ["Sensor"], None, _located(134.79))], now)
    with engine.begin() as conn:
        open_group(conn)
        store.hold(conn, [(scope.tenant, EID)])
        old = store.load(conn, scope, EID, lock=True)
        store.update_many(conn, scope, [(old, Entity(EID, ["Sensor"], None, _located(135)))], now)
        store.delete_many(conn, scope, [store.load(conn, scope, EID, lock=True)])
        assert store.load(conn, scope, EID, lock=True) is None
        store.release(conn)
        close_group(conn, flush=True)
    with engine.connect() as conn:
        left = conn.execute(
            select(func.count()).select_from(geo_index).where(geo_index.c.tenant == scope.tenant)
        ).scalar_one()
    assert left == 0
