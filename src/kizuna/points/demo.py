"""Demo data for the points programme: 高砂市's 「たかさご未来資産」 with residents, shops,
eco actions over the last four months, volunteering, coupons, 地域ポイント sold at the
counter (+10 %), payments (administrative points first, then purchased) and thanks.

Every event goes through the real service (and so the ledger), with ids derived from fixed
names, so ``kizuna demo`` can run again: the second run replays the same events and moves
nothing. The ledger stamps each transfer with the time it is made (it cannot back-date),
so in the demo all point movements happen at seeding time, while the eco actions carry the
dates they were done on (the CO2 charts by month show four months).
"""

from __future__ import annotations

import contextlib
import random
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from kizuna.auth.models import users
from kizuna.auth.service import SYSTEM, Role, create_user
from kizuna.points.publish import publish_months
from kizuna.points.schemas import (
    CouponCreate,
    EcoLogIn,
    PaymentIn,
    ProgrammeCreate,
    PurchaseProgrammeCreate,
    ResidentCreate,
    SaleIn,
    ShopCreate,
    ThanksIn,
    VolunteerIn,
)
from kizuna.points.service import PointsError, purchased_wallet, today
from kizuna.storage import writer

TENANT = "takasago"
NS = uuid.UUID("6b697a75-6e61-4c65-8467-706f696e7473")
TOWNS = ("荒井町", "伊保", "曽根町", "阿弥陀町", "米田町", "中筋", "梅井", "高砂町")
ELIGIBLE = ("荒井町", "伊保", "曽根町", "阿弥陀町", "米田町", "中筋", "高砂町")  # 梅井 is outside
FAMILY = (
    "田中",
    "山本",
    "中村",
    "小林",
    "加藤",
    "吉田",
    "山田",
    "松本",
    "井上",
    "木村",
    "林",
    "清水",
)
FAMILY_KANA = (
    "たなか",
    "やまもと",
    "なかむら",
    "こばやし",
    "かとう",
    "よしだ",
    "やまだ",
    "まつもと",
    "いのうえ",
    "きむら",
    "はやし",
    "しみず",
)
GIVEN = (
    "花子",
    "太郎",
    "由美",
    "健一",
    "美咲",
    "翔太",
    "陽子",
    "大輔",
    "さくら",
    "誠",
    "恵",
    "悠真",
)
GIVEN_KANA = (
    "はなこ",
    "たろう",
    "ゆみ",
    "けんいち",
    "みさき",
    "しょうた",
    "ようこ",
    "だいすけ",
    "さくら",
    "まこと",
    "めぐみ",
    "ゆうま",
)
SHOPS = (
    ("sakura-bakery", "さくらベーカリー", "パン", "荒井町", "荒井町小松原1-2-3"),
    ("iho-yasai", "伊保やさい市場", "青果", "伊保", "伊保町中筋2-5"),
    ("sone-books", "曽根書店", "書店", "曽根町", "曽根町2410"),
    ("takasago-cafe", "高砂港カフェ", "カフェ", "高砂町", "高砂町南本町8-1"),
    ("amida-denki", "阿弥陀電器", "家電", "阿弥陀町", "阿弥陀町阿弥陀300"),
    ("yoneda-drug", "米田ドラッグ", "薬局", "米田町", "米田町米田55"),
    ("nakasuji-sushi", "中筋すし処", "飲食", "中筋", "中筋1-10-2"),
    ("umei-mart", "梅井マート", "スーパー", "梅井", "梅井5-3-1"),
)
PASSWORD = "kizuna-demo"


def _id(*parts: object) -> str:
    return str(uuid.uuid5(NS, "/".join(str(p) for p in parts)))


