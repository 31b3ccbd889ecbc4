"""Ledger speed, as ratios measured in one run (the machine is shared and noisy).

* batched: ``Ledger.post_transfers`` in batches, every guarantee on (idempotency lookup,
  row locks in id order, balance rules, lots, Merkle leaf + log head, one transaction
  per batch)
* (a) raw: the same transfer rows inserted into the same table the same way (COPY /
  executemany, one transaction per batch), with no ledger logic — goal: batched/raw ≥ 0.3
* (b) naive: the common design, one transaction per transfer with
  ``SELECT ... FOR UPDATE`` of both accounts, balance check, INSERT, two UPDATEs
  (written here, in bench/) — goal: batched/naive ≥ 5
* hot: 90 % of payments to one merchant — goal: hot/uncontended ≥ 0.5
* HTTP: single payments to a real ``kizuna serve`` at concurrency 32 — goal: p99 < 50 ms
* verify: ``kizuna ledger verify`` over 1,000,000 transfers — goal: < 60 s

    .venv/bin/python bench/ledger_bench.py                 # SQLite and PostgreSQL
    .venv/bin/python bench/ledger_bench.py --only sqlite --verify-size 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import percentile, pg_schema, schema_url  # noqa: E402

CUR = "chiiki"
TENANT = "bench"
WALLETS = 10_000
MERCHANTS = 100


def make_ledger(url: str, data_dir: Path):
    from kizuna.ledger.schemas import AccountCreate, CurrencyCreate
    from kizuna.ledger.service import Ledger
    from kizuna.storage import create_engine_for, upgrade_to_head

    engine = create_engine_for(url, pool_size=8)
    upgrade_to_head(engine)
    ledger = Ledger(engine, data_dir)
    ledger.create_currency(
        TENANT, CurrencyCreate(code=CUR, name_ja="地域ポイント", kind="purchased", expiry_days=180)
    )
    ledger.open_accounts(
        TENANT,
        [AccountCreate(code=f"w{i}", currency=CUR, kind="resident") for i in range(WALLETS)]
        + [AccountCreate(code=f"m{i}", currency=CUR, kind="merchant") for i in range(MERCHANTS)],
    )
    funding = [
        {
            "id": str(uuid.uuid4()),
            "debit_account": f"issuance:{CUR}",
            "credit_account": f"w{i}",
            "amount": 10**12,
            "currency": CUR,
            "code": "purchase",
        }
        for i in range(WALLETS)
    ]
    for i in range(0, len(funding), 5000):
        assert all(r.ok for r in ledger.post_transfers(TENANT, funding[i : i + 5000]))
    return engine, ledger


def payments(n: int, hot: float, seed: int):
    from kizuna.ledger.schemas import TransferCreate

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        m = 0 if rng.random() < hot else rng.randrange(MERCHANTS)
        out.append(
            TransferCreate(
                id=str(uuid.UUID(int=rng.getrandbits(128) | 1)),
                debit_account=f"w{rng.randrange(WALLETS)}",
                credit_account=f"m{m}",
                amount=rng.randint(1, 5000),
                currency=CUR,
                code="payment",
            )
        )
    return out


def run_batched(ledger, items, batch: int) -> float:
    t = time.perf_counter()
    for i in range(0, len(items), batch):
        results = ledger.post_transfers(TENANT, items[i : i + batch])
        assert all(r.status == "created" for r in results), next(r for r in results if not r.ok)
    return len(items) / (time.perf_counter() - t)


def run_raw(engine, ledger, items, batch: int) -> float:
    """The same rows (all columns, leaf hash included) inserted with the same bulk path."""
    from sqlalchemy import select

    from kizuna.ledger import merkle
    from kizuna.ledger.apply import now_us
    from kizuna.ledger.models import accounts
    from kizuna.storage import writer
    from kizuna.storage.bulk import bulk_insert

    with engine.connect() as conn:
        ids = dict(
            conn.execute(
                select(accounts.c.code, accounts.c.id).where(accounts.c.tenant_id == TENANT)
            ).all()
        )
    rows = []
    for seq, it in enumerate(items):
        rows.append(
            {
                "tenant_id": "raw" + TENANT,
                "seq": seq,
                "id": it.id,
                "currency": CUR,
                "debit_id": ids[it.debit_account],
                "credit_id": ids[it.credit_account],
                "amount": it.amount,
                "kind": "posted",
                "pending_id": None,
                "timeout_s": None,
                "linked": False,
                "code": it.code,
                "ref": None,
                "memo": None,
                "expires_us": None,
                "ts_us": now_us(),
                "body_hash": "0" * 64,
                "leaf_hash": merkle.leaf_hash(it.id.encode()),
            }
        )
    t = time.perf_counter()
    for i in range(0, len(rows), batch):
        with writer(engine).begin() as conn:
            bulk_insert(
                conn,
                __import__("kizuna.ledger.models", fromlist=["transfers"]).transfers,
                rows[i : i + batch],
            )
    return len(rows) / (time.perf_counter() - t)


def run_naive(engine, items, threads: int) -> float:
    """One transaction per transfer: lock both accounts FOR UPDATE, check, insert, update."""
    from sqlalchemy import text

    from kizuna.storage import is_postgres, writer

    pg = is_postgres(engine)
    lock = " FOR UPDATE" if pg else ""
    w = writer(engine)
    chunks = [items[k::threads] for k in range(threads)]
    errors: list[BaseException] = []

    def work(chunk) -> None:
        try:
            for it in chunk:
                with w.begin() as conn:
                    if conn.execute(
                        text("SELECT 1 FROM naive_transfers WHERE id = :i"), {"i": it.id}
                    ).first():
                        continue
                    rows = conn.execute(
                        text(
                            f"SELECT id, code, balance FROM naive_accounts WHERE code IN (:d, :c) ORDER BY id{lock}"
                        ),
                        {"d": it.debit_account, "c": it.credit_account},
                    ).all()
                    bal = {r.code: r.balance for r in rows}
                    if bal[it.debit_account] < it.amount:
                        raise RuntimeError("insufficient")
                    conn.execute(
                        text(
                            "INSERT INTO naive_transfers (id, debit, credit, amount, code) VALUES (:i, :d, :c, :a, :k)"
                        ),
                        {
                            "i": it.id,
                            "d": it.debit_account,
                            "c": it.credit_account,
                            "a": it.amount,
                            "k": it.code,
                        },
                    )
                    conn.execute(
                        text("UPDATE naive_accounts SET balance = balance - :a WHERE code = :d"),
                        {"a": it.amount, "d": it.debit_account},
                    )
                    conn.execute(
                        text("UPDATE naive_accounts SET balance = balance + :a WHERE code = :c"),
                        {"a": it.amount, "c": it.credit_account},
                    )
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    with writer(engine).begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE naive_accounts (id INTEGER PRIMARY KEY, code VARCHAR(128) UNIQUE, balance BIGINT)"
            )
        )
        conn.execute(
            text(
                "CREATE TABLE naive_transfers (id VARCHAR(36) PRIMARY KEY, debit VARCHAR(128), credit VARCHAR(128), amount BIGINT, code VARCHAR(32))"
            )
        )
        conn.execute(
            text("INSERT INTO naive_accounts (id, code, balance) VALUES (:i, :c, :b)"),
            [{"i": i, "c": f"w{i}", "b": 10**12} for i in range(WALLETS)]
            + [{"i": WALLETS + i, "c": f"m{i}", "b": 0} for i in range(MERCHANTS)],
        )
    t = time.perf_counter()
    ts = [threading.Thread(target=work, args=(c,)) for c in chunks]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    assert not errors, errors[:1]
    return len(items) / (time.perf_counter() - t)


def run_http(url: str, data_dir: Path, n: int, concurrency: int, workers: int) -> dict:
    from _harness import kizuna_server

    port = random.randint(20000, 40000)
    rng = random.Random(5)
    bodies = [
        {
            "id": str(uuid.uuid4()),
            "debit_account": f"w{rng.randrange(WALLETS)}",
            "credit_account": f"m{0 if rng.random() < 0.8 else rng.randrange(MERCHANTS)}",
            "amount": rng.randint(1, 5000),
            "currency": CUR,
            "code": "payment",
        }
        for _ in range(n)
    ]
    latencies: list[float] = []

    async def go() -> float:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30
        ) as client:
            queue = list(reversed(bodies))

            async def worker() -> None:
                while queue:
                    body = queue.pop()
                    t = time.perf_counter()
                    r = await client.post(
                        "/ledger/transfers", json=body, headers={"NGSILD-Tenant": TENANT}
                    )
                    latencies.append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 201, r.text

            # warm up
            for _ in range(50):
                b = dict(bodies[0], id=str(uuid.uuid4()))
                await client.post("/ledger/transfers", json=b, headers={"NGSILD-Tenant": TENANT})
            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - t0

    with kizuna_server(url, port, workers=workers):
        elapsed = asyncio.run(go())
    return {
        "requests": n,
        "concurrency": concurrency,
        "workers": workers,
        "rps": round(n / elapsed),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
    }


WRK_SCRIPT = r"""
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
local function uuid()
  return string.format("%08x-%04x-4%03x-%04x-%08x%04x", math.random(0, 0x7fffffff),
    math.random(0, 0xffff), math.random(0, 0xfff), math.random(0x8000, 0xbfff),
    math.random(0, 0x7fffffff), math.random(0, 0xffff))
