"""The city's figures: points issued, spent, expired and outstanding, CO2, local spending."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select

from kizuna.points import clock
from kizuna.points.base import PointsBase
from kizuna.points.models import actions, cursors, eco_logs, moves, shops


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


class Figures(PointsBase):
    """The staff dashboard's aggregates."""

    def dashboard(self, tenant: str, months: int = 6) -> Dashboard:
        """Points issued / spent / expired / outstanding, CO2 by month, town and action, local
        spending and active residents — aggregates only."""
        self.sync(tenant)
        first = clock.today().replace(day=1)
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
