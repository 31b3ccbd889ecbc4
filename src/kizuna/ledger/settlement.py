"""Merchant settlement: statements per cycle, fees, yen payable, CSV and 全銀 exports.

A settlement is itself a ledger transfer (merchant → ``settlement:<currency>``) whose id is
derived from (tenant, merchant, period start), so paying a period twice returns the first
settlement instead of moving the points again. 1 point is ¥1; the fee is rounded down
(in the merchant's favour).

:func:`statement` and :func:`settle` take one merchant account; :func:`statements` and
:func:`settle_all` give the same results for many accounts (and periods) from a few
set-based queries: the accounts with their terms, the stored settlements, and per cycle one
sum of what the accounts received and one of what they refunded, grouped by account and
period.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, func, or_, select

from kizuna.ledger.apply import (
    JST,
    Item,
    apply_batch,
    from_us,
    lock_head,
    now_us,
    result_problem,
    to_us,
)
from kizuna.ledger.errors import ledger_problem
from kizuna.ledger.models import accounts, merchants, settlements, transfers
from kizuna.ledger.schemas import MerchantTerms, SettlementPublic, TransferCreate
from kizuna.ledger.zengin import Originator, Payee, transfer_file
from kizuna.storage import writer

SETTLEMENT_CODE = "settlement"
# What a settlement row keeps of its statement (besides the account and the period).
STORED_FIGURES = ("received", "refunded", "net", "fee_bp", "fee_yen", "payable_yen", "transfer_id")


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


def _terms(row: Any, prefix: str = "") -> MerchantTerms:
    """Terms from a ``ledger_merchants`` row, or from its columns joined to another row as
    ``<prefix><field>`` (an outer join's NULLs: the defaults)."""
    if row is None or getattr(row, prefix + "fee_bp") is None:
        return MerchantTerms()
    return MerchantTerms.model_validate(
        {k: getattr(row, prefix + k) for k in MerchantTerms.model_fields}
    )


def _merchant_account(conn: Connection, tenant: str, code: str) -> Any:
    row = conn.execute(
        select(accounts).where(accounts.c.tenant_id == tenant, accounts.c.code == code)
    ).first()
    if row is None:
        raise ledger_problem("account-not-found", f"no account {code!r}")
    if row.kind != "merchant":
        raise ledger_problem("not-a-merchant", f"account {code!r} is a {row.kind} account")
    return row


def statement(engine: Any, tenant: str, code: str, day: date) -> SettlementPublic:
    """What settling the period containing ``day`` would pay (nothing is written)."""
    return statements(engine, tenant, [day], [code])[code, day]


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
        settled=True,
    )


def settle(engine: Any, tenant: str, code: str, day: date) -> SettlementPublic:
    """Settle the merchant's period containing ``day`` (which must be over): one transfer
    of the period's net points to the settlement account, and the statement row."""
    done = settle_all(engine, tenant, day, [code])[code]
    if done is None:
        s = statement(engine, tenant, code, day)
        raise ledger_problem(
            "nothing-to-settle", f"{code} received {s.received} and refunded {s.refunded}"
        )
    return done


@dataclass
class _Due:
    """One merchant account's statement of one period, with what settling it needs."""

    account: Any  # the ledger_accounts row
    day: date
    statement: SettlementPublic


def statements(
    engine: Any, tenant: str, days: Sequence[date], codes: Sequence[str] | None = None
) -> dict[tuple[str, date], SettlementPublic]:
    """:func:`statement` for each merchant account of ``codes`` (all the tenant's merchant
    accounts when None) and each of ``days``, keyed by (code, day)."""
    with engine.connect() as conn:
        return {
            (d.account.code, d.day): d.statement for d in _statements(conn, tenant, days, codes)
        }


def settle_all(
    engine: Any, tenant: str, day: date, codes: Sequence[str] | None = None
) -> dict[str, SettlementPublic | None]:
    """:func:`settle` for each merchant account of ``codes`` (all when None) in one
    transaction: one batch of settlement transfers and the statement rows. An account with
    nothing to settle maps to None; a period not over yet or a refused transfer raises and
    settles nothing."""
    from kizuna.ledger.service import system_accounts

    with writer(engine).begin() as conn:
        lock_head(conn, tenant)  # no payment of this tenant commits while we sum
        dues = _statements(conn, tenant, [day], codes)
        ts = now_us()
        out: dict[str, SettlementPublic | None] = {}
        to_pay: list[_Due] = []
        for due in dues:
            s = due.statement
            if s.settled:
                out[s.merchant] = s
                continue
            if to_us(s.period_end) > ts:
                raise ledger_problem(
                    "settlement-period-invalid",
                    f"the period ends {s.period_end.isoformat()}, not yet over",
                )
            if s.net <= 0:
                out[s.merchant] = None
            else:
                to_pay.append(due)
        if not to_pay:
            return out
        items = [
            Item(
                TransferCreate(
                    id=d.statement.transfer_id,
                    debit_account=d.account.code,
                    credit_account=system_accounts(d.account.currency)["settlement"],
                    amount=d.statement.net,
                    currency=d.account.currency,
                    code=SETTLEMENT_CODE,
                    ref=f"{d.statement.period_start.date().isoformat()}/"
                    f"{d.statement.period_end.date().isoformat()}",
                )
            )
            for d in to_pay
        ]
        for result in apply_batch(conn, tenant, items, ts):
            if not result.ok:
                raise result_problem(result)
        conn.execute(
            settlements.insert(),
            [
                {
                    "tenant_id": tenant,
                    "account_id": d.account.id,
                    "period_start_us": to_us(d.statement.period_start),
                    "period_end_us": to_us(d.statement.period_end),
                    "ts_us": ts,
                    **{k: getattr(d.statement, k) for k in STORED_FIGURES},
                }
                for d in to_pay
            ],
        )
        for d in to_pay:
            out[d.account.code] = d.statement.model_copy(update={"created": True, "settled": True})
    return {d.account.code: out[d.account.code] for d in dues}


