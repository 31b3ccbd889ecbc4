"""A Ledger on the dialect under test, with a currency, a budget and a few accounts."""

from __future__ import annotations

import uuid

import pytest

from kizuna.ledger.schemas import AccountCreate, CurrencyCreate
from kizuna.ledger.service import Ledger

CUR = "gyosei"


def new_id() -> str:
    return str(uuid.uuid4())


def tx(debit: str, credit: str, amount: int, **extra) -> dict:
    return {
        "id": extra.pop("id", None) or new_id(),
        "debit_account": debit,
        "credit_account": credit,
        "amount": amount,
        "currency": extra.pop("currency", CUR),
        **extra,
    }


@pytest.fixture
def ledger(engine, tmp_path) -> Ledger:
    return Ledger(engine, tmp_path)


@pytest.fixture
def tenant(ledger) -> str:
    """A fresh tenant with 行政ポイント (1-year expiry), a funded budget and wallets."""
    name = f"t{uuid.uuid4().hex[:10]}"
    ledger.create_currency(
        name,
        CurrencyCreate(code=CUR, name_ja="行政ポイント", kind="administrative", expiry_days=365),
    )
    for spec in (
        AccountCreate(code="budget", currency=CUR, kind="budget", max_credits=100_000),
        AccountCreate(code="r1", currency=CUR, kind="resident", daily_send_limit=500),
        AccountCreate(code="r2", currency=CUR, kind="resident"),
        AccountCreate(code="m1", currency=CUR, kind="merchant"),
    ):
        ledger.open_account(name, spec)
    [r] = ledger.post_transfers(name, [tx("issuance:gyosei", "budget", 10_000, code="fund")])
    assert r.status == "created"
    return name


def balances(ledger: Ledger, tenant: str) -> dict[str, tuple[int, int]]:
    return {a.code: (a.balance, a.available) for a in ledger.list_accounts(tenant)}
