"""Transfer semantics on both dialects: idempotency, bad input, linked, two-phase, limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kizuna.ledger.schemas import AccountCreate, CurrencyCreate
from kizuna.problems import Problem

from .conftest import CUR, balances, new_id, tx

E = "urn:kizuna:errors:ledger:"


def test_same_id_same_body_returns_first_result_different_body_conflicts(ledger, tenant):
    t = tx("budget", "r1", 100, code="issue")
    [first] = ledger.post_transfers(tenant, [t])
    assert first.status == "created"
    [again] = ledger.post_transfers(tenant, [dict(t)])
    assert again.status == "exists" and again.transfer == first.transfer
    [clash] = ledger.post_transfers(tenant, [{**t, "amount": 101}])
    assert clash.status == "failed" and clash.error.type == E + "id-conflict"
    assert clash.error.status == 409
    # The same inside one batch, and an integer id naming the same UUID.
    n = 12345678901234567890
    out = ledger.post_transfers(
        tenant, [tx("budget", "r1", 5, id=n), tx("budget", "r1", 5, id=str(n))]
    )
    assert [r.status for r in out] == ["created", "exists"]
    assert balances(ledger, tenant)["r1"] == (105, 105)


@pytest.mark.parametrize(
    "change, code",
    [
        ({"debit_account": "nobody"}, "account-not-found"),
        ({"credit_account": "nobody"}, "account-not-found"),
        ({"currency": "chiiki"}, "currency-mismatch"),
        ({"currency": "nope"}, "currency-not-found"),
        ({"amount": 0}, "invalid-transfer"),
        ({"amount": -5}, "invalid-transfer"),
        ({"amount": 10**9}, "insufficient-funds"),
        ({"credit_account": "budget"}, "invalid-transfer"),
        ({"id": "not-a-uuid"}, "invalid-transfer"),
        ({"amount": "ten"}, "invalid-transfer"),
    ],
)
def test_bad_input_has_a_clear_code_and_moves_nothing(ledger, tenant, change, code):
    ledger.create_currency(
        tenant, CurrencyCreate(code="chiiki", name_ja="地域ポイント", kind="purchased")
    )
    before = balances(ledger, tenant)
    size = ledger.verify(tenant).transfers
    [r] = ledger.post_transfers(tenant, [{**tx("budget", "r1", 10), **change}])
    assert r.status == "failed" and r.error.type == E + code, r.error
    assert balances(ledger, tenant) == before
    with pytest.raises(Problem) as raised:
        ledger.post_transfer(tenant, {**tx("budget", "r1", 10), **change})
    assert raised.value.type == E + code
    report = ledger.verify(tenant)
    assert report.ok and report.transfers == size


def test_closed_account(ledger, tenant):
    ledger.close_account(tenant, "m1")
    [r] = ledger.post_transfers(tenant, [tx("budget", "m1", 1)])
    assert r.error.type == E + "account-closed"


def test_linked_chain_is_all_or_nothing(ledger, tenant):
    ok = ledger.post_transfers(
        tenant,
        [tx("budget", "r1", 100, linked=True), tx("r1", "m1", 100), tx("budget", "r2", 7)],
    )
    assert [r.status for r in ok] == ["created"] * 3
    before = balances(ledger, tenant)
    out = ledger.post_transfers(
        tenant,
        [
            tx("budget", "r1", 50, linked=True),
            tx("r1", "m1", 10_000, linked=True),  # over balance
            tx("budget", "r2", 1),
            tx("budget", "r2", 2),  # not in the chain
        ],
    )
    assert [r.status for r in out] == ["failed", "failed", "failed", "created"]
    assert out[0].error.type == E + "linked-event-failed"
    assert out[1].error.type == E + "insufficient-funds"
    after = balances(ledger, tenant)
    assert after["r1"] == before["r1"] and after["r2"][0] == before["r2"][0] + 2
    [open_chain] = ledger.post_transfers(tenant, [tx("budget", "r1", 1, linked=True)])
    assert open_chain.error.type == E + "linked-chain-open"
    assert ledger.verify(tenant).ok


def test_two_phase_post_void_and_timeout(ledger, tenant):
    ledger.post_transfers(tenant, [tx("budget", "r1", 300)])
    p = tx("r1", "m1", 200, pending=True, timeout_seconds=60)
    [pending] = ledger.post_transfers(tenant, [p])
    assert balances(ledger, tenant)["r1"] == (300, 100)
    [over] = ledger.post_transfers(tenant, [tx("r1", "m1", 150)])
    assert over.error.type == E + "insufficient-funds"
    [post] = ledger.post_transfers(
        tenant, [{"id": new_id(), "post_pending_id": p["id"], "amount": 120}]
    )
    assert post.status == "created" and post.transfer.amount == 120
    assert balances(ledger, tenant)["r1"] == (180, 180)
    assert balances(ledger, tenant)["m1"] == (120, 120)
    [twice] = ledger.post_transfers(tenant, [{"id": new_id(), "void_pending_id": p["id"]}])
    assert twice.error.type == E + "pending-already-resolved"
    # Lots: 80 of the 200 drawn went back to the wallet's lot.
    assert sum(lot.remaining for lot in ledger.lots(tenant, "r1")) == 180
    # A void gives everything back.
    q = tx("r1", "m1", 100, pending=True)
    ledger.post_transfers(tenant, [q])
    [void] = ledger.post_transfers(tenant, [{"id": new_id(), "void_pending_id": q["id"]}])
    assert void.transfer.kind == "void" and balances(ledger, tenant)["r1"] == (180, 180)
    # Timeout: posting after it fails; the job voids it.
    t = tx("r1", "m1", 50, pending=True, timeout_seconds=1)
    ledger.post_transfers(tenant, [t])
    later = datetime.now(UTC) + timedelta(seconds=5)
    voided = ledger.void_expired_pending(tenant, now=later)
    assert [r.status for r in voided] == ["created"]
    assert ledger.void_expired_pending(tenant, now=later) == []
    assert balances(ledger, tenant)["r1"] == (180, 180)
    [missing] = ledger.post_transfers(tenant, [{"id": new_id(), "post_pending_id": new_id()}])
    assert missing.error.type == E + "pending-not-found"
    assert ledger.verify(tenant).ok


def test_pending_and_post_in_one_batch(ledger, tenant):
    ledger.post_transfers(tenant, [tx("budget", "r1", 100)])
    p = tx("r1", "r2", 60, pending=True)
    out = ledger.post_transfers(tenant, [p, {"id": new_id(), "post_pending_id": p["id"]}])
    assert [r.status for r in out] == ["created", "created"]
    assert balances(ledger, tenant)["r2"] == (60, 60)
    assert ledger.verify(tenant).ok


def test_budget_cap_and_daily_thanks_limit(ledger, tenant):
    [cap] = ledger.post_transfers(tenant, [tx("issuance:gyosei", "budget", 90_001)])
    assert cap.error.type == E + "credit-cap-exceeded"
    ledger.post_transfers(tenant, [tx("budget", "r1", 2_000)])
    out = ledger.post_transfers(
        tenant, [tx("r1", "r2", 300), tx("r1", "r2", 200), tx("r1", "r2", 1), tx("r1", "m1", 900)]
    )
    assert [r.status for r in out] == ["created", "created", "failed", "created"]
    assert out[2].error.type == E + "daily-limit-exceeded"


def test_lots_fifo_expiry_job_and_what_expires_when(ledger, tenant):
    soon = datetime.now(UTC) + timedelta(days=10)
    later = datetime.now(UTC) + timedelta(days=100)
    ledger.post_transfers(
        tenant,
        [
            tx("budget", "r1", 100, expires_at=later.isoformat()),
            tx("budget", "r1", 50, expires_at=soon.isoformat()),
            tx("budget", "r1", 30),  # the currency's 365 days
        ],
    )
    assert [e.amount for e in ledger.expiring(tenant, "r1")] == [50, 100, 30]
    # Spending takes the earliest-expiring lot first; the receiver keeps those expiries.
    ledger.post_transfers(tenant, [tx("r1", "r2", 70)])
    assert [e.amount for e in ledger.expiring(tenant, "r1")] == [80, 30]
    assert [e.amount for e in ledger.expiring(tenant, "r2")] == [50, 20]
    # Eleven days on, r2's 50 and nothing of r1's have expired.
    eleven = datetime.now(UTC) + timedelta(days=11)
    swept = ledger.expire_lots(tenant, now=eleven)
    assert [(r.status, r.transfer.amount, r.transfer.debit_account) for r in swept] == [
        ("created", 50, "r2")
    ]
    assert ledger.expire_lots(tenant, now=eleven) == []
    assert balances(ledger, tenant)["expiry:gyosei"] == (50, 50)
    # Expired points cannot be spent even before the job runs.
    days200 = datetime.now(UTC) + timedelta(days=200)
    ledger.expire_lots(tenant, now=days200)
    assert balances(ledger, tenant)["r1"] == (30, 30)
    assert ledger.verify(tenant).ok


def test_accounts_and_currencies_are_idempotent(ledger, tenant):
    spec = AccountCreate(code="r1", currency=CUR, kind="resident", daily_send_limit=500)
    assert ledger.open_account(tenant, spec).code == "r1"
    with pytest.raises(Problem) as raised:
        ledger.open_account(tenant, AccountCreate(code="r1", currency=CUR, kind="merchant"))
    assert raised.value.type == E + "account-conflict"
    with pytest.raises(Problem) as raised:
        ledger.open_account(tenant, AccountCreate(code="x", currency="nope", kind="merchant"))
    assert raised.value.type == E + "currency-not-found"


def test_tenants_do_not_see_each_other(ledger, tenant):
    other = "other" + tenant
    ledger.create_currency(
        other, CurrencyCreate(code=CUR, name_ja="行政ポイント", kind="administrative")
    )
    [r] = ledger.post_transfers(other, [tx("budget", "r1", 1)])
    assert r.error.type == E + "account-not-found"
    assert ledger.list_transfers(other) == []
