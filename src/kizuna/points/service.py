"""The points module's front door: programmes on top of the ledger.

Every point that moves goes through :class:`kizuna.ledger.service.Ledger` (one transfer or
one linked chain per event, with an id derived from the client-chosen event id, so a retry
or a double tap moves nothing twice). This module keeps what the ledger does not know:
residents (実名), shops, the eco-action catalogue and its CO2 arithmetic, coupons, and a
read model of the ledger's transfers (``points_moves``) for pages and the dashboard.

Errors are :class:`PointsError` (a Problem with a Japanese and an English message); nothing
is moved when one is raised.

    points = Points(engine, ledger, data_dir)
    points.setup_programme("takasago", ProgrammeCreate(name_ja="たかさご未来資産"))
    resident = points.register_resident("takasago", "hanako", ResidentCreate(...))
    points.log_action("takasago", resident, EcoLogIn(id=..., action="my-bag"))
    payment = points.authorize("takasago", resident, PaymentIn(id=..., shop="s1", amount=500))
    points.confirm("takasago", resident, payment.id)
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import secrets
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cachetools import TTLCache
from sqlalchemy import Engine, case, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from kizuna.ledger.schemas import (
    AccountCreate,
    AccountKind,
    CurrencyCreate,
    CurrencyKind,
    MerchantTerms,
    PurchaseCreate,
    PurchasePublic,
    PurchaseRules,
    SettlementPublic,
    TransferCreate,
    TransferPublic,
    TransferResult,
)
from kizuna.ledger.service import Ledger, Originator, derived_id, system_accounts
from kizuna.points.models import (
    actions,
    coupon_uses,
    coupons,
    cursors,
    eco_logs,
    factors,
    messages,
    moves,
    programmes,
    residents,
    shops,
    staff,
    volunteering,
)
from kizuna.points.schemas import (
    Action,
    ActionIn,
    Coupon,
    CouponCreate,
    EcoLog,
    EcoLogIn,
    Factor,
    FactorCreate,
    Payment,
    PaymentIn,
    Programme,
    ProgrammeCreate,
    PurchaseProgrammeCreate,
    Resident,
    ResidentCreate,
    SaleIn,
    Shop,
    ShopCreate,
    ThanksIn,
    VolunteerIn,
)
from kizuna.problems import Problem
from kizuna.storage import is_postgres, writer

JST = timezone(timedelta(hours=9))
PREFIX = "urn:kizuna:errors:points:"
CACHE_SECONDS = 5
HOLD_SECONDS = 300  # a payment's hold lasts 5 minutes (then the ledger's job voids it)
ONE_OFF_QR_SECONDS = 300  # a shop's one-off QR with an amount is valid 5 minutes
BUDGETS = ("eco", "volunteer", "coupon")
PREMIUM_BUDGET = "budget:premium"  # in the purchased currency: the city's premium cost
STAFF_ROLES = ("admin", "clerk", "viewer")

# Emission factors every new programme starts with (versioned; staff add newer years).
DEFAULT_FACTORS = (
    FactorCreate(
        code="electricity",
        fiscal_year=2023,
        kg_per_unit=0.423,
        unit="kWh",
        source="電気事業者別排出係数 全国平均係数（代替値）0.000423 t-CO2/kWh",
    ),
    FactorCreate(
        code="gasoline",
        fiscal_year=2023,
        kg_per_unit=2.32,
        unit="L",
        source="温対法 算定・報告・公表制度 ガソリン 2.32 kg-CO2/L",
    ),
    FactorCreate(
        code="city_gas",
        fiscal_year=2023,
        kg_per_unit=2.23,
        unit="Nm3",
        source="温対法 算定・報告・公表制度 都市ガス 2.23 kg-CO2/Nm³",
    ),
)
FACTOR_OF_UNIT = {"kWh": "electricity", "L": "gasoline", "Nm3": "city_gas", "kgCO2": None}

# The eco actions a new programme starts with; the city edits them on the catalogue page.
DEFAULT_ACTIONS = (
    ActionIn(
        code="cooling-28",
        name_ja="冷房の設定温度を27℃→28℃に",
        name_en="Air conditioner at 28 °C instead of 27 °C",
        category="energy",
        per="day",
        saving=round(30.24 / 112, 4),
        saving_unit="kWh",
        basis="30.24 kWh/年（冷房112日・1日9時間）を1日あたりに換算（省エネルギーセンター）",
        points=5,
        cap_per_day=1,
        cap_points_month=150,
    ),
    ActionIn(
        code="heating-20",
        name_ja="暖房の設定温度を21℃→20℃に",
        name_en="Heating at 20 °C instead of 21 °C",
        category="energy",
        per="day",
        saving=round(53.08 / 169, 4),
        saving_unit="kWh",
        basis="53.08 kWh/年（暖房169日・1日9時間）を1日あたりに換算（省エネルギーセンター）",
        points=5,
        cap_per_day=1,
        cap_points_month=150,
    ),
    ActionIn(
        code="my-bag",
        name_ja="マイバッグで買い物（レジ袋を断る）",
        name_en="Shopping with my own bag",
        category="waste",
        per="times",
        saving=0.06,
        saving_unit="kgCO2",
        basis="レジ袋1枚の製造から焼却まで約60 g-CO2（参考値）",
        points=3,
        cap_per_day=2,
        cap_points_month=90,
    ),
    ActionIn(
        code="bus-commute",
        name_ja="車の代わりにバス・電車で通勤",
        name_en="Bus or train instead of the car",
        category="transport",
        per="km",
        saving=0.073,
        saving_unit="kgCO2",
        basis="自家用車130 g − バス57 g-CO2/人km（国土交通省 運輸部門の排出原単位）",
        points=2,
        cap_per_day=2,
        cap_points_month=400,
    ),
    ActionIn(
        code="bike-commute",
        name_ja="車の代わりに自転車・徒歩で移動",
        name_en="Cycling or walking instead of the car",
        category="transport",
        per="km",
        saving=0.13,
        saving_unit="kgCO2",
        basis="自家用車 130 g-CO2/人km（国土交通省 運輸部門の排出原単位）",
        points=3,
        cap_per_day=2,
        cap_points_month=400,
    ),
    ActionIn(
        code="meter-saving",
        name_ja="電気メーターの節電（前月比）",
        name_en="Electricity saved on the meter (vs last month)",
        category="energy",
        per="times",
        saving=1,
        saving_unit="kWh",
        basis="メーターの読みで確認した前月比の削減量（1 kWhごと）",
        points=1,
        cap_per_day=1,
        cap_points_month=300,
        approval="staff",
        evidence="meter",
    ),
)

# What a ledger error means for a resident or a shop, in words they understand.
LEDGER_MESSAGES: dict[str, tuple[str, str]] = {
    "insufficient-funds": (
        "ポイント残高が足りません。",
        "Not enough points in the wallet.",
    ),
    "daily-limit-exceeded": (
        "きょう贈れるポイントの上限を超えます。",
        "This is over today's limit for thanks.",
    ),
    "credit-cap-exceeded": ("予算の上限に達しました。", "The budget cap is reached."),
    "debit-cap-exceeded": ("予算の上限に達しました。", "The budget cap is reached."),
    "pending-expired": (
        "お支払いの有効期限（5分）が切れました。もう一度QRコードを読み取ってください。",
        "The payment expired (5 minutes). Scan the QR code again.",
    ),
    "pending-already-resolved": (
        "このお支払いはすでに確定または取消されています。",
        "This payment was already completed or cancelled.",
    ),
    "account-closed": ("このアカウントは停止されています。", "The account is closed."),
}


class PointsError(Problem):
    """A refusal with a message for people (Japanese first); nothing was moved."""

    def __init__(self, status: int, code: str, ja: str, en: str) -> None:
        super().__init__(status, PREFIX + code, en, ja, ja=ja, en=en)
        self.code = code
        self.ja = ja
        self.en = en


def error(code: str, ja: str, en: str, status: int = 422) -> PointsError:
    return PointsError(status, code, ja, en)


def now() -> datetime:
    """The clock of the module (tests move it to the next month to settle this one)."""
    return datetime.now(UTC)


def today() -> date:
    return now().astimezone(JST).date()


def month_of(moment: datetime) -> str:
    return moment.astimezone(JST).strftime("%Y-%m")


def fiscal_year(day: date) -> int:
    return day.year if day.month >= 4 else day.year - 1


def ledger_error(result: TransferResult) -> PointsError:
    """A failed ledger result as a PointsError with words for people."""
    assert result.error is not None
    code = result.error.type.rsplit(":", 1)[-1]
    ja, en = LEDGER_MESSAGES.get(
        code, ("処理できませんでした。時間をおいてもう一度お試しください。", "Could not do that.")
    )
    return PointsError(result.error.status, code, ja, en)


def _tid(tenant: str, *parts: object) -> str:
    return derived_id("points", tenant, *parts)


def _memo(**values: Any) -> str:
    return ";".join(f"{k}={v}" for k, v in values.items() if v is not None)


def _parse_memo(memo: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (memo or "").split(";"):
        key, _, value = part.partition("=")
        if key:
            out[key] = value
    return out


@dataclass
class Wallet:
    balance: int
    available: int
    pending: int
    expiring: list[tuple[datetime, int]]
    history: list[dict[str, Any]]
    # 地域ポイント (None when the programme sells none): balance, available, what expires when
    purchased: Purse | None = None


@dataclass
class Purse:
    currency: str
    name_ja: str
    name_en: str
    balance: int
    available: int
    expiring: list[tuple[datetime, int]]


@dataclass
class Sale:
    """A counter sale as recorded (``replay``: the same receipt was sold before)."""

    receipt: str
    resident: Resident
    purchase: PurchasePublic
    replay: bool


def purchased_wallet(resident: Resident, currency: str) -> str:
    return f"{resident.wallet}:{currency}"


def purchased_shop_account(shop: Shop, currency: str) -> str:
    return f"{shop.account}:{currency}"


def shop_code_of(account: str) -> str:
    """``shop:<code>`` or ``shop:<code>:<purchased currency>`` → ``<code>``."""
    return account.removeprefix("shop:").split(":", 1)[0]


def payment_parts(points: int, discount: int, purchased: int) -> list[tuple[str, str]]:
    """The holds of a payment as (part, id suffix): administrative points from the wallet,
    the coupon's discount, purchased points — each present when > 0, suffixes "", "2", "3"
    in that order (a payment without purchased points keeps its former ids)."""
    present = [
        part
        for part, n in (("pt", points - purchased), ("coupon", discount), ("rp", purchased))
        if n > 0
    ]
    return [(part, "" if i == 0 else str(i + 1)) for i, part in enumerate(present)]


@dataclass
class PayLink:
    tenant: str
    shop: Shop
    amount: int | None  # one-off QR: the amount the shop asked for
    payment_id: str | None  # one-off QR: the payment it stands for (so it pays once)


@dataclass
class PayPlan:
    """A checked payment: its hold transfer(s), to hand to the ledger."""

    spec: PaymentIn
    shop: Shop
    discount: int
    points: int
    use_n: int | None
    items: list[TransferCreate]
    purchased: int = 0


@dataclass
class ConfirmPlan:
    payment_id: str
    hold: TransferPublic
    memo: dict[str, str]
    bill: int
    discount: int
    points: int
    expires: datetime
    items: list[TransferCreate]
    purchased: int = 0


@dataclass
class Dashboard:
    months: list[str]
    flows: dict[str, dict[str, int]]  # month → issued / spent / expired / refunded / coupon
    co2_by_month: dict[str, dict[str, float]]  # month → category → kg
    co2_by_town: dict[str, float]
    co2_by_action: dict[str, float]
    spent_by_town: dict[str, int]
    active: dict[str, int]  # month → residents who earned or spent
    outstanding: int  # administrative points in wallets
    outstanding_purchased: int = 0  # 地域ポイント in wallets (the city owes shops for them)
    purchase_currency: str | None = None
    totals: dict[str, float] = field(default_factory=dict)


class Points:
    """One per process (``app.state.services.points``); thread-safe."""

    def __init__(self, engine: Engine, ledger: Ledger, data_dir: Path, qr_secret: str = "") -> None:
        self.engine = engine
        self.ledger = ledger
        self.data_dir = data_dir
        self._secret = qr_secret.encode() if qr_secret else b""
        self._secret_lock = threading.Lock()
        self._programmes: dict[str, Programme] = {}
        # Hot lookups of the pay path, briefly cached: another server's change (a shop
        # closed, a resident verified) is seen within CACHE_SECONDS; this one's at once.
        self._cache: TTLCache[tuple, Any] = TTLCache(maxsize=50_000, ttl=CACHE_SECONDS)
        self._cache_lock = threading.Lock()

    # --- programme ---------------------------------------------------------------------------

    def setup_programme(self, tenant: str, spec: ProgrammeCreate) -> Programme:
        """Create (or return) the tenant's programme: ledger currency, budgets funded from
        issuance, default emission factors and eco actions. Safe to run again."""
        self.ledger.create_currency(
            tenant,
            CurrencyCreate(
                code=spec.currency,
                name_ja=spec.name_ja,
                name_en=spec.name_en,
                kind=CurrencyKind.ADMINISTRATIVE,
                expiry_days=spec.expiry_days,
            ),
        )
        for name in BUDGETS:
            self.ledger.open_account(
                tenant,
                AccountCreate(
                    code=f"budget:{name}",
                    currency=spec.currency,
                    kind=AccountKind.BUDGET,
                    name=f"{spec.name_ja} {name}",
                ),
            )
        with writer(self.engine).begin() as conn:
            if conn.execute(
                select(programmes.c.tenant_id).where(programmes.c.tenant_id == tenant)
            ).first():
                pass
            else:
                conn.execute(
                    insert(programmes).values(
                        tenant_id=tenant,
                        currency=spec.currency,
                        name_ja=spec.name_ja,
                        name_en=spec.name_en,
                        eligible_towns=spec.eligible_towns,
                        thanks_daily_limit=spec.thanks_daily_limit,
                        volunteer_year_cap=spec.volunteer_year_cap,
                    )
                )
        for factor in DEFAULT_FACTORS:
            self.add_factor(tenant, factor)
        for action in DEFAULT_ACTIONS:
            if self.action(tenant, action.code) is None:
                self.upsert_action(tenant, action)
        for name, amount in spec.budgets.items():
            self.fund_budget(tenant, name, amount, _tid(tenant, "initial-budget", name))
        self._programmes.pop(tenant, None)
        return self.programme(tenant)

    def programme(self, tenant: str) -> Programme:
        hit = self._programmes.get(tenant)
        if hit is not None:
            return hit
        with self.engine.connect() as conn:
            row = conn.execute(select(programmes).where(programmes.c.tenant_id == tenant)).first()
        if row is None:
            raise error(
                "no-programme",
                "この自治体ではポイント事業がまだ始まっていません。",
                "This municipality runs no points programme yet.",
                404,
            )
        out = Programme(
            tenant=tenant,
            currency=row.currency,
            name_ja=row.name_ja,
            name_en=row.name_en,
            eligible_towns=list(row.eligible_towns or []),
            thanks_daily_limit=row.thanks_daily_limit,
            volunteer_year_cap=row.volunteer_year_cap,
            purchase_currency=row.purchase_currency,
        )
        self._programmes[tenant] = out
        return out

    def setup_purchase(self, tenant: str, spec: PurchaseProgrammeCreate) -> Programme:
        """Start selling 地域ポイント: the purchased currency with its premium and expiry,
        per-resident limits, the premium budget (funded once) and a merchant account per
        shop. Safe to run again; limits may be changed by running it with new ones."""
        self.programme(tenant)  # a purchased currency sits beside the programme's own
        cur = spec.currency
        self.ledger.create_currency(
            tenant,
            CurrencyCreate(
                code=cur,
                name_ja=spec.name_ja,
                name_en=spec.name_en,
                kind=CurrencyKind.PURCHASED,
                expiry_days=spec.expiry_days,
                premium_bp=spec.premium_bp,
            ),
        )
        self.ledger.set_purchase_rules(
            tenant,
            cur,
            PurchaseRules(
                max_yen_per_purchase=spec.max_yen_per_purchase,
                max_yen_per_year=spec.max_yen_per_year,
            ),
        )
        self.ledger.open_account(
            tenant,
            AccountCreate(
                code=PREMIUM_BUDGET, currency=cur, kind=AccountKind.BUDGET, name=spec.name_ja
            ),
        )
        if spec.premium_budget:
            self._post(
                tenant,
                TransferCreate(
                    id=_tid(tenant, "initial-budget", PREMIUM_BUDGET),
                    debit_account=system_accounts(cur)["issuance"],
                    credit_account=PREMIUM_BUDGET,
                    amount=spec.premium_budget,
                    currency=cur,
                    code="budget",
                ),
            )
        with writer(self.engine).begin() as conn:
            conn.execute(
                update(programmes)
                .where(programmes.c.tenant_id == tenant)
                .values(purchase_currency=cur)
            )
        self._programmes.pop(tenant, None)
        for shop in self.list_shops(tenant):
            self._open_purchased_shop(tenant, shop, cur)
        return self.programme(tenant)

    def purchase_terms(self, tenant: str) -> Any:
        """The purchased currency as the ledger has it (premium, expiry, limits), or None."""
        cur = self.programme(tenant).purchase_currency
        return next((c for c in self.ledger.list_currencies(tenant) if c.code == cur), None)

    def sell(self, tenant: str, spec: SaleIn) -> Sale:
        """Record a counter sale: the resident paid ``yen`` in cash; their 地域ポイント
        wallet gets yen + premium. The receipt number is the idempotency key: the same
        receipt again returns the first sale; with another amount or resident → refused."""
        prog = self.programme(tenant)
        cur = prog.purchase_currency
        if cur is None:
            raise error(
                "no-purchase",
                "この自治体では地域ポイントを販売していません。",
                "This municipality sells no regional points.",
                404,
            )
        resident = self.resident_by_code(tenant, spec.member_code)
        if resident is None:
            raise error(
                "member-not-found",
                "その会員番号の方は見つかりません。番号をご確認ください（販売していません）。",
                "No resident has that member code (nothing was sold).",
                404,
            )
        if not resident.verified:
            raise error(
                "not-verified",
                "この方は実名の確認がまだです。本人確認を済ませてから販売してください（販売していません）。",
                "This resident is not verified yet (nothing was sold).",
                403,
            )
        wallet = purchased_wallet(resident, cur)
        self.ledger.open_account(
            tenant, AccountCreate(code=wallet, currency=cur, kind=AccountKind.RESIDENT)
        )
        try:
            done = self.ledger.purchase(
                tenant,
                PurchaseCreate(
                    id=_tid(tenant, "sale", spec.receipt),
                    currency=cur,
                    account=wallet,
                    yen=spec.yen,
                    premium_account=PREMIUM_BUDGET,
                    ref=spec.receipt,
                    memo=_memo(m=resident.member_code),
                ),
            )
        except Problem as exc:
            raise _sale_refused(exc, spec) from None
        return Sale(spec.receipt, resident, done, replay=not done.created)

    def purchased_this_year(self, tenant: str, resident: Resident) -> int:
        """Yen the resident has paid for 地域ポイント this fiscal year (for the counter)."""
        cur = self.programme(tenant).purchase_currency
        if cur is None:
            return 0
        self.sync(tenant)
        fy = fiscal_year(today())
        start = datetime(fy, 4, 1, tzinfo=JST).astimezone(UTC)
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.coalesce(func.sum(moves.c.amount), 0)).where(
                        moves.c.tenant_id == tenant,
                        moves.c.credit == purchased_wallet(resident, cur),
                        moves.c.code == "purchase",
                        moves.c.at >= start,
                    )
                ).scalar_one()
            )

    def recent_sales(self, tenant: str, limit: int = 20) -> list[dict[str, Any]]:
        """The latest counter sales (yen and premium per receipt), newest first."""
        self.sync(tenant)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(moves)
                .where(moves.c.tenant_id == tenant, moves.c.code.in_(("purchase", "premium")))
                .order_by(moves.c.seq.desc())
                .limit(limit * 2)
            ).all()
        sales: dict[str, dict[str, Any]] = {}
        for r in reversed(rows):
            sale = sales.setdefault(
                r.ref or r.transfer_id,
                {
                    "receipt": r.ref,
                    "at": r.at,
                    "member_code": _parse_memo(r.memo).get("m", ""),
                    "yen": 0,
                    "premium": 0,
                },
            )
            sale["yen" if r.code == "purchase" else "premium"] += r.amount
        return sorted(sales.values(), key=lambda s: s["at"], reverse=True)[:limit]

    def _open_purchased_shop(self, tenant: str, shop: Shop, currency: str) -> None:
        account = purchased_shop_account(shop, currency)
        self.ledger.open_account(
            tenant,
            AccountCreate(
                code=account, currency=currency, kind=AccountKind.MERCHANT, name=shop.name
            ),
        )
        self.ledger.set_merchant_terms(tenant, account, _terms(shop))

    def has_programme(self, tenant: str) -> bool:
        try:
            self.programme(tenant)
        except PointsError:
            return False
        return True

    def set_eligible_towns(self, tenant: str, towns: list[str]) -> Programme:
        with writer(self.engine).begin() as conn:
            conn.execute(
                update(programmes)
                .where(programmes.c.tenant_id == tenant)
                .values(eligible_towns=sorted(set(towns)))
            )
        self._programmes.pop(tenant, None)
        return self.programme(tenant)

    def fund_budget(self, tenant: str, budget: str, amount: int, transfer_id: str) -> None:
        """Put ``amount`` points into a programme budget (issuance → budget:<name>)."""
        prog = self.programme(tenant)
        self._post(
            tenant,
            TransferCreate(
                id=transfer_id,
                debit_account=system_accounts(prog.currency)["issuance"],
                credit_account=f"budget:{budget}",
                amount=amount,
                currency=prog.currency,
                code="budget",
            ),
        )

    def budgets(self, tenant: str) -> dict[str, int]:
        return {
            name: self.ledger.get_account(tenant, f"budget:{name}").available for name in BUDGETS
        }

    # --- people ------------------------------------------------------------------------------

    def register_resident(self, tenant: str, username: str, spec: ResidentCreate) -> Resident:
        """A resident's real-name record and wallet (not verified yet); again: the same one."""
        prog = self.programme(tenant)
        found = self.resident_for_user(tenant, username)
        if found is not None:
            return found
        for _ in range(10):
            code = f"{secrets.randbelow(10**4):04d}-{secrets.randbelow(10**4):04d}"
            try:
                with writer(self.engine).begin() as conn:
                    conn.execute(
                        insert(residents).values(
                            tenant_id=tenant,
                            username=username,
                            member_code=code,
                            real_name=spec.real_name.strip(),
                            kana=spec.kana.strip(),
                            town=spec.town.strip(),
                        )
                    )
                break
            except IntegrityError:
                found = self.resident_for_user(tenant, username)
                if found is not None:
                    return found
        resident = self.resident_for_user(tenant, username)
        assert resident is not None
        self.ledger.open_account(
            tenant,
            AccountCreate(
                code=resident.wallet,
                currency=prog.currency,
                kind=AccountKind.RESIDENT,
                daily_send_limit=prog.thanks_daily_limit,
            ),
        )
        return resident

    def verify_resident(self, tenant: str, resident_id: int, by: str) -> Resident:
        """実名確認: staff checked an identity document, or an OIDC identity claim did."""
        with writer(self.engine).begin() as conn:
            conn.execute(
                update(residents)
                .where(
                    residents.c.tenant_id == tenant,
                    residents.c.id == resident_id,
                    residents.c.verified_at.is_(None),
                )
                .values(verified_at=now(), verified_by=by)
            )
        found = self._resident_where(residents.c.tenant_id == tenant, residents.c.id == resident_id)
        if found is None:
            raise error("resident-not-found", "住民が見つかりません。", "No such resident.", 404)
        self._forget("resident", tenant, found.username)
        return found

    def resident_for_user(self, tenant: str, username: str) -> Resident | None:
        key = ("resident", tenant, username)
        with self._cache_lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        found = self._resident_where(
            residents.c.tenant_id == tenant, residents.c.username == username
        )
        if found is not None:
            with self._cache_lock:
                self._cache[key] = found
        return found

    def _forget(self, *key: object) -> None:
        with self._cache_lock:
            self._cache.pop(key, None)

    def resident_by_code(self, tenant: str, member_code: str) -> Resident | None:
        code = member_code.strip().replace(" ", "")
        if len(code) == 8 and code.isdigit():
            code = f"{code[:4]}-{code[4:]}"
        return self._resident_where(
            residents.c.tenant_id == tenant, residents.c.member_code == code
        )

    def _resident_where(self, *conditions: Any) -> Resident | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(residents).where(*conditions)).first()
        return None if row is None else _resident(row)

    def list_residents(
        self, tenant: str, *, unverified: bool = False, limit: int = 200
    ) -> list[Resident]:
        query = select(residents).where(residents.c.tenant_id == tenant)
        if unverified:
            query = query.where(residents.c.verified_at.is_(None))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(residents.c.kana).limit(limit)).all()
        return [_resident(r) for r in rows]

    def count_residents(self, tenant: str) -> tuple[int, int]:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(func.count(), func.count(residents.c.verified_at)).where(
                    residents.c.tenant_id == tenant
                )
            ).one()
        return int(row[0]), int(row[1])

    def register_shop(self, tenant: str, spec: ShopCreate) -> Shop:
        """Register (or update) a shop: its merchant account and settlement terms."""
        prog = self.programme(tenant)
        values = spec.model_dump()
        with writer(self.engine).begin() as conn:
            exists = conn.execute(
                select(shops.c.id).where(shops.c.tenant_id == tenant, shops.c.code == spec.code)
            ).first()
            if exists:
                conn.execute(update(shops).where(shops.c.id == exists.id).values(**values))
            else:
                conn.execute(insert(shops).values(tenant_id=tenant, **values))
        self._forget("shop", tenant, spec.code)
        account = f"shop:{spec.code}"
        self.ledger.open_account(
            tenant,
            AccountCreate(
                code=account, currency=prog.currency, kind=AccountKind.MERCHANT, name=spec.name
            ),
        )
        shop = self.shop(tenant, spec.code)
        assert shop is not None
        self.ledger.set_merchant_terms(tenant, account, _terms(shop))
        if prog.purchase_currency:
            self._open_purchased_shop(tenant, shop, prog.purchase_currency)
        return shop

    def shop(self, tenant: str, code: str) -> Shop | None:
        key = ("shop", tenant, code)
        with self._cache_lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        with self.engine.connect() as conn:
            row = conn.execute(
                select(shops).where(shops.c.tenant_id == tenant, shops.c.code == code)
            ).first()
        if row is None:
            return None
        found = _shop(row)
        with self._cache_lock:
            self._cache[key] = found
        return found

    def shop_for_user(self, tenant: str, username: str) -> Shop | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(shops)
                .where(shops.c.tenant_id == tenant, shops.c.username == username)
                .order_by(shops.c.id)
            ).first()
        return None if row is None else _shop(row)

    def list_shops(self, tenant: str) -> list[Shop]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(shops).where(shops.c.tenant_id == tenant).order_by(shops.c.code)
            ).all()
        return [_shop(r) for r in rows]

    def set_staff_role(self, tenant: str, username: str, role: str) -> None:
        if role not in STAFF_ROLES:
            raise error("invalid-role", "役割が正しくありません。", "Unknown staff role.", 400)
        with writer(self.engine).begin() as conn:
            conn.execute(
                delete(staff).where(staff.c.tenant_id == tenant, staff.c.username == username)
            )
            conn.execute(insert(staff).values(tenant_id=tenant, username=username, role=role))

    def staff_role(self, tenant: str, username: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(staff.c.role).where(
                    staff.c.tenant_id == tenant, staff.c.username == username
                )
            ).scalar_one_or_none()

    # --- catalogue ---------------------------------------------------------------------------

    def add_factor(self, tenant: str, spec: FactorCreate) -> Factor:
        """Add an emission factor for a fiscal year; existing years are never changed (a
        logged action keeps the factor it was computed with)."""
        with writer(self.engine).begin() as conn:
            row = conn.execute(
                select(factors).where(
                    factors.c.tenant_id == tenant,
                    factors.c.code == spec.code,
                    factors.c.fiscal_year == spec.fiscal_year,
                )
            ).first()
            if row is None:
                conn.execute(insert(factors).values(tenant_id=tenant, **spec.model_dump()))
                row = conn.execute(
                    select(factors).where(
                        factors.c.tenant_id == tenant,
                        factors.c.code == spec.code,
                        factors.c.fiscal_year == spec.fiscal_year,
                    )
                ).one()
            elif (row.kg_per_unit, row.unit) != (spec.kg_per_unit, spec.unit):
                raise error(
                    "factor-exists",
                    f"{spec.fiscal_year}年度の係数はすでに登録されています（変更はできません）。",
                    f"The FY{spec.fiscal_year} factor exists and cannot be changed.",
                    409,
                )
        return _factor(row)

    def factors(self, tenant: str) -> list[Factor]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(factors)
                .where(factors.c.tenant_id == tenant)
                .order_by(factors.c.code, factors.c.fiscal_year.desc())
            ).all()
        return [_factor(r) for r in rows]

    def factor_for(self, tenant: str, code: str, day: date) -> Factor | None:
        """The factor in force for ``day``: the latest fiscal year not after the day's."""
        candidates = [f for f in self.factors(tenant) if f.code == code]
        fy = fiscal_year(day)
        before = [f for f in candidates if f.fiscal_year <= fy]
        chosen = max(before or candidates, key=lambda f: f.fiscal_year, default=None)
        return chosen

    def upsert_action(self, tenant: str, spec: ActionIn) -> Action:
        values = spec.model_dump()
        values["factor_code"] = FACTOR_OF_UNIT[spec.saving_unit]
        with writer(self.engine).begin() as conn:
            row = conn.execute(
                select(actions.c.id).where(
                    actions.c.tenant_id == tenant, actions.c.code == spec.code
                )
            ).first()
            if row:
                conn.execute(
                    update(actions).where(actions.c.id == row.id).values(updated_at=now(), **values)
                )
            else:
                conn.execute(insert(actions).values(tenant_id=tenant, **values))
        action = self.action(tenant, spec.code)
        assert action is not None
        return action

    def action(self, tenant: str, code: str) -> Action | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(actions).where(actions.c.tenant_id == tenant, actions.c.code == code)
            ).first()
        return None if row is None else _action(row)

    def actions(self, tenant: str, *, active_only: bool = False) -> list[Action]:
        query = select(actions).where(actions.c.tenant_id == tenant)
        if active_only:
            query = query.where(actions.c.active.is_(True))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(actions.c.category, actions.c.id)).all()
        return [_action(r) for r in rows]

    @staticmethod
    def co2_grams(action: Action, quantity: float, factor: Factor | None) -> int:
        """Grams of CO2 saved: saving × quantity × emission factor (kg-CO2 savings as is)."""
        kg = action.saving * quantity
        if action.saving_unit != "kgCO2":
            if factor is None:
                return 0
            kg *= factor.kg_per_unit
        return round(kg * 1000)

    # --- eco actions ---------------------------------------------------------------------------

    def log_action(
        self,
        tenant: str,
        resident: Resident,
        spec: EcoLogIn,
        *,
        photo: str | None = None,
        max_age_days: int | None = 31,
    ) -> EcoLog:
        """Log an eco action; auto-approved actions credit their points at once.

        Caps: ``cap_per_day`` occurrences (each occurrence is a unique slot of the day) and
        ``cap_points_month`` points (the month's last log gets what is left). The same
        ``spec.id`` again returns the first result and moves nothing.
        """
        done = self._eco_log(spec.id)
        if done is not None:
            return done.model_copy(update={"replay": True})
        if not resident.verified:
            raise _unverified()
        action = self.action(tenant, spec.action)
        if action is None or not action.active:
            raise error(
                "unknown-action", "このエコアクションは受け付けていません。", "Unknown action.", 404
            )
        day = spec.action_date or today()
        if day > today() or (max_age_days is not None and (today() - day).days > max_age_days):
            raise error(
                "bad-date",
                f"記録できるのは今日から{max_age_days}日前までの行動です。",
                f"Only actions of the last {max_age_days} days can be logged.",
            )
        quantity = spec.quantity if action.per == "km" else 1.0
        if action.evidence == "meter" and spec.meter_reading is None:
            raise error(
                "needs-meter", "メーターの数値を入力してください。", "Enter the meter reading."
            )
        if action.evidence == "meter":
            quantity = spec.quantity
        if action.evidence == "photo" and not photo:
            raise error("needs-photo", "写真を添付してください。", "Attach a photo.")
        factor = self.factor_for(tenant, action.factor_code, day) if action.factor_code else None
        co2 = self.co2_grams(action, quantity, factor)
        wanted = round(action.points * quantity)
        month_start = day.replace(day=1)
        next_month = (month_start + timedelta(days=32)).replace(day=1)
        status = "approved" if action.approval == "auto" else "pending"
        try:
            with writer(self.engine).begin() as conn:
                self._lock_resident(conn, resident.id)
                if (again := _eco_row(conn, spec.id)) is not None:
                    return _eco_log(again, action).model_copy(update={"replay": True})
                used = conn.execute(
                    select(func.count()).where(
                        eco_logs.c.resident_id == resident.id,
                        eco_logs.c.action_id == action.id,
                        eco_logs.c.action_date == day,
                    )
                ).scalar_one()
                if used >= action.cap_per_day:
                    raise error(
                        "day-cap",
                        f"「{action.name_ja}」は1日{action.cap_per_day}回までです。",
                        f"'{action.name_en}' counts at most {action.cap_per_day} times a day.",
                    )
                month_points = conn.execute(
                    select(func.coalesce(func.sum(eco_logs.c.points), 0)).where(
                        eco_logs.c.resident_id == resident.id,
                        eco_logs.c.action_id == action.id,
                        eco_logs.c.action_date >= month_start,
                        eco_logs.c.action_date < next_month,
                        eco_logs.c.status != "rejected",
                    )
                ).scalar_one()
                points = max(0, min(wanted, action.cap_points_month - int(month_points)))
                if points == 0 and wanted > 0:
                    raise error(
                        "month-cap",
                        f"「{action.name_ja}」の今月のポイント上限（{action.cap_points_month} pt）に達しています。",
                        f"This month's cap for '{action.name_en}' ({action.cap_points_month} pt) is reached.",
                    )
                conn.execute(
                    insert(eco_logs).values(
                        id=spec.id,
                        tenant_id=tenant,
                        resident_id=resident.id,
                        action_id=action.id,
                        action_date=day,
                        slot=used + 1,
                        quantity=quantity,
                        co2_g=co2,
                        factor_id=factor.id if factor else None,
                        points=points,
                        status=status,
                        meter_reading=spec.meter_reading,
                        photo=photo,
                        town=resident.town,
                    )
                )
        except IntegrityError:  # a concurrent log took the slot, or the same id raced us
            again = self._eco_log(spec.id)
            if again is not None:
                return again.model_copy(update={"replay": True})
            raise error(
                "day-cap",
                "同時に記録されました。もう一度お試しください。",
                "Logged at the same time; try again.",
                409,
            ) from None
        if status == "approved" and points > 0:
            self._credit_eco(tenant, resident, spec.id, points, action)
        found = self._eco_log(spec.id)
        assert found is not None
        return found

    def _credit_eco(
        self, tenant: str, resident: Resident, log_id: str, points: int, action: Action
    ) -> None:
        prog = self.programme(tenant)
        tid = _tid(tenant, "eco", log_id)
        try:
            self._post(
                tenant,
                TransferCreate(
                    id=tid,
                    debit_account="budget:eco",
                    credit_account=resident.wallet,
                    amount=points,
                    currency=prog.currency,
                    code="eco",
                    ref=log_id,
                    memo=_memo(a=action.code),
                ),
            )
        except PointsError:
            with writer(self.engine).begin() as conn:  # nothing was credited: forget the log
                conn.execute(delete(eco_logs).where(eco_logs.c.id == log_id))
            raise
        with writer(self.engine).begin() as conn:
            conn.execute(update(eco_logs).where(eco_logs.c.id == log_id).values(transfer_id=tid))

    def decide_log(self, tenant: str, log_id: str, approve: bool, by: str) -> EcoLog:
        """Staff approve (points credited) or reject a log waiting for approval."""
        with self.engine.connect() as conn:
            row = _eco_row(conn, log_id)
        if row is None or row.tenant_id != tenant:
            raise error("log-not-found", "記録が見つかりません。", "No such log.", 404)
        if row.status == "pending":
            with writer(self.engine).begin() as conn:
                conn.execute(
                    update(eco_logs)
                    .where(eco_logs.c.id == log_id, eco_logs.c.status == "pending")
                    .values(status="approved" if approve else "rejected", decided_by=by)
                )
        found = self._eco_log(log_id)
        assert found is not None
        if found.status == "approved" and found.transfer_id is None and found.points > 0:
            resident = self._resident_where(residents.c.id == row.resident_id)
            action = self._action_by_id(row.action_id)
            assert resident is not None and action is not None
            self._credit_eco(tenant, resident, log_id, found.points, action)
            found = self._eco_log(log_id)
            assert found is not None
        return found

    def pending_logs(self, tenant: str, limit: int = 100) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(eco_logs, actions.c.name_ja, actions.c.name_en, residents.c.real_name)
                .join(actions, actions.c.id == eco_logs.c.action_id)
                .join(residents, residents.c.id == eco_logs.c.resident_id)
                .where(eco_logs.c.tenant_id == tenant, eco_logs.c.status == "pending")
                .order_by(eco_logs.c.created_at)
                .limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

    def eco_history(self, tenant: str, resident: Resident, limit: int = 20) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(eco_logs, actions.c.name_ja, actions.c.name_en)
                .join(actions, actions.c.id == eco_logs.c.action_id)
                .where(eco_logs.c.resident_id == resident.id)
                .order_by(eco_logs.c.action_date.desc(), eco_logs.c.created_at.desc())
                .limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

    def co2_for(self, tenant: str, resident: Resident) -> dict[str, Any]:
        """The resident's CO2 saved: this month, in total, and by category (kg)."""
        month_start = today().replace(day=1)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    actions.c.category,
                    func.sum(
                        case((eco_logs.c.action_date >= month_start, eco_logs.c.co2_g), else_=0)
                    ),
                    func.sum(eco_logs.c.co2_g),
                    func.count(),
                )
                .join(actions, actions.c.id == eco_logs.c.action_id)
                .where(eco_logs.c.resident_id == resident.id, eco_logs.c.status == "approved")
                .group_by(actions.c.category)
            ).all()
        out: dict[str, Any] = {"month_kg": 0.0, "total_kg": 0.0, "count": 0, "by_category": {}}
        for category, month_grams, grams, count in rows:
            kg = (grams or 0) / 1000
            out["total_kg"] += kg
            out["month_kg"] += (month_grams or 0) / 1000
            out["count"] += count
            out["by_category"][category] = kg
        return out

    def _eco_log(self, log_id: str) -> EcoLog | None:
        with self.engine.connect() as conn:
            row = _eco_row(conn, log_id)
        if row is None:
            return None
        action = self._action_by_id(row.action_id)
        assert action is not None
        return _eco_log(row, action)

    def _action_by_id(self, action_id: int) -> Action | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(actions).where(actions.c.id == action_id)).first()
        return None if row is None else _action(row)

    def _lock_resident(self, conn: Any, resident_id: int) -> None:
        query = select(residents.c.id).where(residents.c.id == resident_id)
        if is_postgres(self.engine):
            query = query.with_for_update()
        conn.execute(query).first()

    # --- volunteering --------------------------------------------------------------------------

    def record_volunteering(self, tenant: str, spec: VolunteerIn, by: str) -> dict[str, Any]:
        """Staff record volunteer activity for points, within the yearly cap (fiscal year)."""
        replay = self._volunteering_replay(spec.id)
        if replay is not None:
            return replay
        resident = self.resident_by_code(tenant, spec.member_code)
        if resident is None:
            raise error(
                "member-not-found", "会員番号が見つかりません。", "Unknown member code.", 404
            )
        return self._award_volunteering(
            tenant,
            resident,
            spec.id,
            spec.activity,
            spec.activity_date,
            spec.hours,
            spec.points,
            by,
        )

    def award_volunteering_to_user(
        self, tenant: str, username: str, award_id: str, activity: str, day: date, points: int
    ) -> dict[str, Any]:
        """Points another module awards for volunteering (e.g. 見守り detections), paid
        into the user's own wallet under the same yearly cap. No hours are counted (0).
        Raises PointsError when the user has no verified resident record here yet."""
        replay = self._volunteering_replay(award_id)
        if replay is not None:
            return replay
        resident = self.resident_for_user(tenant, username)
        if resident is None:
            raise error(
                "not-registered",
                "ポイントの住民登録がありません。",
                "This user has no points resident record.",
                404,
            )
        return self._award_volunteering(
            tenant, resident, award_id, activity, day, 0.0, points, by=username
        )

    def _volunteering_replay(self, award_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            done = conn.execute(select(volunteering).where(volunteering.c.id == award_id)).first()
        return None if done is None else dict(done._mapping) | {"replay": True}

    def _award_volunteering(
        self,
        tenant: str,
        resident: Resident,
        award_id: str,
        activity: str,
        day: date,
        hours: float,
        points: int,
        by: str,
    ) -> dict[str, Any]:
        prog = self.programme(tenant)
        if not resident.verified:
            raise _unverified()
        fy = fiscal_year(day)
        start, end = date(fy, 4, 1), date(fy + 1, 4, 1)
        with writer(self.engine).begin() as conn:
            self._lock_resident(conn, resident.id)
            used = conn.execute(
                select(func.coalesce(func.sum(volunteering.c.points), 0)).where(
                    volunteering.c.resident_id == resident.id,
                    volunteering.c.activity_date >= start,
                    volunteering.c.activity_date < end,
                )
            ).scalar_one()
            if used + points > prog.volunteer_year_cap:
                left = max(0, prog.volunteer_year_cap - int(used))
                raise error(
                    "year-cap",
                    f"ボランティアポイントは年度{prog.volunteer_year_cap:,} ptまでです（残り {left:,} pt）。",
                    f"Volunteering earns at most {prog.volunteer_year_cap:,} pt a year ({left:,} pt left).",
                )
            conn.execute(
                insert(volunteering).values(
                    id=award_id,
                    tenant_id=tenant,
                    resident_id=resident.id,
                    activity=activity,
                    activity_date=day,
                    hours=hours,
                    points=points,
                    recorded_by=by,
                )
            )
        tid = _tid(tenant, "volunteer", award_id)
        try:
            self._post(
                tenant,
                TransferCreate(
                    id=tid,
                    debit_account="budget:volunteer",
                    credit_account=resident.wallet,
                    amount=points,
                    currency=prog.currency,
                    code="volunteer",
                    ref=award_id,
                ),
            )
        except PointsError:
            with writer(self.engine).begin() as conn:
                conn.execute(delete(volunteering).where(volunteering.c.id == award_id))
            raise
        with writer(self.engine).begin() as conn:
            conn.execute(
                update(volunteering).where(volunteering.c.id == award_id).values(transfer_id=tid)
            )
            row = conn.execute(select(volunteering).where(volunteering.c.id == award_id)).one()
        return dict(row._mapping) | {"replay": False, "real_name": resident.real_name}

    def volunteering_list(self, tenant: str, limit: int = 30) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(volunteering, residents.c.real_name)
                .join(residents, residents.c.id == volunteering.c.resident_id)
                .where(volunteering.c.tenant_id == tenant)
                .order_by(volunteering.c.created_at.desc())
                .limit(limit)
            ).all()
        return [dict(r._mapping) for r in rows]

    # --- coupons -------------------------------------------------------------------------------

    def create_coupon(self, tenant: str, spec: CouponCreate, by: str) -> Coupon:
        if spec.valid_until < spec.valid_from:
            raise error(
                "bad-period", "終了日が開始日より前です。", "The end is before the start.", 400
            )
        if spec.kind == "percent" and spec.value > 100:
            raise error("bad-percent", "割引率は100%までです。", "At most 100 % off.", 400)
        known = {s.code for s in self.list_shops(tenant)}
        if unknown := [s for s in spec.shops if s not in known]:
            raise error(
                "unknown-shop",
                f"登録されていない店舗です: {', '.join(unknown)}",
                f"Unknown shops: {', '.join(unknown)}",
                400,
            )
        with writer(self.engine).begin() as conn:
            row = conn.execute(
                select(coupons.c.id).where(
                    coupons.c.tenant_id == tenant, coupons.c.code == spec.code
                )
            ).first()
            if row is not None:
                raise error(
                    "coupon-exists",
                    "同じコードのクーポンがあります。",
                    "A coupon with that code exists.",
                    409,
                )
            conn.execute(
                insert(coupons).values(tenant_id=tenant, created_by=by, **spec.model_dump())
            )
        coupon = self.coupon(tenant, spec.code)
        assert coupon is not None
        return coupon

    def coupon(self, tenant: str, code: str) -> Coupon | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(coupons).where(coupons.c.tenant_id == tenant, coupons.c.code == code)
            ).first()
        return None if row is None else _coupon(row)

    def list_coupons(self, tenant: str) -> list[Coupon]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(coupons)
                .where(coupons.c.tenant_id == tenant)
                .order_by(coupons.c.valid_until.desc(), coupons.c.code)
            ).all()
        return [_coupon(r) for r in rows]

    def coupons_for(self, tenant: str, resident: Resident) -> list[dict[str, Any]]:
        """Coupons the resident holds: each with uses left and whether it can be used today."""
        self._release_stale_holds(tenant, resident)
        with self.engine.connect() as conn:
            used = dict(
                conn.execute(
                    select(coupon_uses.c.coupon_id, func.count())
                    .where(
                        coupon_uses.c.resident_id == resident.id,
                        coupon_uses.c.state != "released",
                    )
                    .group_by(coupon_uses.c.coupon_id)
                ).all()
            )
        out = []
        day = today()
        for c in self.list_coupons(tenant):
            n = int(used.get(c.id, 0))
            state = (
                "used"
                if n >= c.quota_per_resident
                else "expired"
                if day > c.valid_until
                else "upcoming"
                if day < c.valid_from
                else "usable"
            )
            out.append(
                {"coupon": c, "used": n, "left": max(0, c.quota_per_resident - n), "state": state}
            )
        return out

    @staticmethod
    def discount_of(coupon: Coupon, amount: int) -> int:
        if coupon.kind == "amount":
            off = coupon.value
        else:
            off = amount * coupon.value // 100
            if coupon.max_discount:
                off = min(off, coupon.max_discount)
        return min(off, amount)

    # --- paying at a shop ------------------------------------------------------------------------

    def _key(self) -> bytes:
        if self._secret:
            return self._secret
        with self._secret_lock:
            if not self._secret:
                path = self.data_dir / "points" / "qr.key"
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    tmp = path.with_suffix(f".{secrets.token_hex(4)}")
                    tmp.write_bytes(secrets.token_bytes(32))
                    tmp.chmod(0o600)
                    with contextlib.suppress(FileExistsError):
                        path.hardlink_to(tmp)  # atomic: the first server's key wins
                    tmp.unlink()
                self._secret = path.read_bytes()
        return self._secret

    def _sign(self, *parts: object) -> str:
        mac = hmac.new(self._key(), "|".join(str(p) for p in parts).encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()[:16]).decode().rstrip("=")

    def pay_path(self, tenant: str, shop: str) -> str:
        """The URL path on the shop's printed QR: opens the pay page for that shop."""
        return f"/points/pay/{tenant}/{shop}?s={self._sign('shop', tenant, shop)}"

    def one_off_path(self, tenant: str, shop: str, amount: int) -> str:
        """A QR for one bill: signed, expires in 5 minutes, and pays once (its nonce is the
        payment id)."""
        expires = int(now().timestamp()) + ONE_OFF_QR_SECONDS
        nonce = secrets.token_hex(8)
        sig = self._sign("bill", tenant, shop, amount, expires, nonce)
        return f"/points/pay/{tenant}/{shop}?a={amount}&e={expires}&n={nonce}&s={sig}"

    def check_link(
        self,
        tenant: str,
        shop_code: str,
        sig: str,
        amount: str | None = None,
        expires: str | None = None,
        nonce: str | None = None,
    ) -> PayLink:
        """Check a scanned QR: forged → refused; a one-off bill past its time → refused."""
        forged = error(
            "qr-forged",
            "このQRコードは正しくありません。お店の方に確認してください（支払いは行われていません）。",
            "This QR code is not valid. Please ask the shop (nothing was paid).",
            400,
        )
        if amount is None:
            expected = self._sign("shop", tenant, shop_code)
        else:
            expected = self._sign("bill", tenant, shop_code, amount, expires, nonce)
        if not sig or not hmac.compare_digest(sig, expected):
            raise forged
        shop = self.shop(tenant, shop_code)
        if shop is None or not shop.active:
            raise error(
                "shop-closed",
                "このお店は現在ポイントを受け付けていません。",
                "This shop does not take points now.",
            )
        if amount is None:
            return PayLink(tenant, shop, None, None)
        if not (amount.isdigit() and expires and expires.isdigit()):
            raise forged
        if int(expires) < now().timestamp():
            raise error(
                "qr-expired",
                "このQRコードは有効期限（5分）が切れています。お店の方に新しいQRコードを出してもらってください。",
                "This QR code has expired (5 minutes). Ask the shop for a new one.",
                410,
            )
        return PayLink(tenant, shop, int(amount), _tid(tenant, "bill", shop_code, nonce))

    def authorize(self, tenant: str, resident: Resident, spec: PaymentIn) -> Payment:
        """Hold the points (two-phase): the wallet's part and a coupon's part as pending
        transfers to the shop, valid 5 minutes; nothing is paid until :meth:`confirm`.

        No read first: the hold's id derives from ``spec.id``, so a replay (a double tap)
        is answered by the ledger ("exists") and only then is the payment read back."""
        plan = self.plan_authorize(tenant, resident, spec)
        if isinstance(plan, Payment):
            return plan
        try:
            first = self._post_plan(tenant, plan)
        except PointsError as exc:
            raise self.refused(tenant, resident, plan, exc) from None
        return self.authorized(tenant, resident, plan, first)

    def plan_authorize(self, tenant: str, resident: Resident, spec: PaymentIn) -> PayPlan | Payment:
        """The checks and the hold transfers of a payment (a Payment when it is a replay)."""
        if spec.coupon and self._coupon_use(spec.id):
            return self._replayed(tenant, resident, spec.id)
        if not resident.verified:
            raise _unverified()
        prog = self.programme(tenant)
        shop = self.shop(tenant, spec.shop)
        if shop is None or not shop.active:
            raise error(
                "shop-closed",
                "このお店は現在ポイントを受け付けていません。",
                "This shop does not take points now.",
            )
        if prog.eligible_towns and shop.town not in prog.eligible_towns:
            raise error(
                "shop-outside-area",
                f"{shop.name}（{shop.town}）は、このポイントの対象地域外のお店です。",
                f"{shop.name} ({shop.town}) is outside the programme's area.",
            )
        discount = 0
        use_n = None
        coupon = None
        if spec.coupon:
            coupon = self.coupon(tenant, spec.coupon)
            discount, use_n = self._take_coupon(tenant, resident, shop, coupon, spec)
        points = spec.amount - discount
        purchased = self._purchased_part(tenant, prog, resident, points)
        # A split depends on balances, which a first tap has changed: a second tap is
        # answered from the hold the first one made, not planned again.
        if purchased and self._transfer(tenant, _tid(tenant, "pay", spec.id, "hold")):
            return self._replayed(tenant, resident, spec.id)
        memo = _memo(
            m=resident.member_code, bill=spec.amount, d=discount, c=spec.coupon, r=purchased or None
        )
        cur = prog.purchase_currency or ""
        legs = {  # part → (debit, credit, amount, currency, code)
            "pt": (resident.wallet, shop.account, points - purchased, prog.currency, "payment"),
            "coupon": ("budget:coupon", shop.account, discount, prog.currency, "coupon"),
            "rp": (
                purchased_wallet(resident, cur),
                purchased_shop_account(shop, cur),
                purchased,
                cur,
                "payment",
            ),
        }
        parts = payment_parts(points, discount, purchased)
        items = []
        for i, (part, suffix) in enumerate(parts):
            debit, credit, amount, currency, code = legs[part]
            items.append(
                TransferCreate(
                    id=_tid(tenant, "pay", spec.id, "hold" + suffix),
                    debit_account=debit,
                    credit_account=credit,
                    amount=amount,
                    currency=currency,
                    code=code,
                    pending=True,
                    timeout_seconds=HOLD_SECONDS,
                    ref=spec.id,
                    memo=memo,
                    linked=i < len(parts) - 1,
                )
            )
        return PayPlan(spec, shop, discount, points, use_n, items, purchased)

    def _purchased_part(self, tenant: str, prog: Programme, resident: Resident, points: int) -> int:
        """How much of a payment the 地域ポイント wallet pays: administrative points go
        first (they are free and the city's to lose), purchased points pay the rest."""
        if not prog.purchase_currency or points <= 0:
            return 0
        wallets = [resident.wallet, purchased_wallet(resident, prog.purchase_currency)]
        administrative, purchased = self.ledger.spendable(tenant, wallets).values()
        if administrative >= points:
            return 0
        return min(points - administrative, purchased)

    def spendable(self, tenant: str, wallet: str) -> int:
        """Unexpired, unheld points of a wallet (what the ledger lets it spend now)."""
        return self.ledger.spendable(tenant, [wallet])[wallet]

    def _post_plan(self, tenant: str, plan: PayPlan) -> TransferResult:
        if len(plan.items) == 1:
            return self._submit(tenant, plan.items[0])
        return self.post_chain(tenant, plan.items)[0]

    def refused(
        self, tenant: str, resident: Resident, plan: PayPlan, exc: PointsError
    ) -> PointsError:
        """What to tell the resident when the ledger refused the hold (nothing moved)."""
        if plan.use_n is not None:
            self._release_coupon(plan.spec.id)
        if exc.code == "id-conflict":  # two taps raced: the other one holds this payment
            return error(
                "payment-in-progress",
                "このお支払いはすでに受け付けています。画面を読み込み直してください。",
                "This payment is already being processed. Reload the page.",
                409,
            )
        if exc.code != "insufficient-funds":
            return exc
        prog = self.programme(tenant)
        balance = self.spendable(tenant, resident.wallet)
        if prog.purchase_currency:
            balance += self.spendable(tenant, purchased_wallet(resident, prog.purchase_currency))
        points = plan.points
        if plan.discount and balance >= points:
            return error(
                "coupon-budget", "クーポンの予算が終了しました。", "The coupon budget is used up."
            )
        return error(
            "insufficient-funds",
            f"ポイント残高が足りません（利用できる残高 {balance:,} pt、お支払い {points:,} pt）。",
            f"Not enough points ({balance:,} pt available, {points:,} pt needed).",
        )

    def authorized(
        self, tenant: str, resident: Resident, plan: PayPlan, first: TransferResult
    ) -> Payment:
        if first.status == "exists":
            return self._replayed(tenant, resident, plan.spec.id)
        assert first.transfer is not None
        spec = plan.spec
        return Payment(
            id=spec.id,
            shop=plan.shop.code,
            shop_name=plan.shop.name,
            member_code=resident.member_code,
            amount=spec.amount,
            discount=plan.discount,
            points=plan.points,
            purchased=plan.purchased,
            coupon=spec.coupon,
            status="authorized",
            created_at=first.transfer.timestamp,
            expires_at=first.transfer.timestamp + timedelta(seconds=HOLD_SECONDS),
        )

    def _replayed(self, tenant: str, resident: Resident, payment_id: str) -> Payment:
        found = self.payment(tenant, payment_id)
        if found is None:
            raise error("payment-not-found", "お支払いが見つかりません。", "No such payment.", 404)
        self._own(found, resident)
        return found.model_copy(update={"replay": True})

    def _coupon_use(self, payment_id: str) -> bool:
        with self.engine.connect() as conn:
            return (
                conn.execute(
                    select(coupon_uses.c.n).where(coupon_uses.c.payment_id == payment_id)
                ).first()
                is not None
            )

    def _take_coupon(
        self, tenant: str, resident: Resident, shop: Shop, coupon: Coupon | None, spec: PaymentIn
    ) -> tuple[int, int]:
        if coupon is None:
            raise error("coupon-unknown", "クーポンが見つかりません。", "Unknown coupon.", 404)
        day = today()
        if day > coupon.valid_until:
            raise error(
                "coupon-expired",
                f"「{coupon.title_ja}」は有効期限（{coupon.valid_until:%Y年%m月%d日}まで）が過ぎています。",
                f"'{coupon.title_en}' expired on {coupon.valid_until}.",
            )
        if day < coupon.valid_from:
            raise error(
                "coupon-not-yet",
                f"「{coupon.title_ja}」は{coupon.valid_from:%m月%d日}から使えます。",
                f"'{coupon.title_en}' can be used from {coupon.valid_from}.",
            )
        if coupon.shops and shop.code not in coupon.shops:
            raise error(
                "coupon-shop",
                f"「{coupon.title_ja}」はこのお店では使えません。",
                f"'{coupon.title_en}' cannot be used at this shop.",
            )
        if spec.amount < coupon.min_purchase:
            raise error(
                "coupon-minimum",
                f"「{coupon.title_ja}」は{coupon.min_purchase:,}円以上のお会計で使えます。",
                f"'{coupon.title_en}' needs a bill of at least ¥{coupon.min_purchase:,}.",
            )
        discount = self.discount_of(coupon, spec.amount)
        used_up = error(
            "coupon-used",
            f"「{coupon.title_ja}」はすでに使い切っています（お一人{coupon.quota_per_resident}回まで）。",
            f"'{coupon.title_en}' is used up ({coupon.quota_per_resident} per person).",
        )
        self._release_stale_holds(tenant, resident)
        for _ in range(3):
            with self.engine.connect() as conn:
                taken = set(
                    conn.execute(
                        select(coupon_uses.c.n).where(
                            coupon_uses.c.coupon_id == coupon.id,
                            coupon_uses.c.resident_id == resident.id,
                        )
                    ).scalars()
                )
            free = [n for n in range(1, coupon.quota_per_resident + 1) if n not in taken]
            if not free:
                raise used_up
            try:
                with writer(self.engine).begin() as conn:
                    conn.execute(
                        insert(coupon_uses).values(
                            coupon_id=coupon.id,
                            resident_id=resident.id,
                            n=free[0],
                            tenant_id=tenant,
                            payment_id=spec.id,
                            discount=discount,
                            state="held",
                        )
                    )
                return discount, free[0]
            except IntegrityError:
                continue  # another payment took that use at the same moment
        raise used_up

    def _release_stale_holds(self, tenant: str, resident: Resident) -> None:
        """Give back coupon uses whose payment was never confirmed (the hold timed out and
        the ledger's job voided it, or the resident walked away)."""
        cutoff = now() - timedelta(seconds=HOLD_SECONDS + 30)
        with self.engine.connect() as conn:
            stale = (
                conn.execute(
                    select(coupon_uses.c.payment_id).where(
                        coupon_uses.c.resident_id == resident.id,
                        coupon_uses.c.state == "held",
                        coupon_uses.c.created_at < cutoff,
                    )
                )
                .scalars()
                .all()
            )
        for payment_id in stale:
            payment = self.payment(tenant, payment_id)
            if payment is None or payment.status in ("expired", "cancelled"):
                self._release_coupon(payment_id)
            elif payment.status in ("completed", "refunded"):
                with writer(self.engine).begin() as conn:
                    conn.execute(
                        update(coupon_uses)
                        .where(coupon_uses.c.payment_id == payment_id)
                        .values(state="used")
                    )

    def _release_coupon(self, payment_id: str) -> None:
        with writer(self.engine).begin() as conn:
            conn.execute(delete(coupon_uses).where(coupon_uses.c.payment_id == payment_id))

    def confirm(self, tenant: str, resident: Resident, payment_id: str) -> Payment:
        """Post the held transfers: the payment is done. A second confirm (a double tap)
        returns the completed payment (``replay``) and moves nothing."""
        plan = self.plan_confirm(tenant, resident, payment_id)
        if isinstance(plan, Payment):
            return plan
        try:
            first = self._post_plan(tenant, plan)
        except PointsError as exc:
            raise self.confirm_refused(tenant, payment_id, exc) from None
        return self.confirmed(tenant, resident, plan, first)

    def plan_confirm(
        self, tenant: str, resident: Resident, payment_id: str
    ) -> ConfirmPlan | Payment:
        """Read the hold once (whose, how much, still valid) and the post transfers."""
        hold = self._transfer(tenant, _tid(tenant, "pay", payment_id, "hold"))
        memo = _parse_memo(hold.memo if hold else None)
        if hold is None or memo.get("m") != resident.member_code:
            raise error("payment-not-found", "お支払いが見つかりません。", "No such payment.", 404)
        bill, discount = int(memo.get("bill", hold.amount)), int(memo.get("d", 0))
        points, purchased = bill - discount, int(memo.get("r", 0))
        expires = hold.timestamp + timedelta(seconds=hold.timeout_seconds or HOLD_SECONDS)
        if expires <= now():  # the ledger refuses it too; its job voids the hold soon
            found = self.payment(tenant, payment_id)
            if found is not None and found.status in ("completed", "refunded"):
                return found.model_copy(update={"replay": True})
            raise error("pending-expired", *LEDGER_MESSAGES["pending-expired"], status=410)
        parts = payment_parts(points, discount, purchased)
        items = [
            TransferCreate(
                id=_tid(tenant, "pay", payment_id, "post" + suffix),
                post_pending_id=_tid(tenant, "pay", payment_id, "hold" + suffix),
                code="coupon" if part == "coupon" else "payment",
                ref=payment_id,
                linked=i < len(parts) - 1,
            )
            for i, (part, suffix) in enumerate(parts)
        ]
        return ConfirmPlan(
            payment_id, hold, memo, bill, discount, points, expires, items, purchased
        )

    def confirm_refused(self, tenant: str, payment_id: str, exc: PointsError) -> PointsError:
        if exc.code == "pending-expired":
            return error("pending-expired", *LEDGER_MESSAGES["pending-expired"], status=410)
        if exc.code == "pending-already-resolved":
            found = self.payment(tenant, payment_id)
            if found is not None and found.status == "expired":
                return error("pending-expired", *LEDGER_MESSAGES["pending-expired"], status=410)
            return error(
                "payment-closed",
                "このお支払いは取り消されています。",
                "This payment was cancelled.",
                409,
            )
        return exc

    def confirmed(
        self, tenant: str, resident: Resident, plan: ConfirmPlan, first: TransferResult
    ) -> Payment:
        if first.status == "exists":
            return self._replayed(tenant, resident, plan.payment_id)
        if plan.discount:
            with writer(self.engine).begin() as conn:
                conn.execute(
                    update(coupon_uses)
                    .where(coupon_uses.c.payment_id == plan.payment_id)
                    .values(state="used")
                )
        shop_code = shop_code_of(plan.hold.credit_account)
        shop = self.shop(tenant, shop_code)
        return Payment(
            id=plan.payment_id,
            shop=shop_code,
            shop_name=shop.name if shop else shop_code,
            member_code=resident.member_code,
            amount=plan.bill,
            discount=plan.discount,
            points=plan.points,
            purchased=plan.purchased,
            coupon=plan.memo.get("c"),
            status="completed",
            created_at=plan.hold.timestamp,
            expires_at=plan.expires,
        )

    def cancel(self, tenant: str, resident: Resident, payment_id: str) -> Payment:
        """Void the holds (the resident pressed 取消); the coupon use is given back."""
        payment = self.payment(tenant, payment_id)
        if payment is None:
            raise error("payment-not-found", "お支払いが見つかりません。", "No such payment.", 404)
        self._own(payment, resident)
        if payment.status in ("authorized", "expired"):
            items = [
                TransferCreate(
                    id=_tid(tenant, "pay", payment_id, "void" + suffix),
                    void_pending_id=_tid(tenant, "pay", payment_id, "hold" + suffix),
                    code="cancel",
                    ref=payment_id,
                )
                for _, suffix in payment_parts(payment.points, payment.discount, payment.purchased)
            ]
            for result in self.ledger.post_transfers(tenant, items):
                if not result.ok and result.error and "already-resolved" not in result.error.type:
                    raise ledger_error(result)
            self._release_coupon(payment_id)
        found = self.payment(tenant, payment_id)
        assert found is not None
        return found

    def refund(self, tenant: str, shop: Shop, payment_id: str) -> Payment:
        """The shop gives a completed payment back in full: points to the wallet, a coupon's
        part to the coupon budget (and the coupon use back). Once per payment."""
        payment = self.payment(tenant, payment_id)
        if payment is None or payment.shop != shop.code:
            raise error("payment-not-found", "お支払いが見つかりません。", "No such payment.", 404)
        if payment.status == "refunded":
            return payment
        if payment.status != "completed":
            raise error(
                "not-refundable",
                "確定したお支払いだけ返金できます。",
                "Only completed payments can be refunded.",
                409,
            )
        prog = self.programme(tenant)
        resident = self.resident_by_code(tenant, payment.member_code)
        assert resident is not None
        cur = prog.purchase_currency or ""
        legs = {  # part → (debit, credit, amount, currency): each hold given back
            "pt": (
                shop.account,
                resident.wallet,
                payment.points - payment.purchased,
                prog.currency,
            ),
            "coupon": (shop.account, "budget:coupon", payment.discount, prog.currency),
            "rp": (
                purchased_shop_account(shop, cur),
                purchased_wallet(resident, cur),
                payment.purchased,
                cur,
            ),
        }
        parts = payment_parts(payment.points, payment.discount, payment.purchased)
        items = []
        for i, (part, suffix) in enumerate(parts):
            debit, credit, amount, currency = legs[part]
            items.append(
                TransferCreate(
                    id=_tid(tenant, "pay", payment_id, "refund" + suffix),
                    debit_account=debit,
                    credit_account=credit,
                    amount=amount,
                    currency=currency,
                    code="refund",
                    ref=payment_id,
                    linked=i < len(parts) - 1,
                )
            )
        self.post_chain(tenant, items)
        self._release_coupon(payment_id)
        found = self.payment(tenant, payment_id)
        assert found is not None
        return found

    def payment(self, tenant: str, payment_id: str) -> Payment | None:
        """A payment as the ledger has it: the hold, and whether it was posted, voided,
        timed out or refunded."""
        hold = self._transfer(tenant, _tid(tenant, "pay", payment_id, "hold"))
        if hold is None:
            return None
        memo = _parse_memo(hold.memo)
        bill, discount = int(memo.get("bill", hold.amount)), int(memo.get("d", 0))
        shop_code = shop_code_of(hold.credit_account)
        shop = self.shop(tenant, shop_code)
        expires = hold.timestamp + timedelta(seconds=hold.timeout_seconds or HOLD_SECONDS)
        if self._transfer(tenant, _tid(tenant, "pay", payment_id, "post")):
            refunded = self._transfer(tenant, _tid(tenant, "pay", payment_id, "refund"))
            status = "refunded" if refunded else "completed"
        elif self._transfer(tenant, _tid(tenant, "pay", payment_id, "void")):
            status = "cancelled"
        elif expires <= now():
            status = "expired"
        else:
            status = "authorized"
        return Payment(
            id=payment_id,
            shop=shop_code,
            shop_name=shop.name if shop else shop_code,
            member_code=memo.get("m", ""),
            amount=bill,
            discount=discount,
            points=bill - discount,
            purchased=int(memo.get("r", 0)),
            coupon=memo.get("c"),
            status=status,  # type: ignore[arg-type]
            created_at=hold.timestamp,
            expires_at=expires,
        )

    def _own(self, payment: Payment, resident: Resident) -> None:
        if payment.member_code != resident.member_code:
            raise error("payment-not-found", "お支払いが見つかりません。", "No such payment.", 404)

    # --- thanks --------------------------------------------------------------------------------

    def thank(self, tenant: str, sender: Resident, spec: ThanksIn) -> dict[str, Any]:
        """Send points with a message to another resident (daily limit in the ledger)."""
        prog = self.programme(tenant)
        tid = _tid(tenant, "thanks", spec.id)
        done = self._transfer(tenant, tid)
        if done is not None:
            return {"transfer": done, "replay": True, "to": self.resident_by_code(tenant, spec.to)}
        if not sender.verified:
            raise _unverified()
        to = self.resident_by_code(tenant, spec.to)
        if to is None:
            raise error(
                "member-not-found",
                "その会員番号の方は見つかりません。番号をご確認ください。",
                "No resident has that member code.",
                404,
            )
        if to.id == sender.id:
            raise error("thanks-self", "自分には贈れません。", "You cannot thank yourself.", 400)
        message_id = None
        if spec.message.strip():
            message_id = _tid(tenant, "message", spec.id)
            with writer(self.engine).begin() as conn:
                if not conn.execute(
                    select(messages.c.id).where(messages.c.id == message_id)
                ).first():
                    conn.execute(
                        insert(messages).values(
                            id=message_id, tenant_id=tenant, body=spec.message.strip()
                        )
                    )
        try:
            result = self._post(
                tenant,
                TransferCreate(
                    id=tid,
                    debit_account=sender.wallet,
                    credit_account=to.wallet,
                    amount=spec.amount,
                    currency=prog.currency,
                    code="thanks",
                    ref=spec.id,
                    memo=message_id,
                ),
            )
        except PointsError as exc:
            if exc.code == "daily-limit-exceeded":
                raise error(
                    "daily-limit-exceeded",
                    f"1日に贈れるのは{prog.thanks_daily_limit:,} ptまでです。明日またお願いします（贈っていません）。",
                    f"You can send at most {prog.thanks_daily_limit:,} pt a day (nothing was sent).",
                ) from None
            if exc.code == "insufficient-funds":
                balance = self.ledger.get_account(tenant, sender.wallet).available
                raise error(
                    "insufficient-funds",
                    f"ポイント残高が足りません（利用できる残高 {balance:,} pt）。",
                    f"Not enough points ({balance:,} pt available).",
                ) from None
            raise
        return {"transfer": result, "replay": False, "to": to}

    def message(self, message_id: str | None) -> str:
        if not message_id:
            return ""
        with self.engine.connect() as conn:
            return (
                conn.execute(select(messages.c.body).where(messages.c.id == message_id)).scalar()
                or ""
            )

    # --- the wallet ----------------------------------------------------------------------------

    def wallet(self, tenant: str, resident: Resident, history: int = 30) -> Wallet:
        account = self.ledger.get_account(tenant, resident.wallet)
        expiring = [(e.expires_at, e.amount) for e in self.ledger.expiring(tenant, resident.wallet)]
        purse = self._purse(tenant, resident)
        wallets = [resident.wallet] + (
            [purchased_wallet(resident, purse.currency)] if purse else []
        )
        self.sync(tenant)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(moves)
                .where(
                    moves.c.tenant_id == tenant,
                    or_(moves.c.debit.in_(wallets), moves.c.credit.in_(wallets)),
                    moves.c.kind.in_(("posted", "post")),
                )
                .order_by(moves.c.seq.desc())
                .limit(history)
            ).all()
            names = self._names(conn, tenant, rows)
            texts = dict(
                conn.execute(
                    select(messages.c.id, messages.c.body).where(
                        messages.c.id.in_([r.memo for r in rows if r.code == "thanks" and r.memo])
                    )
                ).all()
            )
        items = []
        for r in rows:
            incoming = r.credit in wallets
            other = r.debit if incoming else r.credit
            items.append(
                {
                    "at": r.at,
                    "code": r.code,
                    "purchased": (r.credit if incoming else r.debit) != resident.wallet,
                    "amount": r.amount if incoming else -r.amount,
                    "other": names.get(other, ""),
                    "message": texts.get(r.memo, "") if r.code == "thanks" else "",
                    "action": _parse_memo(r.memo).get("a") if r.code == "eco" else None,
                }
            )
        return Wallet(
            balance=account.balance,
            available=account.available,
            pending=account.debits_pending,
            expiring=expiring,
            history=items,
            purchased=purse,
        )

    def _purse(self, tenant: str, resident: Resident) -> Purse | None:
        """The resident's 地域ポイント wallet (zero until their first purchase)."""
        terms = self.purchase_terms(tenant)
        if terms is None:
            return None
        code = purchased_wallet(resident, terms.code)
        try:
            account = self.ledger.get_account(tenant, code)
        except Problem as exc:
            if exc.status != 404:
                raise
            return Purse(terms.code, terms.name_ja, terms.name_en, 0, 0, [])
        return Purse(
            terms.code,
            terms.name_ja,
            terms.name_en,
            account.balance,
            account.available,
            [(e.expires_at, e.amount) for e in self.ledger.expiring(tenant, code)],
        )

    def _names(self, conn: Any, tenant: str, rows: list[Any]) -> dict[str, str]:
        codes = {c for r in rows for c in (r.debit, r.credit)}
        members = {c: c.split(":")[1] for c in codes if c.startswith("resident:")}
        shop_codes = {c: shop_code_of(c) for c in codes if c.startswith("shop:")}
        out = {}
        if members:
            found = dict(
                conn.execute(
                    select(residents.c.member_code, residents.c.real_name).where(
                        residents.c.member_code.in_(set(members.values()))
                    )
                ).all()
            )
            out.update({c: found[m] for c, m in members.items() if m in found})
        if shop_codes:
            found = dict(
                conn.execute(
                    select(shops.c.code, shops.c.name).where(
                        shops.c.tenant_id == tenant, shops.c.code.in_(set(shop_codes.values()))
                    )
                ).all()
            )
            out.update({c: found[s] for c, s in shop_codes.items() if s in found})
        return out

    def shop_accounts(self, tenant: str, shop: Shop) -> list[str]:
        """The shop's merchant accounts: administrative points, then purchased ones."""
        cur = self.programme(tenant).purchase_currency
        return [shop.account] + ([purchased_shop_account(shop, cur)] if cur else [])

    # --- the read model of the ledger ----------------------------------------------------------

    def sync(self, tenant: str) -> int:
        """Copy the tenant's new ledger transfers into ``points_moves`` (in log order, from
        a cursor); returns how many were added. Cheap when nothing is new."""
        with self.engine.connect() as conn:
            last = conn.execute(
                select(cursors.c.last_seq).where(cursors.c.tenant_id == tenant)
            ).scalar()
        last = -1 if last is None else int(last)
        if not self.ledger.list_transfers(tenant, after_seq=last, limit=1):
            return 0
        added = 0
        with writer(self.engine).begin() as conn:
            query = select(cursors.c.last_seq).where(cursors.c.tenant_id == tenant)
            if is_postgres(self.engine):
                query = query.with_for_update()
            current = conn.execute(query).scalar()
            if current is None:
                conn.execute(insert(cursors).values(tenant_id=tenant, last_seq=-1))
                current = -1
            current = int(current)
            while True:
                found = self.ledger.list_transfers(tenant, after_seq=current, limit=2000)
                if not found:
                    break
                conn.execute(insert(moves), [_move(tenant, t) for t in found])
                current = found[-1].seq
                added += len(found)
            conn.execute(
                update(cursors).where(cursors.c.tenant_id == tenant).values(last_seq=current)
            )
        return added

    def shop_sales(self, tenant: str, shop: Shop, day: date | None = None) -> dict[str, Any]:
        """The shop's completed payments and refunds of one JST day (today by default)."""
        self.sync(tenant)
        day = day or today()
        # Stored as UTC (SQLite keeps no zone), so the JST day is compared in UTC.
        start = datetime(day.year, day.month, day.day, tzinfo=JST).astimezone(UTC)
        end = start + timedelta(days=1)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(moves)
                .where(
                    moves.c.tenant_id == tenant,
                    or_(
                        moves.c.credit.in_(self.shop_accounts(tenant, shop)),
                        moves.c.debit.in_(self.shop_accounts(tenant, shop)),
                    ),
                    moves.c.at >= start,
                    moves.c.at < end,
                    moves.c.kind.in_(("posted", "post")),
                )
                .order_by(moves.c.seq)
            ).all()
        sales: dict[str, dict[str, Any]] = {}
        for r in rows:
            sale = sales.setdefault(
                r.ref or r.transfer_id,
                {"id": r.ref, "at": r.at, "points": 0, "coupon": 0, "refunded": 0},
            )
            if r.code == "payment":
                sale["points"] += r.amount
            elif r.code == "coupon":
                sale["coupon"] += r.amount
            elif r.code == "refund":
                sale["refunded"] += r.amount
        items = sorted(sales.values(), key=lambda s: s["at"], reverse=True)
        received = sum(s["points"] + s["coupon"] for s in items)
        refunded = sum(s["refunded"] for s in items)
        return {
            "day": day,
            "items": items,
            "count": sum(1 for s in items if s["points"] + s["coupon"] > 0),
            "received": received,
            "refunded": refunded,
            "net": received - refunded,
        }

    def statements(self, tenant: str, shop: Shop, months: int = 6) -> list[SettlementPublic]:
        """The shop's monthly statements, this month first (paid ones as settled)."""
        days = [today().replace(day=1)]
        while len(days) < months:
            days.append((days[-1] - timedelta(days=1)).replace(day=1))
        accounts = self.shop_accounts(tenant, shop)
        found = self.ledger.statements(tenant, days, accounts)
        return [_combined([found[a, day] for a in accounts]) for day in days]

    # --- settlement ----------------------------------------------------------------------------

    def month_statements(self, tenant: str, month: date) -> list[tuple[Shop, SettlementPublic]]:
        """Each shop's statement of the month per merchant account (行政ポイント, and
        地域ポイント when sold: the city pays shops for both)."""
        shop_accounts = [
            (s, a) for s in self.list_shops(tenant) for a in self.shop_accounts(tenant, s)
        ]
        found = self.ledger.statements(tenant, [month], [a for _, a in shop_accounts])
        return [(s, found[a, month]) for s, a in shop_accounts]

    def settle_month(self, tenant: str, month: date) -> list[tuple[Shop, SettlementPublic | None]]:
        """Settle every shop's month (once it is over); shops with nothing to pay are skipped.
        Running it again settles nothing twice (the ledger returns the first settlement)."""
        start = month.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        if datetime(end.year, end.month, end.day, tzinfo=JST) > now():
            raise error(
                "month-not-over",
                f"{start:%Y年%m月}分は月末が過ぎてから精算できます。",
                f"{start:%Y-%m} can be settled once the month is over.",
                409,
            )
        shop_accounts = [
            (s, a) for s in self.list_shops(tenant) for a in self.shop_accounts(tenant, s)
        ]
        done = self.ledger.settle_all(tenant, start, [a for _, a in shop_accounts])
        return [(s, done[a]) for s, a in shop_accounts]

    def settlements_csv(self, tenant: str, month: date) -> bytes:
        start = month.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        return self.ledger.settlements_csv(tenant, since=start, until=end)

    def settlements_zengin(
        self, tenant: str, month: date, origin: Originator, transfer_date: date
    ) -> bytes:
        """The month's settlements as a 全銀協 総合振込 file for the city's bank; the
        city's account is kept for next month. Bad account data: PointsError, nothing kept."""
        start = month.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        unpayable = [
            shop.name
            for shop, s in self.month_statements(tenant, start)
            if s.payable_yen > 0
            and s.settled
            and not (
                shop.bank_code and shop.branch_code and shop.account_number and shop.holder_kana
            )
        ]
        if unpayable:
            raise error(
                "zengin-no-account",
                f"振込先口座が未登録の加盟店があります: {'、'.join(unpayable)}。加盟店の登録で口座を入力してください。",
                f"No bank account on file for: {', '.join(unpayable)}.",
            )
        try:
            data = self.ledger.settlements_zengin(tenant, origin, transfer_date, start, end)
        except ValueError as exc:
            raise error(
                "zengin", f"振込ファイルを作れません: {exc}", f"No transfer file: {exc}"
            ) from None
        except Problem as exc:
            raise error(
                "zengin",
                f"振込ファイルを作れません: {exc.detail}",
                f"No transfer file: {exc.detail}",
            ) from None
        with writer(self.engine).begin() as conn:
            conn.execute(
                update(programmes)
                .where(programmes.c.tenant_id == tenant)
                .values(zengin_originator=dataclasses.asdict(origin))
            )
        return data

    def zengin_originator(self, tenant: str) -> dict[str, str]:
        with self.engine.connect() as conn:
            saved = conn.execute(
                select(programmes.c.zengin_originator).where(programmes.c.tenant_id == tenant)
            ).scalar()
        return saved or {}

    # --- the city's figures ----------------------------------------------------------------------

    def dashboard(self, tenant: str, months: int = 6) -> Dashboard:
        """Points issued / spent / expired / outstanding, CO2 by month, town and action, local
        spending and active residents — aggregates only."""
        self.sync(tenant)
        first = today().replace(day=1)
        labels = []
        day = first
        for _ in range(months):
            labels.append(day.strftime("%Y-%m"))
            day = (day - timedelta(days=1)).replace(day=1)
        labels.reverse()
        flows: dict[str, dict[str, int]] = {
            m: {
                "issued": 0,
                "spent": 0,
                "coupon": 0,
                "expired": 0,
                "refunded": 0,
                "thanks": 0,
                "sold_yen": 0,
                "premium": 0,
            }
            for m in labels
        }
        active: dict[str, set[str]] = {m: set() for m in labels}
        spent_by_shop: dict[str, int] = defaultdict(int)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(moves.c.month, moves.c.code, moves.c.kind, func.sum(moves.c.amount))
                .where(
                    moves.c.tenant_id == tenant,
                    moves.c.month >= labels[0],
                    moves.c.kind.in_(("posted", "post")),
                )
                .group_by(moves.c.month, moves.c.code, moves.c.kind)
            ).all()
            for month, code, _kind, amount in rows:
                if month not in flows:
                    continue
                key = {
                    "eco": "issued",
                    "volunteer": "issued",
                    "payment": "spent",
                    "coupon": "coupon",
                    "expiry": "expired",
                    "refund": "refunded",
                    "thanks": "thanks",
                    "purchase": "sold_yen",
                    "premium": "premium",
                }.get(code)
                if key:
                    flows[month][key] += int(amount or 0)
            for month, debit, credit in conn.execute(
                select(moves.c.month, moves.c.debit, moves.c.credit)
                .where(
                    moves.c.tenant_id == tenant,
                    moves.c.month >= labels[0],
                    moves.c.kind.in_(("posted", "post")),
                    moves.c.code.in_(("eco", "volunteer", "payment", "thanks")),
                )
                .distinct()
            ):
                for account in (debit, credit):
                    if account.startswith("resident:") and month in active:
                        active[month].add(account.split(":")[1])  # either of their wallets
            for credit, amount in conn.execute(
                select(moves.c.credit, func.sum(moves.c.amount))
                .where(
                    moves.c.tenant_id == tenant,
                    moves.c.kind.in_(("posted", "post")),
                    moves.c.code.in_(("payment", "coupon")),
                )
                .group_by(moves.c.credit)
            ):
                spent_by_shop[credit] += int(amount or 0)
            towns = dict(
                conn.execute(
                    select(shops.c.code, shops.c.town).where(shops.c.tenant_id == tenant)
                ).all()
            )
            co2_rows = conn.execute(
                select(
                    eco_logs.c.action_date,
                    eco_logs.c.town,
                    actions.c.category,
                    actions.c.name_ja,
                    func.sum(eco_logs.c.co2_g),
                )
                .join(actions, actions.c.id == eco_logs.c.action_id)
                .where(
                    eco_logs.c.tenant_id == tenant,
                    eco_logs.c.status == "approved",
                )
                .group_by(
                    eco_logs.c.action_date, eco_logs.c.town, actions.c.category, actions.c.name_ja
                )
            ).all()
        co2_by_month: dict[str, dict[str, float]] = {m: defaultdict(float) for m in labels}
        co2_by_town: dict[str, float] = defaultdict(float)
        co2_by_action: dict[str, float] = defaultdict(float)
        for day_, town, category, name, grams in co2_rows:
            kg = (grams or 0) / 1000
            month = day_.strftime("%Y-%m")
            if month in co2_by_month:
                co2_by_month[month][category] += kg
            co2_by_town[town] += kg
            co2_by_action[name] += kg
        spent_by_town: dict[str, int] = defaultdict(int)
        for account, amount in spent_by_shop.items():
            spent_by_town[towns.get(account.removeprefix("shop:"), "—")] += amount
        outstanding = outstanding_purchased = 0
        after = None
        prog = self.programme(tenant)
        while True:
            page = self.ledger.list_accounts(tenant, kind="resident", limit=1000, after=after)
            outstanding += sum(a.balance for a in page if a.currency == prog.currency)
            outstanding_purchased += sum(a.balance for a in page if a.currency != prog.currency)
            if len(page) < 1000:
                break
            after = page[-1].code
        totals = {
            "issued": sum(f["issued"] for f in flows.values()),
            "spent": sum(f["spent"] + f["coupon"] - f["refunded"] for f in flows.values()),
            "expired": sum(f["expired"] for f in flows.values()),
            "co2_kg": sum(co2_by_town.values()),
            "sold_yen": sum(f["sold_yen"] for f in flows.values()),
            "premium": sum(f["premium"] for f in flows.values()),
        }
        return Dashboard(
            months=labels,
            flows=flows,
            co2_by_month={m: dict(v) for m, v in co2_by_month.items()},
            co2_by_town=dict(sorted(co2_by_town.items(), key=lambda kv: -kv[1])),
            co2_by_action=dict(sorted(co2_by_action.items(), key=lambda kv: -kv[1])),
            spent_by_town=dict(sorted(spent_by_town.items(), key=lambda kv: -kv[1])),
            active={m: len(v) for m, v in active.items()},
            outstanding=outstanding,
            outstanding_purchased=outstanding_purchased,
            purchase_currency=prog.purchase_currency,
            totals=totals,
        )

    def fingerprint(self, tenant: str) -> tuple[int, int]:
        """Changes whenever the figures can: (ledger read-model cursor, approved eco logs)."""
        with self.engine.connect() as conn:
            last = conn.execute(
                select(cursors.c.last_seq).where(cursors.c.tenant_id == tenant)
            ).scalar()
            logs = conn.execute(
                select(func.count()).where(
                    eco_logs.c.tenant_id == tenant, eco_logs.c.status == "approved"
                )
            ).scalar_one()
        return int(last if last is not None else -1), int(logs)

    # --- ledger calls ----------------------------------------------------------------------------

    def _post(self, tenant: str, item: TransferCreate) -> TransferPublic:
        """One transfer through the ledger's group commit; failures become PointsError."""
        result = self._submit(tenant, item)
        assert result.transfer is not None
        return result.transfer

    def _submit(self, tenant: str, item: TransferCreate) -> TransferResult:
        result = self.ledger.submit_transfer(tenant, item).result()
        if not result.ok:
            raise ledger_error(result)
        return result

    def post_chain(self, tenant: str, items: list[TransferCreate]) -> list[TransferResult]:
        """A linked chain in one ledger transaction: all of it or none."""
        results = self.ledger.post_transfers(tenant, items)
        for result in results:
            if (
                not result.ok
                and result.error
                and not result.error.type.endswith("linked-event-failed")
            ):
                raise ledger_error(result)
        return results

    def _transfer(self, tenant: str, transfer_id: str) -> TransferPublic | None:
        try:
            return self.ledger.get_transfer(tenant, transfer_id)
        except Problem as exc:
            if exc.status == 404:
                return None
            raise


