"""Merchant settlement: statements per cycle, fees, yen payable, CSV and 全銀 exports.

A settlement is itself a ledger transfer (merchant → ``settlement:<currency>``) whose id is
derived from (tenant, merchant, period start), so paying a period twice returns the first
settlement instead of moving the points again. 1 point is ¥1; the fee is rounded down
(in the merchant's favour).
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, select

from kizuna.ledger.apply import JST, Item, apply_batch, from_us, lock_head, now_us, to_us
from kizuna.ledger.errors import ledger_problem
from kizuna.ledger.models import accounts, merchants, settlements, transfers
from kizuna.ledger.schemas import MerchantTerms, SettlementPublic, TransferCreate
from kizuna.ledger.zengin import Originator, Payee, transfer_file
from kizuna.storage import writer

SETTLEMENT_CODE = "settlement"


def period_bounds(cycle: str, day: date) -> tuple[datetime, datetime]:
    """The settlement period (JST) of ``cycle`` that contains ``day``: [start, end)."""
    if cycle == "monthly":
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    elif cycle == "weekly":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    elif cycle == "daily":
        start, end = day, day + timedelta(days=1)
    else:
        raise ledger_problem("settlement-period-invalid", f"unknown cycle {cycle!r}")
    as_dt = lambda d: datetime(d.year, d.month, d.day, tzinfo=JST)  # noqa: E731
    return as_dt(start), as_dt(end)


def set_terms(engine: Any, tenant: str, code: str, terms: MerchantTerms) -> MerchantTerms:
    with writer(engine).begin() as conn:
        account = _merchant_account(conn, tenant, code)
        values = terms.model_dump()
        if conn.execute(
            select(merchants.c.account_id).where(merchants.c.account_id == account.id)
        ).first():
            conn.execute(
                merchants.update().where(merchants.c.account_id == account.id).values(**values)
            )
        else:
            conn.execute(
                merchants.insert().values(account_id=account.id, tenant_id=tenant, **values)
            )
    return terms


def get_terms(conn: Connection, account_id: int) -> MerchantTerms:
    row = conn.execute(select(merchants).where(merchants.c.account_id == account_id)).first()
    if row is None:
        return MerchantTerms()
    return MerchantTerms.model_validate({k: getattr(row, k) for k in MerchantTerms.model_fields})


def _merchant_account(conn: Connection, tenant: str, code: str) -> Any:
    row = conn.execute(
        select(accounts).where(accounts.c.tenant_id == tenant, accounts.c.code == code)
    ).first()
    if row is None:
        raise ledger_problem("account-not-found", f"no account {code!r}")
    if row.kind != "merchant":
        raise ledger_problem("not-a-merchant", f"account {code!r} is a {row.kind} account")
    return row


def _sums(conn: Connection, account_id: int, start: int, end: int) -> tuple[int, int]:
    in_period = and_(
        transfers.c.ts_us >= start,
        transfers.c.ts_us < end,
        transfers.c.kind.in_(("posted", "post")),
        transfers.c.code != SETTLEMENT_CODE,
    )
    received = conn.execute(
        select(func.coalesce(func.sum(transfers.c.amount), 0)).where(
            transfers.c.credit_id == account_id, in_period
        )
    ).scalar_one()
    refunded = conn.execute(
        select(func.coalesce(func.sum(transfers.c.amount), 0)).where(
            transfers.c.debit_id == account_id, in_period
        )
    ).scalar_one()
    return int(received), int(refunded)


def statement(engine: Any, tenant: str, code: str, day: date) -> SettlementPublic:
    """What settling the period containing ``day`` would pay (nothing is written)."""
    with engine.connect() as conn:
        account = _merchant_account(conn, tenant, code)
        terms = get_terms(conn, account.id)
        start, end = period_bounds(terms.cycle, day)
        done = _stored(conn, tenant, account.id, to_us(start))
        if done is not None:
            return _public(code, done, created=False)
        received, refunded = _sums(conn, account.id, to_us(start), to_us(end))
    from kizuna.ledger.service import derived_id

    return _compute(
        code,
        start,
        end,
        received,
        refunded,
        terms.fee_bp,
        derived_id(tenant, "settlement", code, to_us(start)),
    )


def _compute(
    code: str, start: datetime, end: datetime, received: int, refunded: int, fee_bp: int, tid: str
) -> SettlementPublic:
    net = received - refunded
    fee = max(net, 0) * fee_bp // 10_000
    return SettlementPublic(
        merchant=code,
        period_start=start,
        period_end=end,
        received=received,
        refunded=refunded,
        net=net,
        fee_bp=fee_bp,
        fee_yen=fee,
        payable_yen=net - fee,
        transfer_id=tid,
        created=False,
    )


def _stored(conn: Connection, tenant: str, account_id: int, start_us: int) -> Any:
    return conn.execute(
        select(settlements).where(
            settlements.c.tenant_id == tenant,
            settlements.c.account_id == account_id,
            settlements.c.period_start_us == start_us,
        )
    ).first()


def _public(code: str, row: Any, created: bool) -> SettlementPublic:
    return SettlementPublic(
        merchant=code,
        period_start=from_us(row.period_start_us).astimezone(JST),
        period_end=from_us(row.period_end_us).astimezone(JST),
        received=row.received,
        refunded=row.refunded,
        net=row.net,
        fee_bp=row.fee_bp,
        fee_yen=row.fee_yen,
        payable_yen=row.payable_yen,
        transfer_id=row.transfer_id,
        created=created,
    )


def settle(engine: Any, tenant: str, code: str, day: date) -> SettlementPublic:
    """Settle the merchant's period containing ``day`` (which must be over): one transfer
    of the period's net points to the settlement account, and the statement row."""
    from kizuna.ledger.service import derived_id, system_accounts

    with writer(engine).begin() as conn:
        lock_head(conn, tenant)  # no payment of this tenant commits while we sum
        account = _merchant_account(conn, tenant, code)
        terms = get_terms(conn, account.id)
        start, end = period_bounds(terms.cycle, day)
        start_us, end_us = to_us(start), to_us(end)
        done = _stored(conn, tenant, account.id, start_us)
        if done is not None:
            return _public(code, done, created=False)
        ts = now_us()
        if end_us > ts:
            raise ledger_problem(
                "settlement-period-invalid", f"the period ends {end.isoformat()}, not yet over"
            )
        received, refunded = _sums(conn, account.id, start_us, end_us)
        tid = derived_id(tenant, "settlement", code, start_us)
        out = _compute(code, start, end, received, refunded, terms.fee_bp, tid)
        if out.net <= 0:
            raise ledger_problem(
                "nothing-to-settle", f"{code} received {received} and refunded {refunded}"
            )
        [result] = apply_batch(
            conn,
            tenant,
            [
                Item(
                    TransferCreate(
                        id=tid,
                        debit_account=code,
                        credit_account=system_accounts(account.currency)["settlement"],
                        amount=out.net,
                        currency=account.currency,
                        code=SETTLEMENT_CODE,
                        ref=f"{start.date().isoformat()}/{end.date().isoformat()}",
                    )
                )
            ],
            ts,
        )
        if not result.ok:
            from kizuna.ledger.apply import result_problem

            raise result_problem(result)
        conn.execute(
            settlements.insert().values(
                tenant_id=tenant,
                account_id=account.id,
                period_start_us=start_us,
                period_end_us=end_us,
                received=received,
                refunded=refunded,
                net=out.net,
                fee_bp=terms.fee_bp,
                fee_yen=out.fee_yen,
                payable_yen=out.payable_yen,
                transfer_id=tid,
                ts_us=ts,
            )
        )
    return out.model_copy(update={"created": True})


