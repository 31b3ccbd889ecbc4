"""Query latency over 1,000,000 entities on PostgreSQL: `type` + `q`, and a `near` geo-query.

Loads N WeatherObserved entities through the broker's own Python API (so every index row
is what the HTTP path writes), then times GET /entities over HTTP, limit 100, and the
equivalent raw SQL on the same connection as the same-run baseline. Goal: p99 < 50 ms.

    python bench/broker_query.py [--entities 1000000] [--requests 300]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    kizuna_server,
    percentile,
    pg_connect,
    pg_schema,
    rss_mb,
    schema_url,
    weather_entity,
)
from kizuna.app import build_services  # noqa: E402
from kizuna.auth.service import SYSTEM  # noqa: E402
from kizuna.settings import Settings  # noqa: E402

CHUNK = 5000


def load(url: str, total: int) -> float:
    services = build_services(Settings(database_url=url))
    scope = services.tenants.scope(SYSTEM, None, write=True)
    core = services.broker.contexts.core
    rng = random.Random(11)
    started = time.perf_counter()
    for start in range(0, total, CHUNK):
        batch = [weather_entity(n, rng) for n in range(start, min(total, start + CHUNK))]
        services.broker.batch_upsert(scope, lambda _item: core, batch, replace=True)
        if start % 100_000 == 0:
            print(f"  loaded {start:,}", flush=True)
            # Keep planner statistics current as a bulk load should (this machine's
            # PostgreSQL runs without autovacuum).
            with services.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE broker_entities")
    services.engine.dispose()
    return time.perf_counter() - started


def timed(fn, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--port", type=int, default=18090)
    parser.add_argument(
        "--schema", help="reuse a schema an earlier run loaded (kept afterwards); skips loading"
    )
    args = parser.parse_args()
    rng = random.Random(3)
    with pg_schema(args.schema) as schema:
        url = schema_url(schema)
        load_seconds = None
        if not args.schema:
            print(f"loading {args.entities:,} entities through the broker API ...")
            load_seconds = load(url, args.entities)
        with pg_connect(schema) as conn:
            conn.execute("ANALYZE")
            conn.commit()
        with kizuna_server(url, args.port) as pids:
            client = httpx.Client(base_url=f"http://127.0.0.1:{args.port}/ngsi-ld/v1", timeout=30)

            def type_q() -> None:
                low = round(rng.uniform(-5, 30), 1)
                r = client.get(
                    "/entities",
                    params={
                        "type": "WeatherObserved",
                        "q": f"temperature>{low};relativeHumidity<0.8",
                        "limit": 100,
                    },
                )
                assert r.status_code == 200 and len(r.json()) == 100, r.text[:200]

            def near() -> None:
                lon, lat = 134.70 + rng.random() * 0.3, 34.65 + rng.random() * 0.2
                r = client.get(
                    "/entities",
                    params={
                        "type": "WeatherObserved",
                        "georel": "near;maxDistance==300",
                        "geometry": "Point",
                        "coordinates": f"[{lon:.5f},{lat:.5f}]",
                        "limit": 100,
                    },
                )
                assert r.status_code == 200, r.text[:200]

            timed(type_q, 20)  # warm caches
            q_ms = timed(type_q, args.requests)
            near_ms = timed(near, args.requests)
            rss = max(rss_mb(p) for p in pids)

        with pg_connect(schema) as conn:

            def raw_q() -> None:
                low = round(rng.uniform(-5, 30), 1)
                conn.execute(
                    "SELECT id, attrs FROM broker_entities WHERE tenant='default' AND type=%s "
                    "AND (attrs->%s->0->'value')::numeric > %s AND (attrs->%s->0->'value')::numeric < 0.8 "
                    "ORDER BY pk LIMIT 100",
                    (
                        "https://uri.etsi.org/ngsi-ld/default-context/WeatherObserved",
                        "https://uri.etsi.org/ngsi-ld/default-context/temperature",
                        low,
                        "https://uri.etsi.org/ngsi-ld/default-context/relativeHumidity",
                    ),
                ).fetchall()

            raw_ms = timed(raw_q, args.requests)

    def line(name: str, samples: list[float]) -> str:
        return f"{name}: p50 {percentile(samples, 50):.1f} ms, p99 {percentile(samples, 99):.1f} ms"

    if load_seconds:
        rate = args.entities / load_seconds
        print(f"loaded {args.entities:,} entities in {load_seconds:.0f} s ({rate:,.0f}/s)")
    print(line("type + q over HTTP, limit 100", q_ms) + "  (goal p99 < 50 ms)")
    print(line("near;maxDistance==300 over HTTP, limit 100", near_ms) + "  (goal p99 < 50 ms)")
    print(line("raw SQL for the type + q query (baseline)", raw_ms))
    print(f"  ratio HTTP / raw SQL at p50 = {percentile(q_ms, 50) / percentile(raw_ms, 50):.1f}")
    print(f"server RSS after the queries: {rss:.0f} MB")


if __name__ == "__main__":
    main()