def _statements(
    conn: Connection, tenant: str, days: Sequence[date], codes: Sequence[str] | None
) -> list[_Due]:
    """The statements of ``codes`` × ``days`` (account-major, in the order given)."""
    from kizuna.ledger.service import derived_id

    query = (
        select(accounts, *[merchants.c[k] for k in MerchantTerms.model_fields])
        .outerjoin(merchants, merchants.c.account_id == accounts.c.id)
        .where(accounts.c.tenant_id == tenant)
    )
    if codes is None:
        rows = conn.execute(
            query.where(accounts.c.kind == "merchant").order_by(accounts.c.code)
        ).all()
    else:
        found = {r.code: r for r in conn.execute(query.where(accounts.c.code.in_(codes)))}
        rows = []
        for code in codes:  # the errors of statement(), for the first bad code
            row = found.get(code)
            if row is None:
                raise ledger_problem("account-not-found", f"no account {code!r}")
            if row.kind != "merchant":
                raise ledger_problem("not-a-merchant", f"account {code!r} is a {row.kind} account")
            rows.append(row)
    if not rows or not days:
        return []
    wanted = []  # (account row, terms, day, period start, period end)
    for row in rows:
        terms = _terms(row)
        wanted += [(row, terms, day, *period_bounds(terms.cycle, day)) for day in days]
    stored = {
        (r.account_id, r.period_start_us): r
        for r in conn.execute(
            select(settlements).where(
                settlements.c.tenant_id == tenant,
                settlements.c.account_id.in_({w[0].id for w in wanted}),
                settlements.c.period_start_us.in_({to_us(w[3]) for w in wanted}),
            )
        )
    }
    open_by_cycle: dict[str, set[tuple[int, int, int]]] = defaultdict(set)
    for row, terms, _, start, end in wanted:
        if (row.id, to_us(start)) not in stored:
            open_by_cycle[terms.cycle].add((row.id, to_us(start), to_us(end)))
    sums: dict[tuple[int, int], tuple[int, int]] = {}
    for periods in open_by_cycle.values():  # one cycle's periods never overlap
        sums.update(_period_sums(conn, periods))
    out = []
    for row, terms, day, start, end in wanted:
        done = stored.get((row.id, to_us(start)))
        if done is not None:
            s = _public(row.code, done, created=False)
        else:
            received, refunded = sums[row.id, to_us(start)]
            tid = derived_id(tenant, "settlement", row.code, to_us(start))
            s = _compute(row.code, start, end, received, refunded, terms.fee_bp, tid)
        out.append(_Due(row, day, s))
    return out


def _period_sums(
    conn: Connection, wanted: set[tuple[int, int, int]]
) -> dict[tuple[int, int], tuple[int, int]]:
    """(account id, period start) → (received, refunded) for (account id, start, end) triples
    whose periods do not overlap: two GROUP BY queries (credits, debits) over all of them."""
    periods = sorted({(start, end) for _, start, end in wanted})
    ids = {account_id for account_id, _, _ in wanted}
    within = [and_(transfers.c.ts_us >= s, transfers.c.ts_us < e) for s, e in periods]
    period = case(*[(w, s) for w, (s, _) in zip(within, periods, strict=True)])
    received: dict[tuple[int, int], int] = defaultdict(int)
    refunded: dict[tuple[int, int], int] = defaultdict(int)
    for column, total in ((transfers.c.credit_id, received), (transfers.c.debit_id, refunded)):
        moved = (
            select(column.label("account_id"), period.label("start"), transfers.c.amount).where(
                column.in_(ids),
                or_(*within),
                transfers.c.kind.in_(("posted", "post")),
                transfers.c.code != SETTLEMENT_CODE,
            )
        ).subquery()
        rows = conn.execute(
            select(moved.c.account_id, moved.c.start, func.sum(moved.c.amount)).group_by(
                moved.c.account_id, moved.c.start
            )
        )
        for account_id, start, amount in rows:
            total[account_id, start] = int(amount)
    return {(a, s): (received[a, s], refunded[a, s]) for a, s, _ in wanted}


def list_settlements(
    engine: Any, tenant: str, since: date | None = None, until: date | None = None
) -> list[tuple[SettlementPublic, Any, MerchantTerms]]:
    """Settlements whose period starts in [since, until), with account row and terms."""
    query = (
        select(
            settlements,
            accounts.c.code,
            accounts.c.name,
            *[merchants.c[k].label(f"terms_{k}") for k in MerchantTerms.model_fields],
        )
        .join(accounts, accounts.c.id == settlements.c.account_id)
        .outerjoin(merchants, merchants.c.account_id == settlements.c.account_id)
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
    return [(_public(r.code, r, False), r, _terms(r, "terms_")) for r in rows]


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
