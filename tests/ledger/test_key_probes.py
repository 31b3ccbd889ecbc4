"""On PostgreSQL a batch reads and locks what it names one index probe per key, whatever
the statistics say: with a plain ``= ANY(list)`` the planner, on the statistics of a log
that grew since its last ANALYZE, scanned every transfer (and every account) of the
tenant for each batch."""

from __future__ import annotations

import re
import uuid

import pytest

from kizuna.ledger import apply
from kizuna.ledger.schemas import AccountCreate, CurrencyCreate
from kizuna.ledger.service import Ledger

from .conftest import tx

WALLETS = 1_500


@pytest.mark.parametrize("analysed", [False, True], ids=["stale statistics", "analysed"])
def test_postgresql_batch_reads_are_index_probes(pg_engine, tmp_path, analysed):
    ledger = Ledger(pg_engine, tmp_path)
    tenant = f"probe{uuid.uuid4().hex[:8]}"
    ledger.create_currency(
        tenant, CurrencyCreate(code="pt", name_ja="pt", kind="administrative", expiry_days=365)
    )
    wallets = [f"w{i}" for i in range(WALLETS)]
    ledger.open_accounts(
        tenant,
        [AccountCreate(code=w, currency="pt", kind="resident") for w in wallets]
        + [AccountCreate(code="shop", currency="pt", kind="merchant")],
    )
    funding = [tx("issuance:pt", w, 1_000, currency="pt") for w in wallets]
    payments = [tx(w, "shop", 10, currency="pt") for w in wallets * 2]
    holds = [tx(w, "shop", 5, currency="pt", pending=True) for w in wallets[:20]]
    for chunk in (funding, payments[:WALLETS], payments[WALLETS:], holds):
        assert all(r.ok for r in ledger.post_transfers(tenant, chunk))

    with pg_engine.begin() as conn:
        if analysed:
            conn.exec_driver_sql("ANALYZE")
        cur = conn.connection.driver_connection.cursor()
        cur.execute(
            "SELECT a.id, l.id FROM ledger_accounts a JOIN ledger_lots l ON l.account_id = a.id"
            " WHERE a.tenant_id = %s AND a.code = ANY(%s)",
            (tenant, wallets[:5]),
        )
        account_ids, lot_ids = (list(column) for column in zip(*cur.fetchall(), strict=True))
        cur.execute("SELECT seq FROM ledger_lot_spends WHERE tenant_id = %s LIMIT 5", (tenant,))
        seqs = [row[0] for row in cur.fetchall()]
        transfer_ids = [t["id"] for t in payments[:5]] + [str(uuid.uuid4())]
        hold_ids = [t["id"] for t in holds[:5]]
        cases = {
            "existing": (apply._EXISTING_SQL, (transfer_ids, tenant)),
            "resolved": (apply._RESOLVED_SQL, (hold_ids, tenant)),
            "spends": (apply._SPENDS_SQL, (seqs, tenant)),
            "lots": (apply._LOTS_SQL, (account_ids,)),
            "lots by id": (apply._LOTS_BY_ID_SQL, (lot_ids,)),
        }
        plans = {
            name: _plan(cur, apply._PG_PROBES[sql], params) for name, (sql, params) in cases.items()
        }
        plans["accounts"] = _plan(
            cur, apply._ACCOUNTS_PG_SQL, (wallets[:5] + ["shop", "nobody"], tenant, account_ids)
        )
        conn.rollback()
    for name, plan in plans.items():
        assert "Seq Scan" not in plan, (name, plan)
        removed = [
            int(n) for n in re.findall(r"Rows Removed by (?:Filter|Index Recheck): (\d+)", plan)
        ]
        assert max(removed, default=0) <= 5, (name, plan)


def _plan(cur, sql: str, params: tuple) -> str:  # noqa: ANN001
    cur.execute("EXPLAIN (ANALYZE, COSTS OFF) " + sql.replace("?", "%s"), params)
    return "\n".join(row[0] for row in cur.fetchall())
