"""Anything written in one tenant is invisible and untouchable from another, via every endpoint."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

from kizuna.app import create_app
from kizuna.settings import Settings

BASE = "/ngsi-ld/v1"
ENTITY = {
    "id": "urn:ngsi-ld:AED:secret",
    "type": "AED",
    "note": {"type": "Property", "value": "tenant A only"},
    "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [134.8, 34.75]}},
}


def test_tenants_are_isolated_through_every_endpoint(engine, tmp_path):
    app = create_app(
        Settings(data_dir=tmp_path, open_access=True, context_fetch_enabled=False), engine
    )
    a, b = f"a{uuid.uuid4().hex[:10]}", f"b{uuid.uuid4().hex[:10]}"
    with (
        TestClient(app, headers={"NGSILD-Tenant": a}) as in_a,
        TestClient(app, headers={"NGSILD-Tenant": b}) as in_b,
    ):
        assert in_a.post(f"{BASE}/entities", json=ENTITY).status_code == 201
        # Tenant B exists too, with an entity of its own.
        assert (
            in_b.post(
                f"{BASE}/entities", json={"id": "urn:ngsi-ld:AED:other", "type": "AED"}
            ).status_code
            == 201
        )
        url = f"{BASE}/entities/{ENTITY['id']}"

        assert in_b.get(url).status_code == 404
        for params in (
            {"type": "AED"},
            {"type": "AED", "id": ENTITY["id"]},
            {"type": "AED", "idPattern": ".*secret"},
            {"q": "note"},
            {"attrs": "note"},
            {
                "georel": "near;maxDistance==1000",
                "geometry": "Point",
                "coordinates": "[134.8,34.75]",
            },
        ):
            found = in_b.get(f"{BASE}/entities", params=params).json()
            assert ENTITY["id"] not in [e["id"] for e in found], params
        post_query = in_b.post(
            f"{BASE}/entityOperations/query", json={"type": "Query", "entities": [{"type": "AED"}]}
        )
        assert [e["id"] for e in post_query.json()] == ["urn:ngsi-ld:AED:other"]
        assert "note" not in in_b.get(f"{BASE}/attributes").json()["attributeList"]
        assert in_b.get(f"{BASE}/attributes/note").status_code == 404

        assert (
            in_b.patch(
                f"{url}/attrs", json={"note": {"type": "Property", "value": "x"}}
            ).status_code
            == 404
        )
        assert in_b.patch(f"{url}/attrs/note", json={"value": "x"}).status_code == 404
        assert (
            in_b.post(f"{url}/attrs", json={"x": {"type": "Property", "value": 1}}).status_code
            == 404
        )
        assert in_b.put(url, json={"type": "AED"}).status_code == 404
        assert in_b.patch(url, json={"note": "x"}).status_code == 404
        assert in_b.delete(f"{url}/attrs/note").status_code == 404
        assert in_b.delete(url).status_code == 404
        r = in_b.post(f"{BASE}/entityOperations/delete", json=[ENTITY["id"]])
        assert r.status_code == 207
        r = in_b.post(
            f"{BASE}/entityOperations/update", json=[{"id": ENTITY["id"], "note": {"value": "x"}}]
        )
        assert r.status_code == 207
        r = in_b.post(
            f"{BASE}/entityOperations/merge", json=[{"id": ENTITY["id"], "note": {"value": "x"}}]
        )
        assert r.status_code == 207
        # An upsert of the same id in B creates B's own entity and leaves A's alone.
        r = in_b.post(
            f"{BASE}/entityOperations/upsert",
            json=[{**ENTITY, "note": {"type": "Property", "value": "B"}}],
        )
        assert r.status_code == 201

        assert in_a.get(url, params={"options": "keyValues"}).json()["note"] == "tenant A only"
        assert in_b.get(url, params={"options": "keyValues"}).json()["note"] == "B"
        types_a = in_a.get(f"{BASE}/types").json()["typeList"]
        assert types_a == ["AED"]


def test_unknown_tenant_is_refused_for_reads(engine, tmp_path):
    app = create_app(
        Settings(data_dir=tmp_path, open_access=True, context_fetch_enabled=False), engine
    )
    with TestClient(app) as client:
        r = client.get(
            f"{BASE}/entities",
            params={"type": "AED"},
            headers={"NGSILD-Tenant": f"none{uuid.uuid4().hex[:6]}"},
        )
        assert r.status_code == 404
        assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/NonexistentTenant"
        bad = client.get(
            f"{BASE}/entities", params={"type": "AED"}, headers={"NGSILD-Tenant": "bad tenant!"}
        )
        assert bad.status_code == 400
