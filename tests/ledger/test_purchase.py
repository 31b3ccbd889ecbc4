"""Buying 地域ポイント: yen + premium as one linked chain, idempotent ids, limits."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from kizuna.ledger.purchase import premium_of
from kizuna.ledger.schemas import AccountCreate, CurrencyCreate, PurchaseCreate, PurchaseRules
from kizuna.problems import Problem

from .conftest import new_id


@pytest.fixture
def shop(ledger):  # noqa: ANN001, ANN201
    """A tenant selling 地域ポイント at +10 %, 180-day expiry, with a 2,000 pt premium budget."""
    name = f"t{uuid.uuid4().hex[:10]}"
    ledger.create_currency(
        name,
        CurrencyCreate(
            code="rp", name_ja="地域ポイント", kind="purchased", expiry_days=180, premium_bp=1000
        ),
    )
    for spec in (
        AccountCreate(code="budget:premium", currency="rp", kind="budget"),
        AccountCreate(code="w1", currency="rp", kind="resident"),
        AccountCreate(code="m1", currency="rp", kind="merchant"),
    ):
        ledger.open_account(name, spec)
    [r] = ledger.post_transfers(
        name,
        [
            {
                "id": new_id(),
                "debit_account": "issuance:rp",
                "credit_account": "budget:premium",
                "amount": 2_000,
                "currency": "rp",
            }
        ],
    )
    assert r.ok
    return name


def buy(yen: int, id: str | None = None, **extra) -> PurchaseCreate:  # noqa: A002
    return PurchaseCreate(
        id=id or new_id(),
        currency="rp",
        account="w1",
        yen=yen,
        premium_account="budget:premium",
        **extra,
    )


def test_premium_rounds_down() -> None:
    assert premium_of(10_000, 1000) == 1_000
    assert premium_of(999, 1000) == 99
    assert premium_of(9, 1000) == 0
    assert premium_of(12_345, 2000) == 2_469


def test_purchase_credits_yen_and_premium_as_lots(ledger, shop) -> None:  # noqa: ANN001
    done = ledger.purchase(shop, buy(10_000, ref="R-1"))
    assert (done.yen, done.premium, done.points, done.created) == (10_000, 1_000, 11_000, True)
    assert [t.code for t in done.transfers] == ["purchase", "premium"]
    assert done.transfers[0].debit_account == "issuance:rp"
    assert done.transfers[0].linked and not done.transfers[1].linked
    assert ledger.get_account(shop, "w1").balance == 11_000
    assert ledger.get_account(shop, "budget:premium").balance == 1_000
    [lot_yen, lot_premium] = ledger.lots(shop, "w1")
    assert lot_yen.expires_at == lot_premium.expires_at == done.expires_at
    days = (done.expires_at - datetime.now(UTC)).days
    assert 180 <= days <= 181
    assert ledger.verify(shop).ok


def test_fixed_end_date_and_no_premium_for_small_amounts(ledger, shop) -> None:  # noqa: ANN001
    end = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    done = ledger.purchase(shop, buy(9, expires_at=end))
    assert (done.premium, done.points, len(done.transfers)) == (0, 9, 1)
    assert ledger.lots(shop, "w1")[0].expires_at == end


def test_same_id_same_body_is_the_first_result(ledger, shop) -> None:  # noqa: ANN001
    pid = new_id()
    first = ledger.purchase(shop, buy(5_000, id=pid))
    again = ledger.purchase(shop, buy(5_000, id=pid))
    assert again.created is False
    assert [t.id for t in again.transfers] == [t.id for t in first.transfers]
    assert ledger.get_account(shop, "w1").balance == 5_500
    with pytest.raises(Problem) as info:
        ledger.purchase(shop, buy(6_000, id=pid))
    assert info.value.type.endswith(":id-conflict")
    assert ledger.get_account(shop, "w1").balance == 5_500


def test_limits_per_purchase_and_per_year(ledger, shop) -> None:  # noqa: ANN001
    cur = ledger.set_purchase_rules(
        shop, "rp", PurchaseRules(max_yen_per_purchase=10_000, max_yen_per_year=15_000)
    )
    assert cur.purchase_rules.max_yen_per_year == 15_000
    with pytest.raises(Problem) as info:
        ledger.purchase(shop, buy(10_001))
    assert info.value.type.endswith(":purchase-limit-exceeded")
    pid = new_id()
    ledger.purchase(shop, buy(10_000, id=pid))
    with pytest.raises(Problem) as info:
        ledger.purchase(shop, buy(5_001))
    assert info.value.type.endswith(":purchase-limit-exceeded")
    assert ledger.purchase(shop, buy(10_000, id=pid)).created is False  # a retry still answers
    ledger.purchase(shop, buy(5_000))
    assert ledger.get_account(shop, "w1").balance == 16_500


def test_premium_budget_exhausted_moves_nothing(ledger, shop) -> None:  # noqa: ANN001
    ledger.purchase(shop, buy(15_000))  # premium 1,500 of 2,000
    with pytest.raises(Problem) as info:
        ledger.purchase(shop, buy(10_000))  # premium 1,000 > 500 left
    assert info.value.type.endswith(":premium-budget-exhausted")
    assert ledger.get_account(shop, "w1").balance == 16_500
    assert ledger.get_account(shop, "issuance:rp").balance == -17_000
    assert ledger.verify(shop).ok


def test_only_purchased_currencies_into_wallets(ledger, shop, tenant) -> None:  # noqa: ANN001
    with pytest.raises(Problem) as info:
        ledger.purchase(
            tenant, PurchaseCreate(id=new_id(), currency="gyosei", account="r1", yen=100)
        )
    assert info.value.type.endswith(":not-purchasable")
    with pytest.raises(Problem) as info:
        ledger.purchase(shop, buy(100).model_copy(update={"account": "m1"}))
    assert info.value.type.endswith(":invalid-request")
    with pytest.raises(Problem) as info:
        ledger.purchase(shop, buy(100).model_copy(update={"premium_account": None}))
    assert info.value.type.endswith(":invalid-request")
    with pytest.raises(ValueError):
        buy(0)


def test_spendable_counts_unexpired_unheld_points(ledger, shop) -> None:  # noqa: ANN001
    ledger.purchase(shop, buy(1_000))
    soon = datetime.now(UTC) + timedelta(seconds=1)
    ledger.purchase(shop, buy(100, expires_at=soon))
    [held] = ledger.post_transfers(
        shop,
        [
            {
                "id": new_id(),
                "debit_account": "w1",
                "credit_account": "m1",
                "amount": 50,  # drawn from the lot that expires first
                "currency": "rp",
                "pending": True,
            }
        ],
    )
    assert held.ok
    assert ledger.spendable(shop, ["w1", "nobody"]) == {"w1": 1_100 + 110 - 50, "nobody": 0}
    time.sleep(1.1)
    assert ledger.spendable(shop, ["w1"]) == {"w1": 1_100}