end
request = function()
  local m = 0
  if math.random() > 0.8 then m = math.random(0, __MERCHANTS__ - 1) end
  local body = string.format('{"id":"%s","debit_account":"w%d","credit_account":"m%d",' ..
    '"amount":%d,"currency":"__CUR__","code":"payment"}', uuid(), math.random(0, __WALLETS__ - 1),
    m, math.random(1, 5000))
  return wrk.format("POST", "/ledger/transfers",
    {["Content-Type"] = "application/json", ["NGSILD-Tenant"] = "__TENANT__"}, body)
end
response = function(status, headers, body)
  if status ~= 201 then io.write("unexpected " .. status .. " " .. body .. "\n") end
end
"""


def run_wrk(url: str, seconds: int, concurrency: int, workers: int) -> dict:
    """Single payments with wrk (lighter than a Python client on a 2-core machine)."""
    import re

    from _harness import kizuna_server

    port = random.randint(20000, 40000)
    script = Path(tempfile.mkdtemp()) / "pay.lua"
    script.write_text(
        WRK_SCRIPT.replace("__MERCHANTS__", str(MERCHANTS))
        .replace("__WALLETS__", str(WALLETS))
        .replace("__CUR__", CUR)
        .replace("__TENANT__", TENANT)
    )
    with kizuna_server(url, port, workers=workers):
        subprocess.run(
            ["wrk", "-t1", "-c4", "-d2s", "-s", str(script), f"http://127.0.0.1:{port}"],
            capture_output=True,
        )
        out = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{concurrency}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                str(script),
                f"http://127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
        ).stdout

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return round(value / 1000 if unit == "us" else value * 1000 if unit == "s" else value, 1)

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {
        "tool": "wrk",
        "concurrency": concurrency,
        "workers": workers,
        "seconds": seconds,
        "rps": round(float(rps.group(1))) if rps else None,
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "unexpected": out.count("unexpected"),
    }


def run_verify(url: str, data_dir: Path, ledger, size: int, batch: int) -> dict:
    from kizuna.ledger.service import Ledger

    have = ledger.verify(TENANT).transfers
    todo = max(0, size - have)
    t = time.perf_counter()
    for i in range(0, todo, 50_000):
        items = payments(min(50_000, todo - i), 0.0, 1000 + i)
        run_batched(ledger, items, batch)
    load = time.perf_counter() - t
    ledger.checkpoint(TENANT)
    env = {"KIZUNA_DATABASE_URL": url, "KIZUNA_DATA_DIR": str(data_dir)}
    import os

    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "kizuna.cli", "ledger", "verify", "--tenant", TENANT],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t
    assert out.returncode == 0, out.stdout + out.stderr
    del Ledger
    return {
        "transfers": size,
        "load_s": round(load, 1),
        "verify_s": round(seconds, 1),
        "line": out.stdout.strip().splitlines()[-1],
    }


def bench(
    dialect: str, n: int, naive_n: int, batch: int, http_n: int, verify_size: int, workers: int
) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="kizuna-ledger-bench-"))
    with pg_schema() if dialect == "postgresql" else contextlib.nullcontext(None) as schema:
        url = schema_url(schema) if schema else f"sqlite:///{data_dir / 'kizuna.db'}"
        engine, ledger = make_ledger(url, data_dir)
        if dialect == "postgresql":
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        out: dict = {"dialect": dialect, "batch": batch}
        warm = payments(2000, 0.0, 99)
        run_batched(ledger, warm, batch)
        uncontended = run_batched(ledger, payments(n, 0.0, 1), batch)
        hot = run_batched(ledger, payments(n, 0.9, 2), batch)
        raw = run_raw(engine, ledger, payments(n, 0.0, 3), batch)
        threads = 4 if dialect == "postgresql" else 1
        naive = run_naive(engine, payments(naive_n, 0.0, 4), threads)
        out.update(
            batched_tps=round(uncontended),
            raw_tps=round(raw),
            naive_tps=round(naive),
            naive_threads=threads,
            hot_tps=round(hot),
            ratio_a_batched_over_raw=round(uncontended / raw, 2),
            ratio_b_batched_over_naive=round(uncontended / naive, 1),
            ratio_hot_over_uncontended=round(hot / uncontended, 2),
        )
        print(out, flush=True)
        if http_n:
            import shutil

            if shutil.which("wrk"):
                out["http"] = run_wrk(url, 10, 32, workers)
            else:
                out["http"] = run_http(url, data_dir, http_n, 32, workers)
            print(out["http"], flush=True)
        if verify_size:
            out["verify"] = run_verify(url, data_dir, ledger, verify_size, batch)
            print(out["verify"], flush=True)
        engine.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="ledger speed as ratios")
    ap.add_argument("--only", choices=["sqlite", "postgresql"])
    ap.add_argument("--transfers", type=int, default=50_000)
    ap.add_argument("--naive", type=int, default=5_000)
    ap.add_argument("--batch", type=int, default=4_000)
    ap.add_argument("--http", type=int, default=5_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--verify-size", type=int, default=0)
    args = ap.parse_args()
    for dialect in [args.only] if args.only else ["sqlite", "postgresql"]:
        bench(
            dialect,
            args.transfers,
            args.naive,
            args.batch,
            args.http,
            args.verify_size,
            args.workers,
        )


if __name__ == "__main__":
    main()
