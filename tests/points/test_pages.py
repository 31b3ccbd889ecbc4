"""Points pages and REST routes without a browser: who may see what, forms that are
idempotent, refusals as readable pages, exports for Excel, the poster, the broker."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from kizuna.app import create_app
from kizuna.auth import service as auth
from kizuna.auth.service import Role
from kizuna.points.schemas import ProgrammeCreate, ResidentCreate, ShopCreate, VolunteerIn
from kizuna.settings import Settings
from kizuna.storage import writer

T = "takasago"
PW = "correct-horse"


@pytest.fixture
def app(sqlite_engine, tmp_path):  # noqa: ANN001, ANN201
    app = create_app(Settings(data_dir=tmp_path), sqlite_engine)
    services = app.state.services
    services.tenants.create_tenant(T, "高砂市", "Takasago City")
    with writer(sqlite_engine).begin() as conn:
        for name, role in (
            ("hanako", Role.RESIDENT),
            ("taro", Role.RESIDENT),
            ("bakery", Role.MERCHANT),
            ("pmo", Role.MUNICIPAL_STAFF),
            ("viewer", Role.MUNICIPAL_STAFF),
        ):
            auth.create_user(conn, name, name, role, PW, [T])
    points = services.points
    points.setup_programme(
        T, ProgrammeCreate(name_ja="たかさご未来資産ポイント", eligible_towns=["荒井町"])
    )
    points.set_staff_role(T, "pmo", "admin")
    points.register_shop(
        T,
        ShopCreate(
            code="bakery",
            name="さくらベーカリー",
            town="荒井町",
            address="荒井町1",
            username="bakery",
        ),
    )
    for user, town in (("hanako", "荒井町"), ("taro", "伊保")):
        r = points.register_resident(T, user, ResidentCreate(real_name=user, kana=user, town=town))
        points.verify_resident(T, r.id, "staff:pmo")
        points.record_volunteering(
            T,
            VolunteerIn(
                id=str(uuid.uuid4()),
                member_code=r.member_code,
                activity="清掃",
                activity_date=datetime.now(UTC).date(),
                hours=1,
                points=1000,
            ),
            "pmo",
        )
    return app


@pytest.fixture
def client(app) -> Iterator[TestClient]:  # noqa: ANN001
    with TestClient(app) as c:
        yield c


def _login(client: TestClient, user: str) -> str:
    client.post("/login", data={"username": user, "password": PW, "next": "/"})
    page = client.get("/points/help")
    return re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text).group(1)


def _html(client: TestClient, path: str):  # noqa: ANN202
    return client.get(path, headers={"Accept": "text/html"})


def test_each_role_sees_only_its_pages(client):
    _login(client, "hanako")
    assert _html(client, "/points/wallet").status_code == 200
    assert _html(client, "/points/shop").status_code == 403
    assert _html(client, "/points/staff").status_code == 403
    _login(client, "bakery")
    assert "さくらベーカリー" in _html(client, "/points/shop").text
    assert _html(client, "/points/wallet").status_code == 403
    _login(client, "viewer")
    assert _html(client, "/points/staff").status_code == 200
    assert _html(client, "/points/staff/settlement").status_code == 403  # viewer only
    _login(client, "pmo")
    for path in (
        "/points/staff",
        "/points/staff/residents",
        "/points/staff/approvals",
        "/points/staff/volunteer",
        "/points/staff/shops",
        "/points/staff/actions",
        "/points/staff/coupons",
        "/points/staff/settlement",
    ):
        assert _html(client, path).status_code == 200, path


def test_signed_out_visitors_are_sent_to_sign_in(client):
    r = client.get("/points/wallet", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")


def test_pay_confirm_twice_pays_once_and_the_shop_sees_it(app, client):
    points = app.state.services.points
    csrf = _login(client, "hanako")
    path = points.pay_path(T, "bakery")
    page = client.get(path)
    pid = re.search(r'name="id" value="([0-9a-f-]+)"', page.text).group(1)
    r = client.post(
        path, data={"csrf_token": csrf, "id": pid, "amount": "420"}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == f"/points/payments/{pid}"
    again = client.post(
        path, data={"csrf_token": csrf, "id": pid, "amount": "420"}, follow_redirects=False
    )
    assert again.headers["location"] == f"/points/payments/{pid}"  # a double tap: the same hold
    assert "お支払い内容の確認" in client.get(f"/points/payments/{pid}").text
    done = client.post(f"/points/payments/{pid}/confirm", data={"csrf_token": csrf})
    assert "お支払い完了" in done.text
    twice = client.post(f"/points/payments/{pid}/confirm", data={"csrf_token": csrf})
    assert "すでに完了しています" in twice.text
    hanako = points.resident_for_user(T, "hanako")
    assert app.state.services.ledger.get_account(T, hanako.wallet).balance == 580
    csrf = _login(client, "bakery")
    shop = client.get("/points/shop").text
    assert 'data-figure="received">420' in shop
    refund = client.post("/points/shop/refund", data={"csrf_token": csrf, "payment": pid})
    assert "返金しました" in refund.text
    assert app.state.services.ledger.get_account(T, hanako.wallet).balance == 1000


def test_refusals_are_japanese_pages_and_move_nothing(app, client):
    points = app.state.services.points
    csrf = _login(client, "hanako")
    forged = client.get(f"/points/pay/{T}/bakery?s=AAAA")
    assert forged.status_code == 400 and "このQRコードは正しくありません" in forged.text
    path = points.pay_path(T, "bakery")
    over = client.post(path, data={"csrf_token": csrf, "id": str(uuid.uuid4()), "amount": "5000"})
    assert over.status_code == 422 and "ポイント残高が足りません" in over.text
    bill = points.one_off_path(T, "bakery", 300)
    stale = bill.replace("e=", "e=1")  # tampered expiry
    assert "正しくありません" in client.get(stale).text
    taro = points.resident_for_user(T, "taro")
    thanks = client.post(
        "/points/thanks",
        data={"csrf_token": csrf, "id": str(uuid.uuid4()), "to": taro.member_code, "amount": "400"},
    )
    assert thanks.status_code == 422 and "1日に贈れるのは300 pt" in thanks.text
    no_csrf = client.post(
        "/points/thanks", data={"id": str(uuid.uuid4()), "to": taro.member_code, "amount": "1"}
    )
    assert no_csrf.status_code == 403
    hanako = points.resident_for_user(T, "hanako")
    assert app.state.services.ledger.get_account(T, hanako.wallet).balance == 1000


def test_one_off_qr_pays_once(app, client):
    points = app.state.services.points
    csrf = _login(client, "hanako")
    bill = points.one_off_path(T, "bakery", 250)
    page = client.get(bill)
    assert 'value="250" readonly' in page.text
    client.post(bill, data={"csrf_token": csrf, "id": "ignored", "amount": "1"})
    pid = points.check_link(T, "bakery", *_q(bill)).payment_id
    assert points.payment(T, pid).points == 250  # the QR's amount, not the form's
    client.post(f"/points/payments/{pid}/confirm", data={"csrf_token": csrf})
    again = client.get(bill, follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == f"/points/payments/{pid}"


def _q(path: str) -> tuple:
    q = dict(p.split("=", 1) for p in path.split("?")[1].split("&"))
    return q["s"], q["a"], q["e"], q["n"]


def test_settlement_waits_for_the_month_end_then_pays_once(app, client, monkeypatch):
    points = app.state.services.points
    hanako = points.resident_for_user(T, "hanako")
    from kizuna.points.schemas import PaymentIn, PurchaseProgrammeCreate

    # 地域ポイント on sale: each shop gets a second merchant account (nothing paid into it).
    points.setup_purchase(T, PurchaseProgrammeCreate(premium_budget=8_000))
    pid = str(uuid.uuid4())
    points.authorize(T, hanako, PaymentIn(id=pid, shop="bakery", amount=1000))
    points.confirm(T, hanako, pid)
    csrf = _login(client, "pmo")
    month = datetime.now(UTC).astimezone(points_jst()).strftime("%Y-%m")
    early = client.post("/points/staff/settlement", data={"csrf_token": csrf, "month": month})
    assert "月末が過ぎてから" in early.text
    start = datetime.strptime(month + "-01", "%Y-%m-%d")
    later = (start + timedelta(days=33)).replace(tzinfo=UTC)
    monkeypatch.setattr("kizuna.points.clock.now", lambda: later)
    monkeypatch.setattr("kizuna.ledger.settlement.now_us", lambda: int(later.timestamp() * 1e6))
    done = client.post("/points/staff/settlement", data={"csrf_token": csrf, "month": month})
    assert "1店舗" in done.text and "985円" in done.text  # 1.5 % fee, rounded down
    # Shops, not merchant accounts: a shop's 地域ポイント account is not a second shop.
    shops = points.list_shops(T)
    accounts = [a for s in shops for a in points.shop_accounts(T, s)]
    assert len(accounts) > len(shops)
    settled = re.search(
        r'精算済の店舗</div><div class="value"[^>]*>(\d+)<span class="unit">/ (\d+)<', done.text
    )
    assert settled and settled.groups() == ("1", str(len(shops))), settled
    client.post("/points/staff/settlement", data={"csrf_token": csrf, "month": month})
    shop = app.state.services.ledger.get_account(T, "shop:bakery")
    assert shop.balance == 0 and shop.debits_posted == 1000  # settled once
    csv = client.get(f"/points/staff/settlement.csv?month={month}")
    assert csv.content.startswith(b"\xef\xbb\xbf") and "さくらベーカリー" in csv.content.decode()

    # The 全銀協 総合振込 file for the city's bank, from the page's form.
    city = {
        "code": "1234567890",
        "name": "たかさごし",
        "bank_code": "0173",
        "bank_name": "ﾐﾅﾄｷﾞﾝｺｳ",
        "branch_code": "101",
        "branch_name": "ﾀｶｻｺﾞ",
        "account_type": "1",
        "account_number": "7654321",
    }
    form = {"csrf_token": csrf, "month": month, "transfer_date": "2026-12-25", **city}
    no_account = client.post("/points/staff/settlement.zengin", data=form)
    assert "振込先口座が未登録の加盟店があります: さくらベーカリー" in no_account.text
    bakery = points.shop(T, "bakery")
    points.register_shop(
        T,
        ShopCreate(
            **bakery.model_dump(include=set(ShopCreate.model_fields))
            | {
                "bank_code": "0173",
                "branch_code": "205",
                "account_type": "1",
                "account_number": "1234567",
                "holder_kana": "ｻｸﾗﾍﾞｰｶﾘｰ",
            }
        ),
    )
    bad = client.post("/points/staff/settlement.zengin", data={**form, "bank_code": "01x3"})
    assert bad.status_code == 200 and "振込ファイルを作れません" in bad.text
    assert 'value="01x3"' in bad.text  # what was typed stays in the form
    page = client.get(f"/points/staff/settlement?month={month}")
    assert (
        'name="code" inputmode="numeric" pattern="[0-9]{1,10}" maxlength="10" value=""' in page.text
    )
    done = client.post("/points/staff/settlement.zengin", data=form)
    assert done.status_code == 200 and "attachment" in done.headers["content-disposition"]
    records = done.content.split(b"\r\n")
    assert records[-1] == b"" and all(len(r) == 120 for r in records[:-1])
    header, data, trailer, end = records[:-1]
    assert header[:4] == b"1210" and header[4:14] == b"1234567890"
    assert header[14:54].decode("cp932").rstrip() == "ﾀｶｻｺﾞｼ"  # kana, half-width
    assert header[54:58] == b"1225" and header[58:62] == b"0173"
    assert data[:1] == b"2" and data[80:90] == b"0000000985"  # 1,000 pt less the 1.5 % fee
    assert trailer == b"8" + b"000001" + b"000000000985" + b" " * 101
    assert end == b"9" + b" " * 119
    # The city's account is kept for next month's form.
    page = client.get(f"/points/staff/settlement?month={month}")
    assert 'value="1234567890"' in page.text and 'value="7654321"' in page.text


def test_dashboard_csv_chart_poster_and_broker(app, client):
    csrf = _login(client, "pmo")
    csv = client.get("/points/staff/dashboard.csv")
    assert csv.content.startswith(b"\xef\xbb\xbf") and "付与ポイント" in csv.content.decode()
    chart = client.get("/points/staff/charts/points-month.svg")
    assert chart.status_code == 200 and chart.text.lstrip().startswith("<?xml")
    r = client.post("/points/staff/publish", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303 and "published=6" in r.headers["location"]
    month = datetime.now(UTC).astimezone(points_jst()).strftime("%Y-%m")
    entity = client.get(
        f"/ngsi-ld/v1/entities/urn:ngsi-ld:PointsProgrammeMonthly:{T}:{month}",
        headers={"NGSILD-Tenant": T},
    )
    assert entity.status_code == 200 and entity.json()["pointsIssued"]["value"] == 2000
    assert "activeResidents" not in entity.json()  # 2 < 5: withheld
    _login(client, "bakery")
    pdf = client.get("/points/shop/poster.pdf")
    assert pdf.content.startswith(b"%PDF") and b"/MediaBox [ 0 0 595.44 841.68 ]" in pdf.content


def test_rest_payment_round_trip_for_a_resident_token(app, client):
    with writer(app.state.services.engine).begin() as conn:
        token, _ = auth.issue_token(conn, "hanako", PW, timedelta(hours=1))
    h = {"Authorization": f"Bearer {token}", "NGSILD-Tenant": T}
    pid = str(uuid.uuid4())
    r = client.post(
        "/points/api/payments", json={"id": pid, "shop": "bakery", "amount": 300}, headers=h
    )
    assert r.status_code == 200 and r.json()["status"] == "authorized"
    assert (
        client.post(f"/points/api/payments/{pid}/confirm", headers=h).json()["status"]
        == "completed"
    )
    assert (
        client.post(f"/points/api/payments/{pid}/confirm", headers=h).json()["status"]
        == "completed"
    )
    assert client.get("/points/api/wallet", headers=h).json()["balance"] == 700
    over = client.post(
        "/points/api/payments",
        json={"id": str(uuid.uuid4()), "shop": "bakery", "amount": 9000},
        headers=h,
    )
    assert over.status_code == 422 and "残高が足りません" in over.json()["detail"]
    with writer(app.state.services.engine).begin() as conn:
        shop_token, _ = auth.issue_token(conn, "bakery", PW, timedelta(hours=1))
    denied = client.get(
        "/points/api/wallet", headers={"Authorization": f"Bearer {shop_token}", "NGSILD-Tenant": T}
    )
    assert denied.status_code == 403


def test_points_reaches_the_ledger_only_through_its_front_door():
    from pathlib import Path

    import kizuna.points

    allowed = {"kizuna.ledger.service", "kizuna.ledger.schemas"}
    for path in Path(kizuna.points.__file__).parent.glob("*.py"):
        for found in re.findall(
            r"^\s*(?:from|import) (kizuna\.ledger[\w.]*)", path.read_text(), re.M
        ):
            assert found in allowed, f"{path.name} imports {found}"


def points_jst():  # noqa: ANN201
    from kizuna.points.service import JST

    return JST


def test_counter_sale_page_sells_once_per_receipt(app, client):
    from kizuna.points.schemas import PurchaseProgrammeCreate

    points = app.state.services.points
    points.setup_purchase(T, PurchaseProgrammeCreate())
    hanako = points.resident_for_user(T, "hanako")
    csrf = _login(client, "viewer")
    assert client.get("/points/staff/sales").status_code == 403  # viewers do not sell
    csrf = _login(client, "pmo")
    page = client.get("/points/staff/sales")
    assert "窓口販売" in page.text and "1万円で" in page.text and "11,000 pt" in page.text

    def sell(receipt: str, yen: str, member: str = hanako.member_code) -> str:
        form = {"csrf_token": csrf, "receipt": receipt, "member_code": member, "yen": yen}
        return client.post("/points/staff/sales", data=form).text

    done = sell("R-100", "10,000")
    assert "11,000 pt（10,000円＋プレミアム 1,000 pt）を販売しました" in done
    assert 'id="sale-receipt"' in done and "¥10,000 / ¥100,000" in done
    assert "二重送信" in sell("R-100", "10000")
    assert "別の内容" in sell("R-100", "9000")
    assert "1円以上の整数" in sell("R-101", "1.5")
    assert "1円以上の整数" in sell("R-101", "0")
    assert "見つかりません" in sell("R-101", "1000", "9999-9999")
    assert "50,000円まで" in sell("R-101", "60000")
    wallet = points.ledger.get_account(T, f"{hanako.wallet}:rp")
    assert wallet.balance == 11_000
    _login(client, "hanako")
    page = client.get("/points/wallet")
    assert 'data-figure="purchased">11,000' in page.text and "行政ポイントから先に" in page.text
    from kizuna.points.schemas import PaymentIn

    pid = str(uuid.uuid4())
    points.authorize(T, hanako, PaymentIn(id=pid, shop="bakery", amount=1500))
    confirm = client.get(f"/points/payments/{pid}")
    assert 'data-figure="purchased">500 pt' in confirm.text  # after the 1,000 pt
    assert "10,500 pt" in confirm.text  # balance after: 0 + 10,500
    _login(client, "pmo")
    board = client.get("/points/staff")
    assert 'data-figure="sold-yen">10,000' in board.text
    assert 'data-figure="premium">1,000' in board.text
