"""The REST surface: /ledger/... with tenancy, roles and ProblemDetails."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

from kizuna.app import create_app
from kizuna.settings import Settings

E = "urn:kizuna:errors:ledger:"


def make_client(engine, tmp_path, open_access=True) -> TestClient:
    settings = Settings(
        data_dir=tmp_path,
        open_access=open_access,
        context_fetch_enabled=False,
        ledger_checkpoint_seconds=0,
        ledger_jobs_seconds=0,
    )
    return TestClient(create_app(settings, engine))


def test_rest_flow(engine, tmp_path):
    tenant = f"h{uuid.uuid4().hex[:8]}"
    c = make_client(engine, tmp_path)
    h = {"NGSILD-Tenant": tenant}
    # Platform admins create the tenant implicitly on first write.
    r = c.post(
        "/ledger/currencies",
        headers=h,
        json={"code": "chiiki", "name_ja": "地域ポイント", "kind": "purchased", "premium_bp": 1000},
    )
    assert r.status_code == 201, r.text
    for code, kind in [("resident:1", "resident"), ("shop:1", "merchant")]:
        assert (
            c.post(
                "/ledger/accounts",
                headers=h,
                json={"code": code, "currency": "chiiki", "kind": kind},
            ).status_code
            == 201
        )
    tid = str(uuid.uuid4())
    body = {
        "id": tid,
        "debit_account": "issuance:chiiki",
        "credit_account": "resident:1",
        "amount": 11000,
        "currency": "chiiki",
        "code": "purchase",
    }
    first = c.post("/ledger/transfers", headers=h, json=body)
    assert first.status_code == 201, first.text
    again = c.post("/ledger/transfers", headers=h, json=body)
    assert again.status_code == 200 and again.json() == first.json()
    clash = c.post("/ledger/transfers", headers=h, json={**body, "amount": 1})
    assert clash.status_code == 409 and clash.json()["type"] == E + "id-conflict"
    over = c.post(
        "/ledger/transfers",
        headers=h,
        json={
            "id": str(uuid.uuid4()),
            "debit_account": "resident:1",
            "credit_account": "shop:1",
            "amount": 99999,
            "currency": "chiiki",
        },
    )
    assert over.status_code == 422 and over.json()["type"] == E + "insufficient-funds"
    bad = c.post("/ledger/transfers", headers=h, json={"id": "x", "amount": 1})
    assert bad.status_code == 400 and bad.json()["type"] == E + "invalid-transfer"
    batch = c.post(
        "/ledger/transfers",
        headers=h,
        json=[
            {
                "id": str(uuid.uuid4()),
                "debit_account": "resident:1",
                "credit_account": "shop:1",
                "amount": 500,
                "currency": "chiiki",
                "code": "payment",
            },
            {
                "id": str(uuid.uuid4()),
                "debit_account": "resident:1",
                "credit_account": "nobody",
                "amount": 5,
                "currency": "chiiki",
            },
        ],
    )
    assert batch.status_code == 200
    assert [x["status"] for x in batch.json()] == ["created", "failed"]
    assert batch.json()[1]["error"]["type"] == E + "account-not-found"
    acct = c.get("/ledger/accounts/resident:1", headers=h).json()
    assert acct["balance"] == 10500
    assert c.get("/ledger/accounts/resident:1/expiring", headers=h).json() == []
    assert len(c.get("/ledger/accounts/shop:1/transfers", headers=h).json()) == 1
    rc = c.get(f"/ledger/transfers/{tid}/receipt", headers=h)
    assert rc.status_code == 200 and rc.json()["index"] == 0
    cps = c.get("/ledger/checkpoints", headers=h).json()
    assert cps and cps[0]["size"] >= 1
    assert c.get("/ledger/keys", headers=h).json()["algorithm"] == "Ed25519"
    assert c.get("/ledger/accounts/nobody", headers=h).status_code == 404
    # Another tenant sees none of it.
    other = {"NGSILD-Tenant": "other" + tenant}
    c.post(
        "/ledger/currencies",
        headers=other,
        json={"code": "chiiki", "name_ja": "地域ポイント", "kind": "purchased"},
    )
    assert c.get("/ledger/accounts/resident:1", headers=other).status_code == 404
    assert c.get(f"/ledger/transfers/{tid}", headers=other).status_code == 404


def test_anonymous_and_read_only_callers_are_refused(engine, tmp_path):
    c = make_client(engine, tmp_path, open_access=False)
    assert c.get("/ledger/accounts").status_code == 401
    r = c.post("/ledger/transfers", json={"id": str(uuid.uuid4())})
    assert r.status_code == 401


def test_rest_purchase_and_rules(engine, tmp_path):
    tenant = f"h{uuid.uuid4().hex[:8]}"
    c = make_client(engine, tmp_path)
    h = {"NGSILD-Tenant": tenant}
    c.post(
        "/ledger/currencies",
        headers=h,
        json={"code": "rp", "name_ja": "地域ポイント", "kind": "purchased", "premium_bp": 1000},
    )
    for code, kind in [("w", "resident"), ("budget:premium", "budget")]:
        c.post("/ledger/accounts", headers=h, json={"code": code, "currency": "rp", "kind": kind})
    c.post(
        "/ledger/transfers",
        headers=h,
        json={
            "id": str(uuid.uuid4()),
            "debit_account": "issuance:rp",
            "credit_account": "budget:premium",
            "amount": 5000,
            "currency": "rp",
        },
    )
    rules = c.put(
        "/ledger/currencies/rp/purchase-rules", headers=h, json={"max_yen_per_purchase": 20000}
    )
    assert rules.json()["purchase_rules"]["max_yen_per_purchase"] == 20000
    body = {
        "id": str(uuid.uuid4()),
        "currency": "rp",
        "account": "w",
        "yen": 10000,
        "premium_account": "budget:premium",
    }
    first = c.post("/ledger/purchases", headers=h, json=body)
    assert first.status_code == 201, first.text
    assert (first.json()["points"], first.json()["premium"]) == (11000, 1000)
    again = c.post("/ledger/purchases", headers=h, json=body)
    assert again.status_code == 200 and again.json()["created"] is False
    over = c.post(
        "/ledger/purchases", headers=h, json={**body, "id": str(uuid.uuid4()), "yen": 20001}
    )
    assert over.status_code == 422 and over.json()["type"] == E + "purchase-limit-exceeded"
    zero = c.post("/ledger/purchases", headers=h, json={**body, "yen": 0})
    assert zero.status_code in (400, 422)
    assert c.get("/ledger/accounts/w", headers=h).json()["balance"] == 11000
