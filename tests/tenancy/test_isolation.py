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


def test_tenant_administration_refuses_values_too_long_to_store(engine, tmp_path):
    app = create_app(
        Settings(data_dir=tmp_path, open_access=True, context_fetch_enabled=False), engine
    )
    town = f"t{uuid.uuid4().hex[:10]}"
    with TestClient(app) as client:
        long_name = {"id": town, "name_ja": "町" * 201, "name_en": "Town"}
        assert client.post("/tenancy/tenants", json=long_name).status_code == 400
        ok = {"id": town, "name_ja": "町", "name_en": "Town"}
        assert client.post("/tenancy/tenants", json=ok).status_code == 201
        types = {"types": ["T" * 600]}
        refused = client.put(f"/tenancy/tenants/{town}/open-types", json=types)
        assert refused.status_code == 400, refused.text


def test_a_value_the_database_refuses_is_a_bad_request(engine, tmp_path):
    """The safety net behind validation: a value too long for its column (PostgreSQL)."""
    from sqlalchemy import insert

    from kizuna.tenancy.models import regions

    app = create_app(
        Settings(data_dir=tmp_path, open_access=True, context_fetch_enabled=False), engine
    )

    @app.post("/test-only/regions")
    def unvalidated(name: str) -> None:
        with engine.begin() as conn:
            conn.execute(
                insert(regions).values(id="r" + uuid.uuid4().hex[:8], name_ja=name, name_en=name)
            )

    with TestClient(app) as client:
        r = client.post("/test-only/regions", params={"name": "x" * 300})
        if engine.dialect.name == "postgresql":
            assert r.status_code == 400, r.text
            assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
        else:  # SQLite does not check lengths
            assert r.status_code == 200
