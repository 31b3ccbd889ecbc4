"""Credentials: API keys scoped to tenant and read/write, bearer tokens, OIDC, anonymous open data."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from kizuna.app import create_app
from kizuna.auth.service import Role, create_api_key, create_user
from kizuna.settings import Settings
from kizuna.storage import writer

BASE = "/ngsi-ld/v1"
ISSUER = "https://keycloak.example.test/realms/kizuna"


@pytest.fixture
def town(engine) -> str:
    return f"town{uuid.uuid4().hex[:8]}"


@pytest.fixture
def oidc_key():
    """A locally generated RSA key; its JWKS is served on loopback like a Keycloak realm."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public.update(kid="test-key", use="sig", alg="RS256")
    body = json.dumps({"keys": [public]}).encode()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield key, f"http://127.0.0.1:{server.server_port}/realms/kizuna/protocol/openid-connect/certs"
    server.shutdown()


@pytest.fixture
def app(engine, tmp_path, town, oidc_key):
    settings = Settings(
        data_dir=tmp_path,
        context_fetch_enabled=False,
        oidc_jwks_url=oidc_key[1],
        oidc_issuer=ISSUER,
        oidc_audience="kizuna",
    )
    application = create_app(settings, engine)
    directory = application.state.services.tenants
    directory.create_tenant(town, "テスト町", "Test town")
    core = application.state.services.broker.contexts.core
    directory.set_open_types(town, [core.expand("AED")])
    return application


def _keys(app, town):
    with writer(app.state.services.engine).begin() as conn:
        read = create_api_key(conn, town, False, "dashboard")
        write = create_api_key(conn, town, True, "gateway")
        other = create_api_key(conn, "default", True, "other town")
    return read, write, other


def test_api_keys_are_scoped_to_tenant_and_access(app, town):
    read, write, other = _keys(app, town)
    entity = {"id": "urn:ngsi-ld:Meter:1", "type": "Meter", "kwh": {"type": "Property", "value": 1}}
    with TestClient(app, headers={"NGSILD-Tenant": town}) as client:
        assert (
            client.post(f"{BASE}/entities", json=entity, headers={"X-API-Key": write}).status_code
            == 201
        )
        denied = client.post(f"{BASE}/entities", json=entity, headers={"X-API-Key": read})
        assert denied.status_code == 403 and denied.json()["title"]
        ok = client.get(
            f"{BASE}/entities/urn:ngsi-ld:Meter:1", headers={"Authorization": f"Bearer {read}"}
        )
        assert ok.status_code == 200
        assert (
            client.get(
                f"{BASE}/entities/urn:ngsi-ld:Meter:1", headers={"X-API-Key": other}
            ).status_code
            == 403
        )
        assert (
            client.get(
                f"{BASE}/entities/urn:ngsi-ld:Meter:1", headers={"X-API-Key": "kzk_nope_nope"}
            ).status_code
            == 401
        )
        assert (
            client.get(
                f"{BASE}/entities/urn:ngsi-ld:Meter:1", headers={"Authorization": "Basic abc"}
            ).status_code
            == 401
        )


def test_anonymous_reads_only_open_data(app, town):
    _, write, _ = _keys(app, town)
    with TestClient(app, headers={"NGSILD-Tenant": town}) as client:
        for entity in (
            {"id": "urn:ngsi-ld:AED:1", "type": "AED"},
            {"id": "urn:ngsi-ld:Meter:2", "type": "Meter"},
        ):
            assert (
                client.post(
                    f"{BASE}/entities", json=entity, headers={"X-API-Key": write}
                ).status_code
                == 201
            )
        assert client.get(f"{BASE}/entities/urn:ngsi-ld:AED:1").status_code == 200
        assert client.get(f"{BASE}/entities/urn:ngsi-ld:Meter:2").status_code == 404
        listed = client.get(f"{BASE}/entities", params={"type": "AED,Meter"}).json()
        assert [e["id"] for e in listed] == ["urn:ngsi-ld:AED:1"]
        assert client.get(f"{BASE}/types").json()["typeList"] == ["AED"]
        refused = client.post(f"{BASE}/entities", json={"id": "urn:ngsi-ld:AED:9", "type": "AED"})
        assert refused.status_code == 401
        assert refused.json()["type"] == "urn:kizuna:errors:Unauthorized"


def test_anonymous_readers_follow_links_to_open_data_only(app, town):
    _, write, _ = _keys(app, town)
    aed = {
        "id": "urn:ngsi-ld:AED:5",
        "type": "AED",
        "nearby": {"type": "Relationship", "object": "urn:ngsi-ld:AED:6"},
        "meter": {"type": "Relationship", "object": "urn:ngsi-ld:Meter:6"},
    }
    with TestClient(app, headers={"NGSILD-Tenant": town}) as client:
        for entity in (
            aed,
            {"id": "urn:ngsi-ld:AED:6", "type": "AED"},
            {"id": "urn:ngsi-ld:Meter:6", "type": "Meter"},
        ):
            created = client.post(f"{BASE}/entities", json=entity, headers={"X-API-Key": write})
            assert created.status_code == 201
        url = f"{BASE}/entities/urn:ngsi-ld:AED:5"
        shown = client.get(url, params={"join": "inline"}).json()
        assert shown["nearby"]["entity"]["id"] == "urn:ngsi-ld:AED:6"
        assert "entity" not in shown["meter"]
        flat = client.get(f"{BASE}/entities", params={"type": "AED", "join": "flat"}).json()
        assert sorted(e["id"] for e in flat) == ["urn:ngsi-ld:AED:5", "urn:ngsi-ld:AED:6"]
        # The writer, who may read every type, sees the meter linked too.
        full = client.get(url, params={"join": "inline"}, headers={"X-API-Key": write}).json()
        assert full["meter"]["entity"]["id"] == "urn:ngsi-ld:Meter:6"


