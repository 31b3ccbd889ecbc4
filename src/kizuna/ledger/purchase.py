"""Buying points of a purchased currency (地域ポイント, プレミアム付き): yen in, points out.

A purchase is an ordinary linked chain of two transfers, applied in the tenant's write
transaction after its log head is locked (so limits cannot be raced past):

* ``issuance:<currency> → wallet``, code ``purchase``, amount = yen (1 pt per ¥1);
* ``premium_account → wallet``, code ``premium``, amount = ⌊yen × premium_bp / 10,000⌋
  (rounded down; left out when 0). The premium comes from a budget account, so the city's
  premium cost is that account's debits, and an empty budget stops sales
  (``premium-budget-exhausted``).

The wallet's new lots expire at ``expires_at`` if given (a programme's fixed end date),
else after the currency's ``expiry_days``. Limits per wallet come from the currency
(``purchase_rules``): yen per purchase, and yen per JST fiscal year (April–March) counted
from the wallet's ``purchase`` transfers → ``purchase-limit-exceeded``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from kizuna.ledger.apply import (
    JST,
    Item,
    _end_of_jst_day,
    apply_batch,
    from_us,
    lock_head,
    result_problem,
    to_us,
)
from kizuna.ledger.errors import PREFIX, ledger_problem
from kizuna.ledger.models import accounts, currencies, transfers
from kizuna.ledger.schemas import (
    PurchaseCreate,
    PurchasePublic,
    PurchaseRules,
    TransferCreate,
    TransferResult,
)


def premium_of(yen: int, premium_bp: int) -> int:
    """The premium in points: basis points of the yen, rounded down (¥10,000 at 1000 → 1,000)."""
    return yen * premium_bp // 10_000


def rules_of(row: Any) -> PurchaseRules:
    return PurchaseRules(
        max_yen_per_purchase=row.max_yen_per_purchase, max_yen_per_year=row.max_yen_per_year
    )


def fiscal_year_start_us(ts_us: int) -> int:
    day = datetime.fromtimestamp(ts_us / 1_000_000, JST)
    year = day.year if day.month >= 4 else day.year - 1
    return to_us(datetime(year, 4, 1, tzinfo=JST))


def apply_purchase(
    conn: Connection, tenant: str, spec: PurchaseCreate, ids: tuple[str, str], ts: int
) -> list[TransferResult]:
    """Check the limits and apply the chain inside ``conn``'s transaction; raises the
    ledger Problem (nothing written) when the purchase is refused."""
    lock_head(conn, tenant)
    currency = conn.execute(
        select(currencies).where(
            currencies.c.tenant_id == tenant, currencies.c.code == spec.currency
        )
    ).first()
    if currency is None:
        raise ledger_problem("currency-not-found", f"no currency {spec.currency!r}")
    if currency.kind != "purchased":
        raise ledger_problem("not-purchasable", f"{spec.currency} is not a purchased currency")
    wallet = conn.execute(
        select(accounts.c.id, accounts.c.kind).where(
            accounts.c.tenant_id == tenant, accounts.c.code == spec.account
        )
    ).first()
    if wallet is None:
        raise ledger_problem("account-not-found", f"no account {spec.account!r}")
    if wallet.kind != "resident":
        raise ledger_problem("invalid-request", "points are bought into a resident wallet")
    premium = premium_of(spec.yen, currency.premium_bp)
    if premium and not spec.premium_account:
        raise ledger_problem("invalid-request", "premium_account is required (premium_bp > 0)")
    yen_id, premium_id = ids
    replay = conn.execute(
        select(transfers.c.seq).where(transfers.c.tenant_id == tenant, transfers.c.id == yen_id)
    ).first()
    if replay is None:  # a retry is answered as it was, whatever was bought since
        _check_limits(conn, tenant, wallet.id, spec.yen, rules_of(currency), ts)
    common = {
        "credit_account": spec.account,
        "currency": spec.currency,
        "ref": spec.ref,
        "memo": spec.memo,
        "expires_at": spec.expires_at,
    }
    items = [
        Item(
            TransferCreate(
                id=yen_id,
                debit_account=f"issuance:{spec.currency}",
                amount=spec.yen,
                code="purchase",
                linked=premium > 0,
                **common,
            )
        )
    ]
    if premium:
        items.append(
            Item(
                TransferCreate(
                    id=premium_id,
                    debit_account=spec.premium_account,
                    amount=premium,
                    code="premium",
                    **common,
                )
            )
        )
    results = apply_batch(conn, tenant, items, ts)
    failed = [r for r in results if not r.ok and not r.error.type.endswith(":linked-event-failed")]
    if failed:
        cause = failed[0]
        code = cause.error.type.removeprefix(PREFIX)
        if cause.id == premium_id and code in ("insufficient-funds", "debit-cap-exceeded"):
            raise ledger_problem(
                "premium-budget-exhausted",
                f"{spec.premium_account} cannot pay a premium of {premium}",
            )
        raise result_problem(cause)
    return results


def _check_limits(
    conn: Connection, tenant: str, wallet_id: int, yen: int, rules: PurchaseRules, ts: int
) -> None:
    if rules.max_yen_per_purchase is not None and yen > rules.max_yen_per_purchase:
        raise ledger_problem(
            "purchase-limit-exceeded",
            f"at most {rules.max_yen_per_purchase} yen per purchase",
            limit="per-purchase",
            max_yen=rules.max_yen_per_purchase,
        )
    if rules.max_yen_per_year is None:
        return
    bought = conn.execute(
        select(func.coalesce(func.sum(transfers.c.amount), 0)).where(
            transfers.c.credit_id == wallet_id,
            transfers.c.ts_us >= fiscal_year_start_us(ts),
            transfers.c.tenant_id == tenant,
            transfers.c.code == "purchase",
        )
    ).scalar_one()
    if int(bought) + yen > rules.max_yen_per_year:
        raise ledger_problem(
            "purchase-limit-exceeded",
            f"at most {rules.max_yen_per_year} yen a fiscal year; {bought} bought",
            limit="per-year",
            max_yen=rules.max_yen_per_year,
            bought_yen=int(bought),
        )


def purchase_public(
    spec: PurchaseCreate, results: list[TransferResult], expiry_days: int | None
) -> PurchasePublic:
    """The purchase as made (or as first made, for a retry), with its lots' expiry."""
    parts = [r.transfer for r in results if r.transfer is not None]
    first = parts[0]
    premium = sum(t.amount for t in parts[1:])
    if spec.expires_at is not None:
        expires = spec.expires_at
    elif expiry_days:
        expires = from_us(_end_of_jst_day(to_us(first.timestamp), expiry_days))
    else:
        expires = None
    return PurchasePublic(
        id=spec.id,
        currency=spec.currency,
        account=spec.account,
        yen=spec.yen,
        premium=premium,
        points=spec.yen + premium,
        expires_at=expires,
        timestamp=first.timestamp,
        transfers=parts,
        created=results[0].status == "created",
    )
