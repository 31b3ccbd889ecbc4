"""Crash test of the ledger with real processes: clients post transfers over HTTP with
retries while the server is killed with SIGKILL several times and restarted.

Afterwards every acknowledged transfer must exist exactly once, nothing else may exist
(so nothing unacknowledged was half-applied), the merchants hold exactly what was paid,
and ``kizuna ledger verify`` (run as a separate process) must pass.

    .venv/bin/python bench/ledger_crash.py                       # 100,000 transfers, SQLite
    .venv/bin/python bench/ledger_crash.py --pg                  # on PostgreSQL
    .venv/bin/python bench/ledger_crash.py --transfers 3000 --kills 2   # what the test runs
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

CUR = "chiiki"
TENANT = "crash"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, database_url: str, data_dir: Path, port: int) -> None:
        self.env = dict(os.environ)
        self.env.update(
            KIZUNA_DATABASE_URL=database_url,
            KIZUNA_DATA_DIR=str(data_dir),
            KIZUNA_OPEN_ACCESS="true",
            KIZUNA_PORT=str(port),
            KIZUNA_WORKERS="1",
            KIZUNA_LEDGER_CHECKPOINT_SECONDS="1",
        )
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(data_dir / "server.log", "a")  # noqa: SIM115
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kizuna.cli", "serve"],
            env=self.env,
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise SystemExit("server did not start; see server.log")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.log.close()


def setup(database_url: str, data_dir: Path, wallets: int, merchants: int) -> None:
    from kizuna.ledger.schemas import AccountCreate, CurrencyCreate
    from kizuna.ledger.service import Ledger
    from kizuna.storage import create_engine_for, upgrade_to_head

    engine = create_engine_for(database_url, pool_size=2)
    upgrade_to_head(engine)
    ledger = Ledger(engine, data_dir)
    ledger.create_currency(
        TENANT, CurrencyCreate(code=CUR, name_ja="地域ポイント", kind="purchased")
    )
    ledger.open_accounts(
        TENANT,
        [AccountCreate(code=f"w{i}", currency=CUR, kind="resident") for i in range(wallets)]
        + [AccountCreate(code=f"m{i}", currency=CUR, kind="merchant") for i in range(merchants)],
    )
    funding = [
        {
            "id": str(uuid.uuid4()),
            "debit_account": f"issuance:{CUR}",
            "credit_account": f"w{i}",
            "amount": 10**9,
            "currency": CUR,
            "code": "purchase",
        }
        for i in range(wallets)
    ]
    for i in range(0, len(funding), 4000):
        assert all(r.ok for r in ledger.post_transfers(TENANT, funding[i : i + 4000]))
    engine.dispose()


def plan(n: int, wallets: int, merchants: int, seed: int) -> list[dict]:
    """Payments from wallets to merchants; merchant m0 is hot (about 80 % of payments)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        m = 0 if rng.random() < 0.8 else rng.randrange(merchants)
        out.append(
            {
                "id": str(uuid.uuid4()),
                "debit_account": f"w{rng.randrange(wallets)}",
                "credit_account": f"m{m}",
                "amount": rng.randint(1, 5000),
                "currency": CUR,
                "code": "payment",
            }
        )
    return out