def list_settlements(
    engine: Any, tenant: str, since: date | None = None, until: date | None = None
) -> list[tuple[SettlementPublic, Any, MerchantTerms]]:
    """Settlements whose period starts in [since, until), with account row and terms."""
    query = (
        select(settlements, accounts.c.code, accounts.c.name)
        .join(accounts, accounts.c.id == settlements.c.account_id)
        .where(settlements.c.tenant_id == tenant)
        .order_by(settlements.c.period_start_us, accounts.c.code)
    )
    if since:
        query = query.where(
            settlements.c.period_start_us
            >= to_us(datetime(since.year, since.month, since.day, tzinfo=JST))
        )
    if until:
        query = query.where(
            settlements.c.period_start_us
            < to_us(datetime(until.year, until.month, until.day, tzinfo=JST))
        )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
        return [(_public(r.code, r, False), r, get_terms(conn, r.account_id)) for r in rows]


CSV_HEADER = [
    "加盟店コード",
    "加盟店名",
    "期間開始",
    "期間終了",
    "受取ポイント",
    "返金ポイント",
    "精算ポイント",
    "手数料率(%)",
    "手数料(円)",
    "振込額(円)",
    "振込ID",
]


def settlements_csv(items: list[tuple[SettlementPublic, Any, MerchantTerms]]) -> bytes:
    """UTF-8 with BOM and CRLF, so Excel opens the Japanese headers correctly."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_HEADER)
    for s, row, _ in items:
        w.writerow(
            [
                s.merchant,
                row.name,
                s.period_start.date().isoformat(),
                (s.period_end - timedelta(days=1)).date().isoformat(),
                s.received,
                s.refunded,
                s.net,
                f"{s.fee_bp / 100:.2f}",
                s.fee_yen,
                s.payable_yen,
                s.transfer_id,
            ]
        )
    return "\ufeff".encode() + buf.getvalue().encode("utf-8")


def settlements_zengin(
    items: list[tuple[SettlementPublic, Any, MerchantTerms]],
    origin: Originator,
    transfer_date: date,
) -> bytes:
    payees = []
    for s, _row, terms in items:
        if s.payable_yen <= 0:
            continue
        if not (
            terms.bank_code and terms.branch_code and terms.account_number and terms.holder_kana
        ):
            raise ledger_problem(
                "invalid-request", f"merchant {s.merchant} has no bank account on file"
            )
        payees.append(
            Payee(
                bank_code=terms.bank_code,
                branch_code=terms.branch_code,
                account_type=terms.account_type or "1",
                account_number=terms.account_number,
                name=terms.holder_kana,
                amount=s.payable_yen,
            )
        )
    return transfer_file(origin, payees, transfer_date)
