"""地域ポイント in the points module on both dialects: counter sales (receipt number as the
idempotency key, limits, Japanese refusals with nothing moved), spending order at shops
(administrative first), refunds, settlement and the dashboard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kizuna.points.schemas import CouponCreate, PaymentIn, PurchaseProgrammeCreate, SaleIn
from kizuna.points.service import JST, PointsError, purchased_wallet, today
from tests.points.conftest import new_id
from tests.points.test_service import _fund


@pytest.fixture
def rp(points, tenant, shop):  # noqa: ANN001, ANN201
    """地域ポイント at +10 %, 180 days, ≤ ¥50,000 a purchase, ≤ ¥100,000 a year, ¥8,000 premium budget."""
    return points.setup_purchase(tenant, PurchaseProgrammeCreate(premium_budget=8_000))


def _rp(points, resident) -> int:  # noqa: ANN001
    return points.spendable(resident.tenant, purchased_wallet(resident, "rp"))


def _pt(points, resident) -> int:  # noqa: ANN001
    return points.ledger.get_account(resident.tenant, resident.wallet).available


def _sell(points, tenant, resident, yen, receipt=None):  # noqa: ANN001, ANN201
    spec = SaleIn(receipt=receipt or f"R-{new_id()[:8]}", member_code=resident.member_code, yen=yen)
    return points.sell(tenant, spec)


def test_sale_credits_yen_plus_premium_once_per_receipt(tenant, points, rp, hanako):
    sale = _sell(points, tenant, hanako, 10_000, "R-0001")
    assert (sale.purchase.yen, sale.purchase.premium, sale.purchase.points) == (
        10_000,
        1_000,
        11_000,
    )
    assert not sale.replay and _rp(points, hanako) == 11_000 and _pt(points, hanako) == 0
    days = (sale.purchase.expires_at.astimezone(JST).date() - today()).days
    assert days == 181  # to the end of the 180th day
    again = _sell(points, tenant, hanako, 10_000, "r-0001")  # a double submit
    assert again.replay and _rp(points, hanako) == 11_000
    with pytest.raises(PointsError) as exc:  # the same receipt with another amount
        _sell(points, tenant, hanako, 5_000, "R-0001")
    assert exc.value.code == "receipt-conflict" and "受付番号 R-0001" in exc.value.ja
    assert _rp(points, hanako) == 11_000
    assert points.purchased_this_year(tenant, hanako) == 10_000
    assert points.recent_sales(tenant)[0] | {"at": None} == {
        "receipt": "R-0001",
        "at": None,
        "member_code": hanako.member_code,
        "yen": 10_000,
        "premium": 1_000,
    }


def test_sale_refusals_move_nothing(tenant, points, rp, hanako, taro):
    def refused(member: str, yen: int, code: str, text: str) -> None:
        with pytest.raises(PointsError) as exc:
            points.sell(tenant, SaleIn(receipt=f"R-{new_id()[:8]}", member_code=member, yen=yen))
        assert exc.value.code == code and text in exc.value.ja, exc.value.ja

    refused("0000-0000", 1_000, "member-not-found", "見つかりません")
    refused(
        hanako.member_code, 50_001, "purchase-limit-exceeded", "1回に購入できるのは50,000円まで"
    )
    _sell(points, tenant, hanako, 50_000)
    _sell(points, tenant, hanako, 30_000)
    refused(hanako.member_code, 20_001, "purchase-limit-exceeded", "あと 20,000円まで")
    assert _rp(points, hanako) == 88_000  # 80,000 + 8,000: the premium budget is used up
    refused(taro.member_code, 10_000, "premium-budget-exhausted", "プレミアム分の予算が終了")
    assert _rp(points, taro) == 0
    for bad in (0, -5):
        with pytest.raises(ValueError):
            SaleIn(receipt="R-1", member_code=hanako.member_code, yen=bad)


def test_administrative_points_are_spent_first_then_purchased(tenant, points, rp, hanako, shop):
    _fund(points, hanako, 300)
    _sell(points, tenant, hanako, 1_000)  # 1,100 rp
    small = PaymentIn(id=new_id(), shop=shop.code, amount=200)
    points.authorize(tenant, hanako, small)
    points.confirm(tenant, hanako, small.id)
    assert (_pt(points, hanako), _rp(points, hanako)) == (100, 1_100)
    spec = PaymentIn(id=new_id(), shop=shop.code, amount=500)
    held = points.authorize(tenant, hanako, spec)
    assert (held.points, held.purchased) == (500, 400)
    again = points.authorize(tenant, hanako, spec)  # a double tap: the same hold
    assert again.replay and again.purchased == 400
    done = points.confirm(tenant, hanako, spec.id)
    assert done.status == "completed" and points.confirm(tenant, hanako, spec.id).replay
    assert (_pt(points, hanako), _rp(points, hanako)) == (0, 700)
    ledger = points.ledger
    assert ledger.get_account(tenant, shop.account).balance == 300
    assert ledger.get_account(tenant, f"{shop.account}:rp").balance == 400
    sales = points.shop_sales(tenant, shop)
    assert sales["received"] == 700 and sales["count"] == 2
    refunded = points.refund(tenant, shop, spec.id)
    assert refunded.status == "refunded"
    assert (_pt(points, hanako), _rp(points, hanako)) == (100, 1_100)
    too_much = PaymentIn(id=new_id(), shop=shop.code, amount=1_201)
    with pytest.raises(PointsError) as exc:
        points.authorize(tenant, hanako, too_much)
    assert "利用できる残高 1,200 pt" in exc.value.ja
    assert (_pt(points, hanako), _rp(points, hanako)) == (100, 1_100)
    assert ledger.verify(tenant).ok


def test_cancel_and_coupon_with_purchased_points(tenant, points, rp, hanako, shop):
    _sell(points, tenant, hanako, 1_000)
    spec = PaymentIn(id=new_id(), shop=shop.code, amount=600)
    held = points.authorize(tenant, hanako, spec)
    assert held.purchased == 600 and _rp(points, hanako) == 500
    assert points.cancel(tenant, hanako, spec.id).status == "cancelled"
    assert _rp(points, hanako) == 1_100
    day = today()
    points.create_coupon(
        tenant,
        CouponCreate(
            code="spring", title_ja="春", kind="amount", value=100, valid_from=day, valid_until=day
        ),
        "admin",
    )
    paid = PaymentIn(id=new_id(), shop=shop.code, amount=600, coupon="spring")
    held = points.authorize(tenant, hanako, paid)
    assert (held.discount, held.points, held.purchased) == (100, 500, 500)
    assert points.confirm(tenant, hanako, paid.id).status == "completed"
    assert _rp(points, hanako) == 600
    assert points.ledger.get_account(tenant, shop.account).balance == 100  # the coupon's part


def test_settlement_pays_shops_for_both_kinds(tenant, points, rp, hanako, shop, monkeypatch):
    _fund(points, hanako, 1_000)
    _sell(points, tenant, hanako, 2_000)
    spec = PaymentIn(id=new_id(), shop=shop.code, amount=3_000)
    points.authorize(tenant, hanako, spec)
    points.confirm(tenant, hanako, spec.id)
    month = today().replace(day=1)
    rows = points.month_statements(tenant, month)
    assert [(s.merchant, s.net) for _, s in rows] == [
        (shop.account, 1_000),
        (f"{shop.account}:rp", 2_000),
    ]
    assert points.statements(tenant, shop, months=1)[0].net == 3_000
    later = datetime(month.year, month.month, 1, tzinfo=JST) + timedelta(days=33)
    monkeypatch.setattr("kizuna.points.clock.now", lambda: later.astimezone(UTC))
    monkeypatch.setattr("kizuna.ledger.settlement.now_us", lambda: int(later.timestamp() * 1e6))
    done = points.settle_month(tenant, month)
    assert sorted(s.payable_yen for _, s in done if s) == [985, 1_970]  # 1.5 % fee each
    assert points.ledger.get_account(tenant, f"{shop.account}:rp").balance == 0


def test_dashboard_shows_sales_premium_and_outstanding(tenant, points, rp, hanako, shop):
    _fund(points, hanako, 500)
    _sell(points, tenant, hanako, 10_000)
    spec = PaymentIn(id=new_id(), shop=shop.code, amount=700)  # 500 pt + 200 地域ポイント
    points.authorize(tenant, hanako, spec)
    points.confirm(tenant, hanako, spec.id)
    board = points.dashboard(tenant)
    assert board.totals["sold_yen"] == 10_000 and board.totals["premium"] == 1_000
    assert board.active[board.months[-1]] == 1  # one resident, whichever wallet paid
    assert (board.outstanding, board.outstanding_purchased) == (0, 10_800)
    assert board.totals["spent"] == 700
    wallet = points.wallet(tenant, hanako)
    assert wallet.purchased.available == 10_800 and wallet.purchased.expiring[0][1] == 10_800
    assert {h["code"] for h in wallet.history} == {"purchase", "premium", "volunteer", "payment"}
    assert [h["purchased"] for h in wallet.history if h["code"] == "payment"] == [True, False]