def run(
    transfers: int = 100_000,
    kills: int = 5,
    clients: int = 8,
    batch: int = 20,
    pg: bool = False,
    seed: int = 7,
    quiet: bool = False,
) -> dict:
    from _harness import pg_schema, schema_url

    say = (lambda *a: None) if quiet else print
    data_dir = Path(tempfile.mkdtemp(prefix="kizuna-crash-"))
    with pg_schema() if pg else contextlib.nullcontext(None) as schema:
        url = schema_url(schema) if pg else f"sqlite:///{data_dir / 'kizuna.db'}"
        wallets, merchants = 500, 20
        setup(url, data_dir, wallets, merchants)
        todo = plan(transfers, wallets, merchants, seed)
        server = Server(url, data_dir, free_port())
        server.start()
        acked: dict[str, dict] = {}
        lock = threading.Lock()
        retries = [0]
        done = threading.Event()
        started = time.perf_counter()

        def post(client: httpx.Client, body: object) -> httpx.Response:
            while True:
                try:
                    r = client.post(
                        server.url + "/ledger/transfers",
                        json=body,
                        headers={"NGSILD-Tenant": TENANT},
                        timeout=30,
                    )
                except httpx.HTTPError:
                    r = None
                if r is not None and r.status_code < 500:
                    return r
                with lock:
                    retries[0] += 1
                time.sleep(0.05)

        def client_loop(k: int) -> None:
            mine = todo[k::clients]
            rng = random.Random(seed + k)
            with httpx.Client() as client:
                i = 0
                while i < len(mine):
                    if rng.random() < 0.5:  # a single payment (group-committed in the server)
                        item = mine[i]
                        r = post(client, item)
                        assert r.status_code in (200, 201), r.text
                        assert r.json()["id"] == item["id"]
                        with lock:
                            acked[item["id"]] = item
                        i += 1
                    else:
                        chunk = mine[i : i + batch]
                        r = post(client, chunk)
                        assert r.status_code == 200, r.text
                        results = r.json()
                        assert all(x["status"] in ("created", "exists") for x in results), results
                        with lock:
                            for item in chunk:
                                acked[item["id"]] = item
                        i += len(chunk)

        threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()

        def killer() -> None:
            for n in range(kills):
                target = transfers * (n + 1) // (kills + 1)
                while len(acked) < target and not done.is_set():
                    time.sleep(0.01)
                if done.is_set():
                    return
                server.kill()
                say(f"kill -9 #{n + 1} at {len(acked)} acknowledged")
                time.sleep(0.2)
                server.start()

        kt = threading.Thread(target=killer)
        kt.start()
        for t in threads:
            t.join()
        done.set()
        kt.join()
        elapsed = time.perf_counter() - started
        server.stop()

        # Check: exactly the planned transfers, each once, balances and verify.
        from sqlalchemy import func, select

        from kizuna.ledger.models import accounts
        from kizuna.ledger.models import transfers as transfers_t
        from kizuna.storage import create_engine_for

        engine = create_engine_for(url, pool_size=2)
        with engine.connect() as conn:
            stored = (
                conn.execute(
                    select(transfers_t.c.id).where(
                        transfers_t.c.tenant_id == TENANT, transfers_t.c.code == "payment"
                    )
                )
                .scalars()
                .all()
            )
            merchant_total = conn.execute(
                select(func.sum(accounts.c.credits_posted)).where(
                    accounts.c.tenant_id == TENANT, accounts.c.kind == "merchant"
                )
            ).scalar_one()
        engine.dispose()
        planned = {t["id"] for t in todo}
        problems = []
        if len(stored) != len(set(stored)):
            problems.append("a transfer is stored twice")
        if set(stored) != planned or set(acked) != planned:
            problems.append(
                f"stored {len(set(stored))}, acknowledged {len(acked)}, planned {len(planned)}"
            )
        if merchant_total != sum(t["amount"] for t in todo):
            problems.append("merchant balances differ from the acknowledged payments")
        env = dict(server.env)
        verify = subprocess.run(
            [sys.executable, "-m", "kizuna.cli", "ledger", "verify", "--tenant", TENANT],
            env=env,
            capture_output=True,
            text=True,
        )
        if verify.returncode != 0:
            problems.append("verify failed: " + verify.stdout[-2000:])
        summary = {
            "database": "postgresql" if pg else "sqlite",
            "transfers": transfers,
            "kills": kills,
            "clients": clients,
            "retried_requests": retries[0],
            "seconds": round(elapsed, 1),
            "verify": verify.stdout.strip().splitlines()[-1] if verify.stdout else "",
            "problems": problems,
        }
        say(summary)
        return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transfers", type=int, default=100_000)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--pg", action="store_true")
    args = ap.parse_args()
    summary = run(args.transfers, args.kills, args.clients, args.batch, args.pg)
    raise SystemExit(1 if summary["problems"] else 0)


if __name__ == "__main__":
    main()
