"""実名 verification by an OIDC provider's identity claim (e.g. a Keycloak realm whose
users were checked against My Number card), as configured in settings."""

from __future__ import annotations

from fastapi.testclient import TestClient

from kizuna.app import create_app
from kizuna.points.schemas import ProgrammeCreate, ResidentCreate
from kizuna.settings import Settings
from tests.auth.test_auth import ISSUER, _jwt, oidc_key  # noqa: F401 - the fixture


def test_a_verified_identity_claim_verifies_the_resident(sqlite_engine, tmp_path, oidc_key):  # noqa: F811
    key, jwks = oidc_key
    settings = Settings(
        data_dir=tmp_path,
        oidc_jwks_url=jwks,
        oidc_issuer=ISSUER,
        oidc_audience="kizuna",
        points_oidc_verified_claim="verified_claims.verification.trust_framework",
    )
    app = create_app(settings, sqlite_engine)
    services = app.state.services
    services.tenants.create_tenant("takasago", "高砂市", "Takasago")
    services.points.setup_programme("takasago", ProgrammeCreate(name_ja="たかさご"))
    services.points.register_resident(
        "takasago", "tanaka", ResidentCreate(real_name="田中 一郎", kana="たなか", town="伊保")
    )
    base = {"realm_access": {"roles": ["resident"]}, "kizuna_tenants": ["takasago"]}
    path = "/points/api/residents/me/verify-oidc"
    with TestClient(app) as client:
        plain = _jwt(key, **base)
        h = {"Authorization": f"Bearer {plain}", "NGSILD-Tenant": "takasago"}
        refused = client.post(path, headers=h)
        assert refused.status_code == 403 and "本人確認" in refused.json()["detail"]
        assert not services.points.resident_for_user("takasago", "tanaka").verified
        claimed = _jwt(
            key, **base, verified_claims={"verification": {"trust_framework": "jp_mynumber"}}
        )
        h["Authorization"] = f"Bearer {claimed}"
        ok = client.post(path, headers=h)
        assert ok.status_code == 200 and ok.json()["verified_by"] == f"oidc:{ISSUER}"
        assert services.points.resident_for_user("takasago", "tanaka").verified
