"""Paying shops: monthly statements per shop and merchant account (the ledger computes them
for all accounts at once), settling a month, the CSV and 全銀 exports."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta

from sqlalchemy import select, update

from kizuna.ledger.schemas import SettlementPublic
from kizuna.ledger.service import Originator
from kizuna.points import clock
from kizuna.points.base import PointsBase, error
from kizuna.points.clock import JST
from kizuna.points.models import programmes
from kizuna.points.schemas import Shop
from kizuna.problems import Problem
from kizuna.storage import writer


class Settlement(PointsBase):
    """Statements, settling a month and its exports."""

    def statements(self, tenant: str, shop: Shop, months: int = 6) -> list[SettlementPublic]:
        """The shop's monthly statements, this month first (paid ones as settled)."""
        days = [clock.today().replace(day=1)]
        while len(days) < months:
            days.append((days[-1] - timedelta(days=1)).replace(day=1))
        accounts = self.shop_accounts(tenant, shop)
        found = self.ledger.statements(tenant, days, accounts)
        return [_combined([found[a, day] for a in accounts]) for day in days]

    def month_statements(self, tenant: str, month: date) -> list[tuple[Shop, SettlementPublic]]:
        """Each shop's statement of the month per merchant account (行政ポイント, and
        地域ポイント when sold: the city pays shops for both)."""
        shop_accounts = self._every_shop_account(tenant)
        found = self.ledger.statements(tenant, [month], [a for _, a in shop_accounts])
        return [(s, found[a, month]) for s, a in shop_accounts]

    def settle_month(self, tenant: str, month: date) -> list[tuple[Shop, SettlementPublic | None]]:
        """Settle every shop's month (once it is over); shops with nothing to pay are skipped.
        Running it again settles nothing twice (the ledger returns the first settlement)."""
        start = month.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        if datetime(end.year, end.month, end.day, tzinfo=JST) > clock.now():
            raise error(
                "month-not-over",
                f"{start:%Y年%m月}分は月末が過ぎてから精算できます。",
                f"{start:%Y-%m} can be settled once the month is over.",
                409,
            )
        shop_accounts = self._every_shop_account(tenant)
        done = self.ledger.settle_all(tenant, start, [a for _, a in shop_accounts])
        return [(s, done[a]) for s, a in shop_accounts]

    def _every_shop_account(self, tenant: str) -> list[tuple[Shop, str]]:
        """(shop, merchant account) for every shop and account, shops in code order."""
        return [(s, a) for s in self.list_shops(tenant) for a in self.shop_accounts(tenant, s)]

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


def _combined(parts: list[SettlementPublic]) -> SettlementPublic:
    """One month of a shop over its merchant accounts (fees are floored per account)."""
    main = max(parts, key=lambda p: p.net)  # its settlement transfer says "paid"
    return main.model_copy(
        update={
            k: sum(getattr(p, k) for p in parts)
            for k in ("received", "refunded", "net", "fee_yen", "payable_yen")
        }
    )