def test_people_sign_in_for_a_bearer_token(app, town):
    with writer(app.state.services.engine).begin() as conn:
        create_user(
            conn, f"staff-{town}", "DX推進課", Role.MUNICIPAL_STAFF, "correct horse", [town]
        )
        create_user(conn, f"resident-{town}", "住民", Role.RESIDENT, "battery staple", [town])
    with TestClient(app, headers={"NGSILD-Tenant": town}) as client:
        assert (
            client.post(
                "/auth/token", json={"username": f"staff-{town}", "password": "wrong"}
            ).status_code
            == 401
        )
        token = client.post(
            "/auth/token", json={"username": f"staff-{town}", "password": "correct horse"}
        ).json()
        staff = {"Authorization": f"Bearer {token['access_token']}"}
        assert client.get("/auth/me", headers=staff).json()["role"] == "municipal_staff"
        created = client.post(
            f"{BASE}/entities", json={"id": "urn:ngsi-ld:Meter:3", "type": "Meter"}, headers=staff
        )
        assert created.status_code == 201
        # Staff may issue API keys for their own town only.
        assert (
            client.post(
                "/auth/api-keys", json={"tenant": town, "label": "x"}, headers=staff
            ).status_code
            == 201
        )
        assert (
            client.post(
                "/auth/api-keys", json={"tenant": "default", "label": "x"}, headers=staff
            ).status_code
            == 403
        )

        resident = client.post(
            "/auth/token", json={"username": f"resident-{town}", "password": "battery staple"}
        ).json()
        as_resident = {"Authorization": f"Bearer {resident['access_token']}"}
        assert (
            client.get(f"{BASE}/entities/urn:ngsi-ld:Meter:3", headers=as_resident).status_code
            == 200
        )
        write = client.post(
            f"{BASE}/entities",
            json={"id": "urn:ngsi-ld:Meter:4", "type": "Meter"},
            headers=as_resident,
        )
        assert write.status_code == 403


def test_keys_and_users_are_issued_for_existing_tenants_only(app, town):
    with writer(app.state.services.engine).begin() as conn:
        create_user(conn, f"admin-{town}", "管理者", Role.PLATFORM_ADMIN, "correct horse", [])
    with TestClient(app) as client:
        token = client.post(
            "/auth/token", json={"username": f"admin-{town}", "password": "correct horse"}
        ).json()["access_token"]
        admin = {"Authorization": f"Bearer {token}"}

        def issue(tenant: str) -> int:
            return client.post(
                "/auth/api-keys", json={"tenant": tenant, "label": "gateway"}, headers=admin
            ).status_code

        def add_user(tenant: str) -> int:
            body = {
                "username": f"u-{uuid.uuid4().hex[:8]}",
                "display_name": "職員",
                "role": "municipal_staff",
                "password": "long enough",
                "tenants": [tenant],
            }
            return client.post("/auth/users", json=body, headers=admin).status_code

        assert issue(town) == 201 and add_user(town) == 201
        assert issue("nowhere-town") == 404 and add_user("nowhere-town") == 404
        # Malformed, or too long for the column (a 500 on PostgreSQL before).
        assert issue("x" * 200) == 400 and add_user("x" * 200) == 400
        assert issue("bad name!") == 400


def _jwt(key, **claims) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "aud": "kizuna",
        "iat": now,
        "exp": now + 300,
        "sub": "u1",
        "preferred_username": "tanaka",
        **claims,
    }
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": "test-key"})


def test_oidc_tokens_from_the_configured_jwks(app, town, oidc_key):
    key, _ = oidc_key
    staff = _jwt(key, realm_access={"roles": ["municipal_staff"]}, kizuna_tenants=[town])
    with TestClient(app, headers={"NGSILD-Tenant": town}) as client:
        bearer = {"Authorization": f"Bearer {staff}"}
        assert client.get("/auth/me", headers=bearer).json()["subject"] == "oidc:tanaka"
        assert (
            client.post(
                f"{BASE}/entities",
                json={"id": "urn:ngsi-ld:Meter:5", "type": "Meter"},
                headers=bearer,
            ).status_code
            == 201
        )
        elsewhere = client.get(
            f"{BASE}/entities/urn:ngsi-ld:Meter:5", headers={**bearer, "NGSILD-Tenant": "default"}
        )
        assert elsewhere.status_code == 403

        expired = _jwt(key, realm_access={"roles": ["municipal_staff"]}, exp=int(time.time()) - 10)
        assert (
            client.get("/auth/me", headers={"Authorization": f"Bearer {expired}"}).status_code
            == 401
        )
        wrong_audience = _jwt(key, aud="another-app", realm_access={"roles": ["municipal_staff"]})
        assert (
            client.get(
                "/auth/me", headers={"Authorization": f"Bearer {wrong_audience}"}
            ).status_code
            == 401
        )
        forged = _jwt(
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            realm_access={"roles": ["platform_admin"]},
        )
        assert (
            client.get("/auth/me", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
        )
        no_role = _jwt(key, realm_access={"roles": ["offline_access"]})
        assert (
            client.get("/auth/me", headers={"Authorization": f"Bearer {no_role}"}).status_code
            == 403
        )