def seed(services: Any, residents_count: int = 48) -> str:
    points = services.points
    rng = random.Random(20261123)
    points.setup_programme(
        TENANT,
        ProgrammeCreate(
            name_ja="たかさご未来資産ポイント",
            name_en="Takasago Future Points",
            eligible_towns=list(ELIGIBLE),
            thanks_daily_limit=300,
            volunteer_year_cap=5000,
        ),
    )
    with writer(services.engine).begin() as conn:
        existing = set(conn.execute(select(users.c.username)).scalars())
        for n in range(1, residents_count + 1):
            name = f"takasago-r{n:02d}"
            if name not in existing:
                create_user(conn, name, _name(n)[0], Role.RESIDENT, PASSWORD, [TENANT])
        for code, name, *_ in SHOPS:
            if f"shop-{code}" not in existing:
                create_user(conn, f"shop-{code}", name, Role.MERCHANT, PASSWORD, [TENANT])
    points.set_staff_role(TENANT, "takasago-staff", "admin")
    for i, (code, name, category, town, address) in enumerate(SHOPS):
        points.register_shop(
            TENANT,
            ShopCreate(
                code=code,
                name=name,
                category=category,
                town=town,
                address=address,
                username=f"shop-{code}",
                fee_bp=150,
                bank_code="0173",
                branch_code=f"{101 + i:03d}",
                account_type="1",
                account_number=f"{1200000 + i * 731:07d}",
                holder_kana="ﾃﾞﾓ ｼｮｳﾃﾝ",
            ),
        )
    # 地域ポイント: +10 % premium, 180 days, sold at the city office's counter.
    points.setup_purchase(TENANT, PurchaseProgrammeCreate())
    people = []
    for n in range(1, residents_count + 1):
        real, kana = _name(n)
        r = points.register_resident(
            TENANT,
            f"takasago-r{n:02d}",
            ResidentCreate(real_name=real, kana=kana, town=TOWNS[n % len(TOWNS)]),
        )
        if n % 12 != 0:  # a few wait for verification at the counter
            r = points.verify_resident(TENANT, r.id, "staff:takasago-staff")
        people.append(r)
    verified = [r for r in people if r.verified]
    day = today()
    start = day.replace(day=1) - timedelta(days=92)
    start = start.replace(day=1)
    # Payments depend on balances, which the first run changes; a later run replays the
    # fixed-id events (eco actions, volunteering) and leaves spending as it was.
    first_run = points.coupon(TENANT, "shoutengai-300") is None
    if first_run:
        points.create_coupon(
            TENANT,
            CouponCreate(
                code="shoutengai-300",
                title_ja="商店街お買い物券 300円",
                title_en="Shopping street ¥300 off",
                kind="amount",
                value=300,
                min_purchase=1000,
                valid_from=day.replace(day=1),
                valid_until=day + timedelta(days=40),
                quota_per_resident=2,
            ),
            "takasago-staff",
        )
        points.create_coupon(
            TENANT,
            CouponCreate(
                code="cafe-10",
                title_ja="高砂港カフェ 10%引き",
                title_en="10% off at Takasago Port Cafe",
                kind="percent",
                value=10,
                max_discount=500,
                valid_from=day.replace(day=1),
                valid_until=day + timedelta(days=20),
                shops=["takasago-cafe"],
                quota_per_resident=1,
            ),
            "takasago-staff",
        )
    actions = [a for a in points.actions(TENANT, active_only=True) if a.approval == "auto"]
    logged = 0
    for r in verified:
        d = start
        while d <= day:
            if rng.random() < 0.22:
                action = rng.choice(actions)
                quantity = round(rng.uniform(2, 9), 1) if action.per == "km" else 1
                try:
                    points.log_action(
                        TENANT,
                        r,
                        EcoLogIn(
                            id=_id("eco", r.member_code, d, action.code),
                            action=action.code,
                            action_date=d,
                            quantity=quantity,
                        ),
                        max_age_days=None,
                    )
                    logged += 1
                except PointsError:
                    pass  # a cap: the demo residents are keen
            d += timedelta(days=1)
    meter = next(a for a in points.actions(TENANT) if a.evidence == "meter")
    for r in verified[:3]:
        with contextlib.suppress(PointsError):
            points.log_action(
                TENANT,
                r,
                EcoLogIn(
                    id=_id("meter", r.member_code),
                    action=meter.code,
                    quantity=rng.randint(12, 40),
                    meter_reading=rng.randint(3000, 9000),
                ),
            )
    for i, r in enumerate(verified[::2]):
        with contextlib.suppress(PointsError):
            points.record_volunteering(
                TENANT,
                VolunteerIn(
                    id=_id("volunteer", r.member_code),
                    member_code=r.member_code,
                    activity=("介護施設での話し相手", "通学路の見守り", "河川敷の清掃")[i % 3],
                    activity_date=day - timedelta(days=rng.randint(1, 20)),
                    hours=2,
                    points=(400, 600, 800)[i % 3],
                ),
                "takasago-staff",
            )
    sold = 0
    for i, r in enumerate(verified[::4]):  # receipt numbers are fixed: a rerun sells nothing
        points.sell(
            TENANT,
            SaleIn(
                receipt=f"DEMO-{i + 1:04d}",
                member_code=r.member_code,
                yen=(10_000, 5_000, 20_000, 3_000)[i % 4],
            ),
        )
        sold += 1
    paid = 0
    eligible_shops = [s for s in SHOPS if s[3] in ELIGIBLE]
    for i, r in enumerate(verified if first_run else []):
        for k in range(3):
            shop = eligible_shops[(i + k) % len(eligible_shops)][0]
            balance = services.ledger.get_account(TENANT, r.wallet).available
            purchased = points.spendable(TENANT, purchased_wallet(r, "rp"))
            if k == 2 and not purchased:
                continue
            balance += purchased
            amount = rng.choice((120, 180, 240, 320, 450, 680))
            if k == 2:  # a bigger bill: administrative points first, then 地域ポイント
                amount = rng.choice((1_800, 2_400, 3_200))
            coupon = None
            if k == 0 and balance >= 700:  # the shopping-street coupon on a bigger bill
                amount, coupon = (1200 if balance >= 900 else 1000), "shoutengai-300"
            if amount - (300 if coupon else 0) > balance:
                continue
            pid = _id("pay", r.member_code, k)
            try:
                p = points.authorize(
                    TENANT, r, PaymentIn(id=pid, shop=shop, amount=amount, coupon=coupon)
                )
                if p.status == "authorized":
                    points.confirm(TENANT, r, pid)
                paid += 1
            except PointsError:
                pass
    for i, r in enumerate(verified[:20] if first_run else []):
        to = verified[(i + 5) % len(verified)]
        with contextlib.suppress(PointsError):
            points.thank(
                TENANT,
                r,
                ThanksIn(
                    id=_id("thanks", r.member_code),
                    to=to.member_code,
                    amount=rng.choice((20, 30, 50)),
                    message=rng.choice(
                        (
                            "ゴミ出しを手伝ってくれてありがとう",
                            "野菜をありがとう！",
                            "見守りありがとうございます",
                        )
                    ),
                ),
            )
    published = publish_months(services, TENANT, SYSTEM)
    return (
        f"points: たかさご未来資産 — {len(people)} residents ({len(verified)} verified), "
        f"{len(SHOPS)} shops, {logged} eco logs over 4 months, {sold} 地域ポイント sales, "
        f"{paid} payments, "
        f"{published} monthly aggregates published; resident takasago-r01, shop "
        f"shop-sakura-bakery, staff takasago-staff / {PASSWORD} → /points"
    )


def _name(n: int) -> tuple[str, str]:
    f, g = (n * 7) % len(FAMILY), (n * 5) % len(GIVEN)
    return f"{FAMILY[f]} {GIVEN[g]}", f"{FAMILY_KANA[f]} {GIVEN_KANA[g]}"
