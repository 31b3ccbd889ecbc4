"""Many concurrent writers (separate engines, like separate processes) on a hot merchant:
no lost update, no overdraft, no duplicate, no deadlock, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import threading
import uuid

from kizuna.ledger.schemas import AccountCreate
from kizuna.ledger.service import Ledger
from kizuna.problems import Problem
from kizuna.storage import create_engine_for

from .conftest import CUR, tx

WALLETS = 40
THREADS = 6
PER_THREAD = 60


def test_concurrent_payments_to_a_hot_merchant(ledger, tenant, engine, tmp_path):
    ledger.open_accounts(
        tenant, [AccountCreate(code=f"w{i}", currency=CUR, kind="resident") for i in range(WALLETS)]
    )
    funded = ledger.post_transfers(tenant, [tx("budget", f"w{i}", 100) for i in range(WALLETS)])
    assert all(r.ok for r in funded)
    url = engine.url.render_as_string(hide_password=False)
    accepted: dict[str, int] = {}
    lock = threading.Lock()
    failures: list[BaseException] = []

    def client(n: int) -> None:
        rng = random.Random(n)
        own = create_engine_for(url, pool_size=2)
        mine = Ledger(own, tmp_path)
        try:
            for k in range(PER_THREAD):
                t = tx(f"w{rng.randrange(WALLETS)}", "m1", rng.randint(1, 30), code="payment")
                if k % 3 == 0:  # a batch of several, with a retry of the same batch
                    batch = [t, tx(f"w{rng.randrange(WALLETS)}", "m1", rng.randint(1, 30))]
                    for _ in range(2):
                        results = mine.post_transfers(tenant, batch)
                    for item, result in zip(batch, results, strict=True):
                        if result.ok:
                            with lock:
                                accepted[item["id"]] = item["amount"]
                    continue
                for _ in range(2):  # every single payment is sent twice (a client retry)
                    try:
                        mine.post_transfer(tenant, t)
                    except Problem as problem:
                        assert problem.type.endswith("insufficient-funds"), problem.body()
                        break
                else:
                    with lock:
                        accepted[t["id"]] = t["amount"]
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures, failures
    merchant = ledger.get_account(tenant, "m1")
    assert merchant.balance == sum(accepted.values())
    wallets = ledger.list_accounts(tenant, kind="resident", limit=1000)
    assert all(w.available >= 0 for w in wallets)
    assert sum(w.balance for w in wallets) == WALLETS * 100 - merchant.balance
    ids = [t.id for t in ledger.list_transfers(tenant, account="m1", limit=100_000)]
    assert len(ids) == len(set(ids)) == len(accepted)
    report = ledger.verify(tenant)
    assert report.ok, report.errors
    assert uuid.UUID(ids[0])
