"""A resident's wallet (balances, expiring points, history) and thanks sent to neighbours."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, or_, select

from kizuna.ledger.schemas import TransferCreate
from kizuna.points.base import (
    PointsBase,
    PointsError,
    _parse_memo,
    _tid,
    _unverified,
    error,
    purchased_wallet,
    shop_code_of,
)
from kizuna.points.models import messages, moves, residents, shops
from kizuna.points.schemas import Resident, ThanksIn
from kizuna.problems import Problem
from kizuna.storage import writer


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


class Wallets(PointsBase):
    """The wallet page's figures and thanks between residents."""

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
