"""Property tests: whatever mix of transfers arrives, the ledger's invariants hold.

* per currency, all balances sum to zero (double entry)
* each account's totals equal the sums of its transfers (``verify`` recomputes them)
* no account that may not go negative ever is
* lots are never over-spent and a wallet's lots add up to what it can spend
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from kizuna.ledger.models import accounts, lots
from kizuna.ledger.schemas import AccountCreate, CurrencyCreate
from kizuna.ledger.service import Ledger
from kizuna.storage import create_engine_for, upgrade_to_head

ACCOUNTS = ["budget", "r1", "r2", "r3", "m1", "issuance:gyosei"]

op = st.one_of(
    st.tuples(
        st.just("plain"),
        st.sampled_from(ACCOUNTS),
        st.sampled_from(ACCOUNTS),
        st.one_of(st.integers(-5, 400), st.just("ten")),
        st.booleans(),  # linked
    ),
    st.tuples(
        st.just("pending"),
        st.sampled_from(ACCOUNTS),
        st.sampled_from(ACCOUNTS),
        st.integers(1, 300),
        st.booleans(),
    ),
    st.tuples(st.just("post"), st.integers(0, 20), st.integers(0, 400), st.none(), st.booleans()),
    st.tuples(st.just("void"), st.integers(0, 20), st.none(), st.none(), st.booleans()),
    st.tuples(st.just("replay"), st.integers(0, 40), st.none(), st.none(), st.booleans()),
)


def _engine():
    folder = Path(tempfile.mkdtemp(prefix="kz-prop-"))
    engine = create_engine_for(f"sqlite:///{folder / 'k.db'}", pool_size=2)
    upgrade_to_head(engine)
    return engine, folder


ENGINE, FOLDER = None, None


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(st.lists(op, min_size=1, max_size=12), min_size=1, max_size=6))
def test_invariants_hold_for_any_batches(batches):
    global ENGINE, FOLDER
    if ENGINE is None:
        ENGINE, FOLDER = _engine()
    ledger = Ledger(ENGINE, FOLDER)
    tenant = f"p{uuid.uuid4().hex[:12]}"
    ledger.create_currency(
        tenant,
        CurrencyCreate(
            code="gyosei", name_ja="行政ポイント", kind="administrative", expiry_days=30
        ),
    )
    for code, kind in [
        ("budget", "budget"),
        ("r1", "resident"),
        ("r2", "resident"),
        ("r3", "resident"),
        ("m1", "merchant"),
    ]:
        ledger.open_account(
            tenant,
            AccountCreate(
                code=code,
                currency="gyosei",
                kind=kind,
                daily_send_limit=500 if kind == "resident" else None,
            ),
        )
    ledger.post_transfers(
        tenant,
        [
            {
                "id": str(uuid.uuid4()),
                "debit_account": "issuance:gyosei",
                "credit_account": "budget",
                "amount": 2000,
                "currency": "gyosei",
            }
        ],
    )
    pendings: list[str] = []
    sent: list[dict] = []
    for batch in batches:
        items = []
        for kind, a, b, n, linked in batch:
            tid = str(uuid.uuid4())
            if kind == "plain":
                item = {
                    "id": tid,
                    "debit_account": a,
                    "credit_account": b,
                    "amount": n,
                    "currency": "gyosei",
                    "linked": linked,
                }
            elif kind == "pending":
                item = {
                    "id": tid,
                    "debit_account": a,
                    "credit_account": b,
                    "amount": n,
                    "currency": "gyosei",
                    "pending": True,
                    "linked": linked,
                }
                pendings.append(tid)
            elif kind in ("post", "void"):
                if not pendings:
                    continue
                pid = pendings[a % len(pendings)]
                item = {"id": tid, f"{kind}_pending_id": pid, "linked": linked}
                if kind == "post" and b:
                    item["amount"] = b
            else:
                if not sent:
                    continue
                item = dict(sent[a % len(sent)])
            items.append(item)
            sent.append(item)
        if not items:
            continue
        results = ledger.post_transfers(tenant, items)
        assert len(results) == len(items)
        # A linked chain is all or nothing.
        chain: list = []
        for item, result in zip(items, results, strict=True):
            chain.append(result)
            if not item.get("linked"):
                assert len({r.ok for r in chain}) == 1, chain
                chain = []
        assert all(not r.ok for r in chain)
    report = ledger.verify(tenant)
    assert report.ok, report.errors
    with ENGINE.connect() as conn:
        total = conn.execute(
            select(func.sum(accounts.c.credits_posted - accounts.c.debits_posted)).where(
                accounts.c.tenant_id == tenant
            )
        ).scalar_one()
        assert total == 0
        for row in conn.execute(select(accounts).where(accounts.c.tenant_id == tenant)):
            if row.kind != "issuance":
                assert row.credits_posted - row.debits_posted - row.debits_pending >= 0
        assert (
            conn.execute(
                select(func.count())
                .select_from(lots)
                .where(
                    lots.c.tenant_id == tenant,
                    (lots.c.remaining < 0) | (lots.c.remaining > lots.c.amount),
                )
            ).scalar_one()
            == 0
        )
