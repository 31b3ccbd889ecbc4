"""The points service on both dialects: flows end to end through the ledger, and every
kind of bad input refused with a Japanese message and nothing moved."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from kizuna.points.schemas import (
    CouponCreate,
    EcoLogIn,
    FactorCreate,
    PaymentIn,
    ShopCreate,
    ThanksIn,
    VolunteerIn,
)
from kizuna.points.service import PointsError, today
from tests.points.conftest import new_id


def _balance(points, resident) -> int:  # noqa: ANN001
    return points.ledger.get_account(resident.tenant, resident.wallet).available


def _fund(points, resident, amount: int = 1000) -> None:  # noqa: ANN001
    points.record_volunteering(
        resident.tenant,
        VolunteerIn(
            id=new_id(),
            member_code=resident.member_code,
            activity="清掃",
            activity_date=today(),
            hours=1,
            points=amount,
        ),
        "clerk",
    )


def test_co2_arithmetic_uses_the_factor_of_the_actions_fiscal_year(tenant, points):
    cooling = points.action(tenant, "cooling-28")
    factor = points.factor_for(tenant, "electricity", date(2026, 7, 1))
    assert factor.kg_per_unit == 0.423 and factor.fiscal_year == 2023
    # 30.24 kWh a season over 112 days → 0.27 kWh a day × 0.423 kg/kWh = 114 g
    assert points.co2_grams(cooling, 1, factor) == 114
    points.add_factor(
        tenant,
        FactorCreate(
            code="electricity", fiscal_year=2026, kg_per_unit=0.40, unit="kWh", source="x"
        ),
    )
    assert points.factor_for(tenant, "electricity", date(2026, 7, 1)).kg_per_unit == 0.40
    assert points.factor_for(tenant, "electricity", date(2026, 3, 31)).kg_per_unit == 0.423
    with pytest.raises(PointsError) as exc:  # a published year is never rewritten
        points.add_factor(
            tenant,
            FactorCreate(
                code="electricity", fiscal_year=2026, kg_per_unit=0.5, unit="kWh", source="y"
            ),
        )
    assert exc.value.code == "factor-exists"
    bus = points.action(tenant, "bus-commute")
    assert points.co2_grams(bus, 10, None) == 730  # 0.073 kg-CO2 per km


def test_eco_log_credits_points_once_and_enforces_the_caps(tenant, points, hanako):
    spec = EcoLogIn(id=new_id(), action="my-bag")
    log = points.log_action(tenant, hanako, spec)
    assert log.status == "approved" and log.points == 3 and log.co2_g == 60
    again = points.log_action(tenant, hanako, spec)  # a double submit
    assert again.replay and _balance(points, hanako) == 3
    points.log_action(tenant, hanako, EcoLogIn(id=new_id(), action="my-bag"))
    with pytest.raises(PointsError) as exc:  # two a day
        points.log_action(tenant, hanako, EcoLogIn(id=new_id(), action="my-bag"))
    assert exc.value.code == "day-cap" and "1日2回まで" in exc.value.ja
    assert _balance(points, hanako) == 6
    # The month cap: 400 pt of cycling; the last log gets what is left.
    day = today() - timedelta(days=1)
    for _k in range(2):
        points.log_action(
            tenant,
            hanako,
            EcoLogIn(id=new_id(), action="bike-commute", quantity=60, action_date=day),
        )
    if day.month != today().month:
        return  # the first of a month: yesterday's month is another one
    last = points.log_action(
        tenant, hanako, EcoLogIn(id=new_id(), action="bike-commute", quantity=60)
    )
    assert last.points == 400 - 2 * 180
    with pytest.raises(PointsError) as exc:
        points.log_action(
            tenant,
            hanako,
            EcoLogIn(id=new_id(), action="bike-commute", quantity=1, action_date=today()),
        )
    assert exc.value.code == "day-cap" or exc.value.code == "month-cap"


def test_unverified_residents_and_old_dates_are_refused(tenant, points, hanako):
    from kizuna.points.schemas import ResidentCreate

    fresh = points.register_resident(
        tenant, "jiro", ResidentCreate(real_name="次郎", kana="じろう", town="伊保")
    )
    with pytest.raises(PointsError) as exc:
        points.log_action(tenant, fresh, EcoLogIn(id=new_id(), action="my-bag"))
    assert exc.value.code == "not-verified" and "実名の確認" in exc.value.ja
    with pytest.raises(PointsError) as exc:
        points.log_action(
            tenant,
            hanako,
            EcoLogIn(id=new_id(), action="my-bag", action_date=today() - timedelta(days=60)),
        )
    assert exc.value.code == "bad-date"


def test_staff_approval_credits_meter_savings(tenant, points, hanako):
    log = points.log_action(
        tenant,
        hanako,
        EcoLogIn(id=new_id(), action="meter-saving", quantity=25, meter_reading=4321),
    )
    assert log.status == "pending" and _balance(points, hanako) == 0
    done = points.decide_log(tenant, log.id, True, "clerk")
    assert done.status == "approved" and _balance(points, hanako) == 25
    assert points.decide_log(tenant, log.id, True, "clerk").points == 25  # again: nothing more
    assert _balance(points, hanako) == 25


def test_volunteering_year_cap(tenant, points, hanako):
    _fund(points, hanako, 4800)
    with pytest.raises(PointsError) as exc:
        _fund(points, hanako, 300)
    assert exc.value.code == "year-cap" and "残り 200 pt" in exc.value.ja
    assert _balance(points, hanako) == 4800


def test_two_phase_payment_double_tap_and_refund(tenant, points, hanako, shop):
    _fund(points, hanako)
    spec = PaymentIn(id=new_id(), shop=shop.code, amount=380)
    held = points.authorize(tenant, hanako, spec)
    assert held.status == "authorized" and _balance(points, hanako) == 620
    assert points.authorize(tenant, hanako, spec).status == "authorized"  # double tap
    done = points.confirm(tenant, hanako, spec.id)
    again = points.confirm(tenant, hanako, spec.id)  # double tap on 支払う
    assert done.status == again.status == "completed"
    account = points.ledger.get_account(tenant, hanako.wallet)
    assert account.balance == 620 and account.debits_pending == 0
    assert points.ledger.get_account(tenant, shop.account).balance == 380
    sales = points.shop_sales(tenant, shop)
    assert sales["received"] == 380 and sales["count"] == 1
    refunded = points.refund(tenant, shop, spec.id)
    assert refunded.status == "refunded" and _balance(points, hanako) == 1000
    points.refund(tenant, shop, spec.id)  # twice: once
    assert _balance(points, hanako) == 1000


def test_payment_refusals_move_nothing(tenant, points, hanako, taro, shop):
    _fund(points, hanako, 100)
    with pytest.raises(PointsError) as exc:
        points.authorize(tenant, hanako, PaymentIn(id=new_id(), shop=shop.code, amount=500))
    assert exc.value.code == "insufficient-funds" and "残高が足りません" in exc.value.ja
    outside = points.register_shop(
        tenant, ShopCreate(code="umei-mart", name="梅井マート", town="梅井", address="梅井5")
    )
    with pytest.raises(PointsError) as exc:
        points.authorize(tenant, hanako, PaymentIn(id=new_id(), shop=outside.code, amount=50))
    assert exc.value.code == "shop-outside-area" and "対象地域外" in exc.value.ja
    held = points.authorize(tenant, hanako, PaymentIn(id=new_id(), shop=shop.code, amount=60))
    with pytest.raises(PointsError):  # someone else's payment
        points.confirm(tenant, taro, held.id)
    assert points.cancel(tenant, hanako, held.id).status == "cancelled"
    with pytest.raises(PointsError) as exc:
        points.confirm(tenant, hanako, held.id)
    assert exc.value.code == "payment-closed"
    assert _balance(points, hanako) == 100
    assert points.ledger.get_account(tenant, shop.account).balance == 0


def test_expired_hold_cannot_be_confirmed(tenant, points, hanako, shop, monkeypatch):
    _fund(points, hanako, 100)
    held = points.authorize(tenant, hanako, PaymentIn(id=new_id(), shop=shop.code, amount=60))
    later = datetime.now(UTC) + timedelta(minutes=6)
    monkeypatch.setattr("kizuna.points.clock.now", lambda: later)
    assert points.payment(tenant, held.id).status == "expired"
    with pytest.raises(PointsError) as exc:
        points.confirm(tenant, hanako, held.id)
    assert exc.value.code == "pending-expired" and "有効期限" in exc.value.ja


def test_signed_qr_links(tenant, points, shop, monkeypatch):
    path = points.pay_path(tenant, shop.code)
    sig = path.split("s=")[1]
    assert points.check_link(tenant, shop.code, sig).shop.code == shop.code
    with pytest.raises(PointsError) as exc:
        points.check_link(tenant, shop.code, sig[:-2] + "xx")
    assert exc.value.code == "qr-forged"
    bill = points.one_off_path(tenant, shop.code, 1200)
    q = dict(p.split("=") for p in bill.split("?")[1].split("&"))
    link = points.check_link(tenant, shop.code, q["s"], q["a"], q["e"], q["n"])
    assert link.amount == 1200 and link.payment_id
    with pytest.raises(PointsError) as exc:  # the amount changed: forged
        points.check_link(tenant, shop.code, q["s"], "12", q["e"], q["n"])
    assert exc.value.code == "qr-forged"
    later = datetime.now(UTC) + timedelta(minutes=6)
    monkeypatch.setattr("kizuna.points.clock.now", lambda: later)
    with pytest.raises(PointsError) as exc:
        points.check_link(tenant, shop.code, q["s"], q["a"], q["e"], q["n"])
    assert exc.value.code == "qr-expired" and "有効期限" in exc.value.ja


def test_coupons_discount_quota_and_expiry(tenant, points, hanako, shop):
    _fund(points, hanako, 2000)
    points.create_coupon(
        tenant,
        CouponCreate(
            code="street-300",
            title_ja="商店街300円券",
            kind="amount",
            value=300,
            min_purchase=1000,
            valid_from=today(),
            valid_until=today() + timedelta(days=10),
            quota_per_resident=1,
        ),
        "admin",
    )
    with pytest.raises(PointsError) as exc:
        points.authorize(
            tenant, hanako, PaymentIn(id=new_id(), shop=shop.code, amount=500, coupon="street-300")
        )
    assert exc.value.code == "coupon-minimum"
    pid = new_id()
    held = points.authorize(
        tenant, hanako, PaymentIn(id=pid, shop=shop.code, amount=1200, coupon="street-300")
    )
    assert (held.discount, held.points) == (300, 900)
    points.confirm(tenant, hanako, pid)
    assert _balance(points, hanako) == 1100
    assert points.ledger.get_account(tenant, shop.account).balance == 1200
    with pytest.raises(PointsError) as exc:
        points.authorize(
            tenant, hanako, PaymentIn(id=new_id(), shop=shop.code, amount=1200, coupon="street-300")
        )
    assert exc.value.code == "coupon-used" and "使い切って" in exc.value.ja
    points.create_coupon(
        tenant,
        CouponCreate(
            code="old",
            title_ja="終わった券",
            kind="percent",
            value=10,
            valid_from=today() - timedelta(days=10),
            valid_until=today() - timedelta(days=1),
        ),
        "admin",
    )
    with pytest.raises(PointsError) as exc:
        points.authorize(
            tenant, hanako, PaymentIn(id=new_id(), shop=shop.code, amount=100, coupon="old")
        )
    assert exc.value.code == "coupon-expired"
    assert _balance(points, hanako) == 1100


def test_thanks_daily_limit_and_self(tenant, points, hanako, taro):
    _fund(points, hanako, 500)
    points.thank(
        tenant, hanako, ThanksIn(id=new_id(), to=taro.member_code, amount=80, message="ありがとう")
    )
    with pytest.raises(PointsError) as exc:
        points.thank(tenant, hanako, ThanksIn(id=new_id(), to=taro.member_code, amount=30))
    assert exc.value.code == "daily-limit-exceeded" and "1日に贈れる" in exc.value.ja
    with pytest.raises(PointsError) as exc:
        points.thank(tenant, hanako, ThanksIn(id=new_id(), to=hanako.member_code, amount=1))
    assert exc.value.code == "thanks-self"
    assert _balance(points, taro) == 80 and _balance(points, hanako) == 420
    history = points.wallet(tenant, taro).history
    assert history[0]["message"] == "ありがとう" and history[0]["other"] == "高砂 花子"


def test_dashboard_aggregates(tenant, points, hanako, shop):
    _fund(points, hanako, 300)
    points.log_action(tenant, hanako, EcoLogIn(id=new_id(), action="bike-commute", quantity=5))
    pid = new_id()
    points.authorize(tenant, hanako, PaymentIn(id=pid, shop=shop.code, amount=100))
    points.confirm(tenant, hanako, pid)
    board = points.dashboard(tenant)
    month = board.months[-1]
    assert board.flows[month]["issued"] == 315 and board.flows[month]["spent"] == 100
    assert board.outstanding == 215 and board.active[month] == 1
    assert board.co2_by_town == {"荒井町": 0.65}
    mine = points.co2_for(tenant, hanako)
    assert mine["month_kg"] == mine["total_kg"] == 0.65 and mine["by_category"] == {
        "transport": 0.65
    }
    assert points.wallet(tenant, hanako).history[0]["code"] == "payment"
    assert board.spent_by_town == {"荒井町": 100}


def test_every_page_read_runs_on_both_dialects(tenant, points, hanako, shop):
    _fund(points, hanako, 500)
    points.log_action(
        tenant, hanako, EcoLogIn(id=new_id(), action="meter-saving", quantity=3, meter_reading=10)
    )
    points.create_coupon(
        tenant,
        CouponCreate(
            code="c1",
            title_ja="券",
            kind="amount",
            value=100,
            valid_from=today(),
            valid_until=today(),
        ),
        "admin",
    )
    assert points.pending_logs(tenant)[0]["real_name"] == "高砂 花子"
    assert points.eco_history(tenant, hanako)[0]["status"] == "pending"
    assert points.volunteering_list(tenant)[0]["points"] == 500
    assert points.coupons_for(tenant, hanako)[0]["state"] == "usable"
    assert points.shop_sales(tenant, shop)["count"] == 0
    assert len(points.statements(tenant, shop)) == 6
    assert points.month_statements(tenant, today())[0][1].net == 0
    assert points.count_residents(tenant) == (1, 1)
    assert points.budgets(tenant)["volunteer"] == 500_000 - 500
    assert points.fingerprint(tenant)[1] == 0
