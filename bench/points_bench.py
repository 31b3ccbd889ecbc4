"""Points: the payment round trip through the API with many concurrent payers, against the
ledger's own batched rate measured in the same run; and every points page's server time
with the demo data. PostgreSQL, a real `kizuna serve` process.

    .venv/bin/python bench/points_bench.py [--payers 200] [--rounds 5]

Round trip = POST /points/api/payments (hold: a pending ledger transfer) + POST
/points/api/payments/{id}/confirm (post it), each payer with their own bearer token,
waiting for one answer before the next request (like a phone).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import kizuna_server, percentile, pg_schema, schema_url  # noqa: E402

TENANT = "bench"  # the payers' municipality; the demo seeds 高砂市 ("takasago")
TENANT_RP = "bench-rp"  # payers who hold only 地域ポイント bought at the counter


def seed_payers(
    url: str, data_dir: Path, payers: int, tenant: str = TENANT
) -> tuple[list[str], str]:
    """A programme, one shop and ``payers`` verified residents with 100,000 pt each (in
    ``TENANT_RP``: 0 pt and 110,000 地域ポイント bought at the counter, so every payment
    takes the purchased path: both wallets' lots read, the hold from the 地域ポイント wallet);
    returns their bearer tokens and the shop code."""
    from kizuna.app import build_services
    from kizuna.auth import service as auth
    from kizuna.auth.service import Role
    from kizuna.points.schemas import (
        ProgrammeCreate,
        PurchaseProgrammeCreate,
        ResidentCreate,
        SaleIn,
        ShopCreate,
    )
    from kizuna.settings import Settings
    from kizuna.storage import writer

    services = build_services(Settings(database_url=url, data_dir=data_dir))
    services.tenants.create_tenant(tenant, "高砂市", "Takasago")
    prefix = "payer" if tenant == TENANT else "rp-payer"
    points = services.points
    points.setup_programme(
        tenant,
        ProgrammeCreate(name_ja="ベンチ", budgets={"eco": 10**9, "volunteer": 10**10, "coupon": 1}),
    )
    points.register_shop(
        tenant, ShopCreate(code="bench-shop", name="ベンチ商店", town="荒井町", address="x")
    )
    if tenant == TENANT_RP:
        points.setup_purchase(tenant, PurchaseProgrammeCreate(premium_budget=10**9))
    tokens = []
    # Passwords are hashed with argon2 on purpose (slow); the bench's payers get their
    # session tokens written directly instead of signing in 200 times.
    import hashlib
    import secrets
    from datetime import UTC, datetime

    from sqlalchemy import insert, select

    from kizuna.auth.models import tokens as token_table
    from kizuna.auth.models import users

    with writer(services.engine).begin() as conn:
        for n in range(payers):
            auth.create_user(conn, f"{prefix}{n}", f"payer {n}", Role.RESIDENT, None, [tenant])
    from kizuna.ledger.schemas import TransferCreate

    for n in range(payers):
        r = points.register_resident(
            tenant,
            f"{prefix}{n}",
            ResidentCreate(real_name=f"住民{n}", kana="じゅうみん", town="荒井町"),
        )
        points.verify_resident(tenant, r.id, "bench")
        if tenant == TENANT_RP:
            for k in range(2):
                points.sell(
                    tenant, SaleIn(receipt=f"B{n}-{k}", member_code=r.member_code, yen=50_000)
                )
        else:
            points.ledger.post_transfer(
                tenant,
                TransferCreate(
                    id=str(uuid.uuid4()),
                    debit_account="budget:volunteer",
                    credit_account=r.wallet,
                    amount=100_000,
                    currency="pt",
                    code="volunteer",
                ),
            )
        token = "kzt_" + secrets.token_urlsafe(32)
        with writer(services.engine).begin() as conn:
            user_id = conn.execute(
                select(users.c.id).where(users.c.username == f"{prefix}{n}")
            ).scalar()
            conn.execute(
                insert(token_table).values(
                    token_sha256=hashlib.sha256(token.encode()).hexdigest(),
                    user_id=user_id,
                    expires_at=datetime.now(UTC) + timedelta(hours=2),
                )
            )
        tokens.append(token)
    services.engine.dispose()
    return tokens, "bench-shop"


def ledger_batched_rate(url: str, data_dir: Path, n: int = 20_000, batch: int = 1000) -> float:
    """The ledger's own rate for the same kind of transfer (wallet → shop), batched."""
    from kizuna.ledger.schemas import AccountCreate, CurrencyCreate, TransferCreate
    from kizuna.ledger.service import Ledger
    from kizuna.storage import create_engine_for

    engine = create_engine_for(url)
    ledger = Ledger(engine, data_dir)
    t = "bench-ledger"
    ledger.create_currency(t, CurrencyCreate(code="pt", name_ja="pt", kind="administrative"))
    wallets = [f"resident:{i}" for i in range(200)]
    ledger.open_accounts(
        t, [AccountCreate(code=w, currency="pt", kind="resident") for w in wallets]
    )
    ledger.open_account(t, AccountCreate(code="shop:1", currency="pt", kind="merchant"))
    funding = [
        TransferCreate(
            id=str(uuid.uuid4()),
            debit_account="issuance:pt",
            credit_account=w,
            amount=10**7,
            currency="pt",
        )
        for w in wallets
    ]
    ledger.post_transfers(t, funding)
    rng = random.Random(3)
    items = [
        TransferCreate(
            id=str(uuid.uuid4()),
            debit_account=rng.choice(wallets),
            credit_account="shop:1",
            amount=rng.randint(100, 2000),
            currency="pt",
            code="payment",
        )
        for _ in range(n)
    ]
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        results = ledger.post_transfers(t, items[i : i + batch])
        assert all(r.ok for r in results)
    rate = n / (time.perf_counter() - t0)
    engine.dispose()
    return rate


async def payments(
    port: int,
    tokens: list[str],
    shop: str,
    rounds: int,
    think: float = 0.0,
    raw: bool = False,
    tenant: str = TENANT,
) -> dict:
    """Each payer pays ``rounds`` times. ``think`` = 0: closed loop (the next request as soon
    as the answer comes: saturation). ``think`` > 0: like phones, a pause of about ``think``
    seconds between 確認へ and 支払う and between payments (the pauses are not counted)."""
    latencies: list[float] = []
    retries = 0
    # aiohttp, not httpx: with 200 connections httpx's client used about three times the
    # server's CPU per payment, so on this 2-core machine the bench measured itself.
    connector = aiohttp.TCPConnector(limit=len(tokens))
    async with aiohttp.ClientSession(
        f"http://127.0.0.1:{port}",
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=60),
    ) as client:

        async def post(path: str, **kwargs: Any) -> tuple[int, Any]:
            """A phone retries a dropped connection with the same payment id: safe, since
            the server answers a repeated id with the first result."""
            nonlocal retries
            for attempt in range(6):
                try:
                    async with client.post(path, **kwargs) as r:
                        return r.status, await r.json(content_type=None)
                except aiohttp.ClientConnectionError:
                    if attempt == 5:
                        raise
                    retries += 1
                    await asyncio.sleep(0.05 * (attempt + 1))
            raise AssertionError("unreachable")

        async def payer(token: str, count: int, record: bool) -> None:
            headers = {"Authorization": f"Bearer {token}", "NGSILD-Tenant": tenant}
            if think and record:
                # Phones do not all tap at the same instant: each starts somewhere within
                # one payment's pauses (without this, all 200 first payments came as one
                # burst and made the whole p99).
                await asyncio.sleep(random.uniform(0, 2 * think))
            for _ in range(count):
                pid = str(uuid.uuid4())
                t = time.perf_counter()
                status, body = await post(
                    "/points/api/payments",
                    json={"id": pid, "shop": shop, "amount": random.randint(100, 900)},
                    headers=headers,
                )
                assert status == 200, body
                first = time.perf_counter() - t
                if think:
                    await asyncio.sleep(random.uniform(0.5, 1.5) * think)
                t = time.perf_counter()
                status, body = await post(f"/points/api/payments/{pid}/confirm", headers=headers)
                assert status == 200 and body["status"] == "completed", body
                if record:
                    latencies.append((first + time.perf_counter() - t) * 1000)
                if think:
                    await asyncio.sleep(random.uniform(0.5, 1.5) * think)

        await asyncio.gather(*(payer(tok, 1, False) for tok in tokens))  # warm up
        t0 = time.perf_counter()
        await asyncio.gather(*(payer(tok, rounds, True) for tok in tokens))
        t1 = time.perf_counter()
        elapsed = t1 - t0
    if raw:  # wall-clock stamps, comparable across client processes
        return {
            "retries": retries,
            "latencies": latencies,
            "t0": time.time() - (time.perf_counter() - t0),
            "t1": time.time() - (time.perf_counter() - t1),
        }
    return {
        "payments": len(latencies),
        "payers": len(tokens),
        "per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
    }