def _combined(parts: list[SettlementPublic]) -> SettlementPublic:
    """One month of a shop over its merchant accounts (fees are floored per account)."""
    main = max(parts, key=lambda p: p.net)  # its settlement transfer says "paid"
    return main.model_copy(
        update={
            k: sum(getattr(p, k) for p in parts)
            for k in ("received", "refunded", "net", "fee_yen", "payable_yen")
        }
    )


def _terms(shop: Shop) -> MerchantTerms:
    return MerchantTerms(
        fee_bp=shop.fee_bp,
        bank_code=shop.bank_code,
        branch_code=shop.branch_code,
        account_type=shop.account_type,
        account_number=shop.account_number,
        holder_kana=shop.holder_kana,
    )


def _sale_refused(exc: Problem, spec: SaleIn) -> Problem:
    """A refused sale in words for the counter clerk (nothing was sold)."""
    code = exc.type.rsplit(":", 1)[-1]
    extra = exc.extra
    if code == "purchase-limit-exceeded" and extra.get("limit") == "per-purchase":
        top = int(extra["max_yen"])
        return error(
            code,
            f"1回に購入できるのは{top:,}円までです（販売していません）。",
            f"At most ¥{top:,} per purchase (nothing was sold).",
        )
    if code == "purchase-limit-exceeded":
        top, bought = int(extra["max_yen"]), int(extra["bought_yen"])
        return error(
            code,
            f"お一人の年度の購入上限{top:,}円を超えます（今年度の購入 {bought:,}円、あと {max(top - bought, 0):,}円まで。販売していません）。",
            f"Over the yearly limit of ¥{top:,} (¥{bought:,} bought; nothing was sold).",
        )
    if code == "premium-budget-exhausted":
        return error(
            code,
            "プレミアム分の予算が終了したため、販売できません（販売していません）。",
            "The premium budget is used up (nothing was sold).",
        )
    if code == "id-conflict":
        return error(
            "receipt-conflict",
            f"受付番号 {spec.receipt} はすでに別の内容（金額または会員）で販売済みです。受付番号を確認してください（販売していません）。",
            f"Receipt {spec.receipt} was used for another sale (nothing was sold).",
            409,
        )
    return exc


