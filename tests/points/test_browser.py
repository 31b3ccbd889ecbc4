"""The points flows in a real Chromium at phone size, with screenshots people look at:
a resident registers, logs an eco action and gets points, pays at a shop by opening the
shop's QR URL (two-phase, with a confirmation screen), the shop sees the sale, the
resident thanks a neighbour, and staff settle the month and download the CSV."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kizuna.app import create_app
from kizuna.auth import service as auth
from kizuna.auth.service import Role
from kizuna.points.schemas import (
    ProgrammeCreate,
    PurchaseProgrammeCreate,
    ResidentCreate,
    ShopCreate,
    VolunteerIn,
)
from kizuna.settings import Settings
from kizuna.storage import writer
from tests.browser import live_server, screenshot
from tests.points.conftest import new_id

PASSWORD = "correct-horse"


@pytest.fixture
def app(sqlite_engine, tmp_path):  # noqa: ANN001, ANN201
    app = create_app(Settings(data_dir=tmp_path), sqlite_engine)
    services = app.state.services
    services.tenants.create_tenant("takasago", "高砂市", "Takasago City")
    with writer(sqlite_engine).begin() as conn:
        for name, display, role in (
            ("hanako", "高砂 花子", Role.RESIDENT),
            ("taro", "伊保 太郎", Role.RESIDENT),
            ("bakery", "さくらベーカリー", Role.MERCHANT),
            ("pmo", "高砂市 ポイント担当", Role.MUNICIPAL_STAFF),
        ):
            auth.create_user(conn, name, display, role, PASSWORD, ["takasago"])
    points = services.points
    points.setup_programme(
        "takasago",
        ProgrammeCreate(
            name_ja="たかさご未来資産ポイント",
            name_en="Takasago Future Points",
            eligible_towns=["荒井町", "伊保", "高砂町"],
        ),
    )
    points.set_staff_role("takasago", "pmo", "admin")
    points.register_shop(
        "takasago",
        ShopCreate(
            code="sakura-bakery",
            name="さくらベーカリー",
            category="パン",
            town="荒井町",
            address="荒井町小松原1-2-3",
            username="bakery",
            fee_bp=150,
            bank_code="0173",
            branch_code="101",
            account_type="1",
            account_number="1234567",
            holder_kana="ｻｸﾗﾍﾞｰｶﾘｰ",
        ),
    )
    points.setup_purchase("takasago", PurchaseProgrammeCreate())
    taro = points.register_resident(
        "takasago", "taro", ResidentCreate(real_name="伊保 太郎", kana="いほ たろう", town="伊保")
    )
    points.verify_resident("takasago", taro.id, "staff:pmo")
    return app


def _sign_in(page, base: str, username: str, target: str) -> None:  # noqa: ANN001
    page.goto(f"{base}/login?next={target}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def test_resident_shop_and_staff_flows_in_a_phone_browser(app, chromium, monkeypatch):  # noqa: ANN001
    services = app.state.services
    points = services.points

    def phone():  # noqa: ANN202
        context = chromium.new_context(viewport={"width": 390, "height": 844}, locale="ja-JP")
        return context, context.new_page()

    with live_server(app) as base:
        # A resident registers with their real name; staff verify it.
        ctx, page = phone()
        _sign_in(page, base, "hanako", "/points/wallet")
        assert page.url.endswith("/points/register")
        page.fill("input[name=real_name]", "高砂 花子")
        page.fill("input[name=kana]", "たかさご はなこ")
        page.fill("input[name=town]", "荒井町")
        page.click("#register")
        page.wait_for_url(f"{base}/points/wallet?registered=1")
        assert page.locator("text=実名の確認がまだです").is_visible()
        hanako = points.resident_for_user("takasago", "hanako")
        points.verify_resident("takasago", hanako.id, "staff:pmo")
        points.record_volunteering(
            "takasago",
            VolunteerIn(
                id=new_id(),
                member_code=hanako.member_code,
                activity="地域の清掃活動",
                activity_date=datetime.now(UTC).date(),
                hours=2,
                points=500,
            ),
            "pmo",
        )

        # She logs an eco action and receives points.
        page.goto(f"{base}/points/eco")
        page.check("input[value=bike-commute]")
        page.fill("input[name=quantity]", "6")
        page.click("#eco-submit")
        page.wait_for_load_state()
        assert (
            page.locator(".flash.ok")
            .inner_text()
            .startswith("「車の代わりに自転車・徒歩で移動」で 18 pt")
        )
        screenshot(page, "points-eco-logged")
        page.goto(f"{base}/points/wallet")
        assert page.locator("[data-figure=balance]").inner_text().startswith("518")
        screenshot(page, "points-wallet")

        # She opens the shop's QR URL (what the phone camera does) and pays.
        page.goto(base + points.pay_path("takasago", "sakura-bakery"))
        assert page.locator(".shop-name").inner_text() == "さくらベーカリー"
        page.fill("input[name=amount]", "380")
        screenshot(page, "points-pay-amount")
        page.click("#pay-next")
        page.wait_for_url(f"{base}/points/payments/*")
        assert page.locator("[data-figure=points]").inner_text() == "380 pt"
        screenshot(page, "points-pay-confirm")
        page.click("#confirm")
        page.wait_for_selector("#receipt")
        assert "お支払い完了" in page.locator("#receipt").inner_text()
        screenshot(page, "points-pay-receipt")
        assert services.ledger.get_account("takasago", hanako.wallet).balance == 518 - 380

        # A forged QR is refused with a clear message.
        page.goto(f"{base}/points/pay/takasago/sakura-bakery?s=forged")
        assert "このQRコードは正しくありません" in page.content()
        screenshot(page, "points-pay-forged-qr")

        # She thanks a neighbour by member code, with a message.
        taro = points.resident_for_user("takasago", "taro")
        page.goto(f"{base}/points/thanks/to/{taro.member_code}")
        page.fill("input[name=amount]", "50")
        page.fill("textarea[name=message]", "草刈りを手伝ってくれてありがとう！")
        page.click("#thanks-submit")
        page.wait_for_load_state()
        assert "伊保 太郎 さんに 50 pt" in page.locator(".flash.ok").inner_text()
        screenshot(page, "points-thanks-sent")
        assert services.ledger.get_account("takasago", taro.wallet).balance == 50
        ctx.close()

        # The shop sees the sale.
        ctx, page = phone()
        _sign_in(page, base, "bakery", "/points/shop")
        assert page.locator("[data-figure=received]").inner_text().startswith("380")
        assert page.locator("#sales li").count() == 1
        screenshot(page, "points-shop-sales")
        ctx.close()

        # At the city office counter she buys 地域ポイント: ¥10,000 → 11,000 pt. The
        # clerk's second submit of the same receipt number sells nothing more.
        ctx, page = phone()
        _sign_in(page, base, "pmo", "/points/staff/sales")
        for _ in range(2):
            page.fill("input[name=receipt]", "R-0001")
            page.fill("input[name=member_code]", hanako.member_code)
            page.fill("input[name=yen]", "10000")
            page.click("form.card button[type=submit]")
            page.wait_for_load_state()
        assert "二重送信" in page.locator(".flash").inner_text()
        assert "11,000 pt" in page.locator("[data-figure=sold-points]").inner_text()
        assert page.locator("#sales tbody tr").count() == 1
        page.fill("input[name=receipt]", "R-0002")
        page.fill("input[name=member_code]", hanako.member_code)
        page.fill("input[name=yen]", "60000")
        page.click("form.card button[type=submit]")
        page.wait_for_load_state()
        assert "50,000円まで" in page.locator(".flash.error").inner_text()
        page.fill("input[name=receipt]", "R-0003")
        page.fill("input[name=member_code]", hanako.member_code)
        page.fill("input[name=yen]", "5000")
        page.click("form.card button[type=submit]")
        page.wait_for_load_state()
        screenshot(page, "points-staff-counter-sale")
        ctx.close()
        assert services.ledger.get_account("takasago", f"{hanako.wallet}:rp").balance == 16_500

        # Her wallet shows both kinds, with what expires when.
        ctx, page = phone()
        _sign_in(page, base, "hanako", "/points/wallet")
        assert page.locator("[data-figure=purchased]").inner_text().startswith("16,500")
        assert page.locator("[data-figure=total]").inner_text().startswith("16,588")
        assert "地域ポイント" in page.locator("#expiring").inner_text()
        screenshot(page, "points-wallet-both")
        ctx.close()

        # Staff look at the dashboard, then settle the month once it is over.
        ctx, page = phone()
        _sign_in(page, base, "pmo", "/points/staff")
        assert page.locator("[data-figure=sold-yen]").inner_text().startswith("15,000")
        assert page.locator("[data-figure=spent]").inner_text().startswith("380")
        page.wait_for_load_state("networkidle")
        screenshot(page, "points-staff-dashboard")
        month = datetime.now(UTC).astimezone(points_jst()).date().replace(day=1)
        next_month = (month + timedelta(days=32)).replace(day=1)
        later = datetime(next_month.year, next_month.month, 2, 3, tzinfo=UTC)
        monkeypatch.setattr("kizuna.points.clock.now", lambda: later)
        monkeypatch.setattr(
            "kizuna.ledger.settlement.now_us", lambda: int(later.timestamp() * 1_000_000)
        )
        page.goto(f"{base}/points/staff/settlement?month={month:%Y-%m}")
        page.click("#settle")
        page.wait_for_load_state()
        assert "1店舗" in page.locator(".flash.ok").inner_text()
        assert "精算済" in page.locator("#statements").inner_text()
        # One shop with two merchant accounts (行政ポイント, 地域ポイント) is one shop.
        shops = len(services.points.list_shops("takasago"))
        settled = page.locator("[data-figure=shops-settled]").inner_text().replace(" ", "")
        assert settled == f"1/{shops}", settled
        screenshot(page, "points-staff-settlement")
        with page.expect_download() as download:
            page.click("#csv")
        data = open(download.value.path(), "rb").read()  # noqa: SIM115, PTH123
        assert data.startswith("\ufeff".encode())
        text = data.decode("utf-8-sig")
        assert "さくらベーカリー" in text and ",380," in text and ",375," in text  # fee ¥5
        page.click("#zengin summary")  # the 全銀協 file's form opens below the statements
        assert page.locator("#zengin-download").is_visible()
        screenshot(page, "points-staff-zengin")
        ctx.close()


def points_jst():  # noqa: ANN201
    from kizuna.points.service import JST

    return JST