def _client_process(args: tuple) -> tuple[list[float], float, float, int]:
    port, tokens, shop, rounds, think, tenant = args
    out = asyncio.run(payments(port, tokens, shop, rounds, think, raw=True, tenant=tenant))
    return out["latencies"], out["t0"], out["t1"], out["retries"]


def payments_in_processes(
    port: int,
    tokens: list[str],
    shop: str,
    rounds: int,
    think: float,
    procs: int = 4,
    tenant: str = TENANT,
) -> dict:
    """The payers split over ``procs`` client processes (one Python process driving all 200
    connections was itself the bottleneck when the client was httpx)."""
    import multiprocessing

    chunks = [tokens[i::procs] for i in range(procs)]
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        parts = pool.map(_client_process, [(port, c, shop, rounds, think, tenant) for c in chunks])
    latencies = [x for part in parts for x in part[0]]
    elapsed = max(p[2] for p in parts) - min(p[1] for p in parts)
    return {
        "payments": len(latencies),
        "payers": len(tokens),
        "per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "retries": sum(p[3] for p in parts),
    }


charts: dict[str, tuple[float, float]] = {}


def page_times(url: str, data_dir: Path, port: int) -> dict[str, float]:
    """Median server time of each points page with the demo data (20 requests each)."""
    from kizuna.app import build_services
    from kizuna.auth.service import Role, create_user
    from kizuna.points import demo
    from kizuna.settings import Settings
    from kizuna.storage import writer

    services = build_services(Settings(database_url=url, data_dir=data_dir))
    services.tenants.create_tenant(demo.TENANT, "高砂市", "Takasago")
    with writer(services.engine).begin() as conn:
        create_user(
            conn, "takasago-staff", "職員", Role.MUNICIPAL_STAFF, demo.PASSWORD, [demo.TENANT]
        )
    demo.seed(services)
    resident = services.points.resident_for_user(demo.TENANT, "takasago-r01")
    pay_path = services.points.pay_path(demo.TENANT, "sakura-bakery")
    services.engine.dispose()
    pages = {
        "takasago-r01": [
            "/points/wallet",
            "/points/eco",
            "/points/thanks",
            "/points/coupons",
            f"/points/thanks/to/{resident.member_code}",
            pay_path,
        ],
        "shop-sakura-bakery": ["/points/shop", "/points/shop/statements"],
        "takasago-staff": [
            "/points/staff",
            "/points/staff/residents",
            "/points/staff/approvals",
            "/points/staff/volunteer",
            "/points/staff/sales",
            "/points/staff/shops",
            "/points/staff/actions",
            "/points/staff/coupons",
            "/points/staff/settlement",
        ],
    }
    out: dict[str, float] = {}
    for user, paths in pages.items():
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            r = client.post(
                "/login", data={"username": user, "password": demo.PASSWORD, "next": "/"}
            )
            assert r.status_code in (200, 303), r.text
            for path in paths:
                times = []
                for _ in range(21):
                    t = time.perf_counter()
                    r = client.get(path)
                    times.append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 200, (path, r.status_code, r.text[:300])
                out[path.split("?")[0]] = statistics.median(times[1:])
            if user == "takasago-staff":  # charts: drawn once per data change, then cached
                for name in ("points-month", "co2-month", "co2-action", "co2-town", "spent-town"):
                    times = []
                    for _ in range(6):
                        t = time.perf_counter()
                        r = client.get(f"/points/staff/charts/{name}.svg")
                        times.append((time.perf_counter() - t) * 1000)
                        assert r.status_code == 200
                    charts[name] = (times[0], statistics.median(times[1:]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--payers", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--think", type=float, default=2.0, help="seconds between taps")
    args = parser.parse_args()
    # One QR key for the seeding here and the server process (both read the environment).
    os.environ.setdefault("KIZUNA_POINTS_QR_SECRET", uuid.uuid4().hex)
    with pg_schema() as schema:
        url = schema_url(schema)
        data_dir = Path(tempfile.mkdtemp(prefix="kizuna-points-bench-"))
        print(f"seeding {args.payers} payers …", flush=True)
        tokens, shop = seed_payers(url, data_dir, args.payers)
        rp_tokens, _ = seed_payers(url, data_dir, args.payers, TENANT_RP)
        port = random.randint(20000, 40000)
        runs = []
        with kizuna_server(url, port):
            for think, label, who, tenant in (
                (args.think, "phones (pauses between taps)", tokens, TENANT),
                (0.0, "saturated (no pauses)", tokens, TENANT),
                (0.0, "saturated, paying with 地域ポイント only", rp_tokens, TENANT_RP),
            ):
                http = payments_in_processes(
                    port, who, shop, args.rounds, think, args.clients, tenant
                )
                runs.append(http)
                print(
                    f"payment round trip (hold + confirm), {http['payers']} concurrent payers, "
                    f"{label}, {http['payments']} payments: p50 {http['p50_ms']:.0f} ms, "
                    f"p99 {http['p99_ms']:.0f} ms (goal < 150 ms), {http['per_s']:.0f} payments/s, "
                    f"{http.get('retries', 0)} requests retried after a dropped connection",
                    flush=True,
                )
        print(
            f"地域ポイント-only payers ÷ 行政ポイント payers, saturated, same run: "
            f"payments/s {runs[2]['per_s'] / runs[1]['per_s']:.2f}, "
            f"p50 {runs[2]['p50_ms'] / runs[1]['p50_ms']:.2f}, p99 {runs[2]['p99_ms'] / runs[1]['p99_ms']:.2f}"
        )
        http = runs[1]
        rate = ledger_batched_rate(url, data_dir)
        print(f"ledger batched (1,000 per batch), same machine and run: {rate:,.0f} transfers/s")
        print(
            f"ratio: payments/s ÷ ledger batched transfers/s = {http['per_s'] / rate:.3f} "
            f"(each payment is 2 ledger transfers: {2 * http['per_s'] / rate:.3f} of the ledger's rate)"
        )
        with kizuna_server(url, port + 1):
            times = page_times(url, data_dir, port + 1)
        worst = max(times.values())
        for path, ms in times.items():
            print(f"  {path:40s} {ms:6.1f} ms")
        print(f"pages with the demo data: median per page, worst {worst:.1f} ms (goal < 100 ms)")
        for name, (cold, warm) in charts.items():
            print(
                f"  chart {name:14s} first {cold:6.1f} ms (matplotlib), then {warm:5.1f} ms (cached)"
            )


if __name__ == "__main__":
    main()
