"""A municipality's programme: its currency and budgets, and 地域ポイント sold at the counter."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, update

from kizuna.ledger.schemas import (
    AccountCreate,
    AccountKind,
    CurrencyCreate,
    CurrencyKind,
    PurchaseCreate,
    PurchasePublic,
    PurchaseRules,
    TransferCreate,
)
from kizuna.ledger.service import system_accounts
from kizuna.points import clock
from kizuna.points.base import (
    PointsBase,
    PointsError,
    _memo,
    _parse_memo,
    _terms,
    _tid,
    error,
    purchased_shop_account,
    purchased_wallet,
)
from kizuna.points.clock import JST, fiscal_year
from kizuna.points.eco import DEFAULT_ACTIONS, DEFAULT_FACTORS
from kizuna.points.models import moves, programmes
from kizuna.points.schemas import (
    Programme,
    ProgrammeCreate,
    PurchaseProgrammeCreate,
    Resident,
    SaleIn,
    Shop,
)
from kizuna.problems import Problem
from kizuna.storage import writer

BUDGETS = ("eco", "volunteer", "coupon")
PREMIUM_BUDGET = "budget:premium"  # in the purchased currency: the city's premium cost


@dataclass
class Sale:
    """A counter sale as recorded (``replay``: the same receipt was sold before)."""

    receipt: str
    resident: Resident
    purchase: PurchasePublic
    replay: bool


class Programmes(PointsBase):
    """Setting up a programme, its budgets, and selling 地域ポイント (purchased points)."""

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
        fy = fiscal_year(clock.today())
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