def _unverified() -> PointsError:
    return error(
        "not-verified",
        "実名の確認がまだ済んでいません。市役所の窓口で本人確認をお願いします。",
        "Your real name is not verified yet. Please visit the city office.",
        403,
    )


def _move(tenant: str, t: TransferPublic) -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        "seq": t.seq,
        "transfer_id": t.id,
        "kind": t.kind,
        "code": t.code,
        "debit": t.debit_account,
        "credit": t.credit_account,
        "amount": t.amount,
        "ref": t.ref,
        "memo": t.memo,
        "month": month_of(t.timestamp),
        "at": t.timestamp,
    }


def _eco_row(conn: Any, log_id: str) -> Any:
    return conn.execute(select(eco_logs).where(eco_logs.c.id == log_id)).first()


def _eco_log(row: Any, action: Action) -> EcoLog:
    return EcoLog(
        id=row.id,
        action=action.code,
        action_name=action.name_ja,
        action_date=row.action_date,
        quantity=row.quantity,
        co2_g=row.co2_g,
        points=row.points,
        status=row.status,
        transfer_id=row.transfer_id,
    )


def _resident(row: Any) -> Resident:
    return Resident(
        id=row.id,
        tenant=row.tenant_id,
        username=row.username,
        member_code=row.member_code,
        real_name=row.real_name,
        kana=row.kana,
        town=row.town,
        verified_at=row.verified_at,
        verified_by=row.verified_by,
    )


def _shop(row: Any) -> Shop:
    m = row._mapping
    return Shop(
        id=m["id"],
        tenant=m["tenant_id"],
        active=bool(m["active"]),
        **{k: m[k] for k in ShopCreate.model_fields},
    )


def _factor(row: Any) -> Factor:
    m = row._mapping
    return Factor(id=m["id"], **{k: m[k] for k in FactorCreate.model_fields})


def _action(row: Any) -> Action:
    m = row._mapping
    return Action(
        id=m["id"],
        factor_code=m["factor_code"],
        **{k: m[k] for k in ActionIn.model_fields},
    )


def _coupon(row: Any) -> Coupon:
    m = row._mapping
    return Coupon(id=m["id"], tenant=m["tenant_id"], **{k: m[k] for k in CouponCreate.model_fields})


def hold_expiry_label(expires_at: datetime | None) -> str:
    if expires_at is None:
        return ""
    left = int((expires_at - now()).total_seconds())
    return f"{max(left, 0) // 60}:{max(left, 0) % 60:02d}"


__all__ = [
    "JST",
    "Dashboard",
    "Originator",
    "PayLink",
    "Points",
    "PointsError",
    "Wallet",
    "month_of",
    "now",
    "today",
]
