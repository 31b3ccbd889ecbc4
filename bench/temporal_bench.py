"""Temporal API on PostgreSQL: 100 sensors x one year of 10-minute readings (5.3 M instances).

1. Ingest: every sensor's year goes in through Kizuna's own temporal ingest path
   (``TemporalService.create_or_update``, what ``POST /temporal/entities`` runs), a month
   per call. Baseline in the same run: the same rows COPYed straight into a copy of
   ``temporal_instances`` with the same indexes (the fastest raw insert PostgreSQL has).
2. Queries over HTTP against ``kizuna serve``: daily avg+max of one sensor over the year
   (goal p99 < 300 ms) and of all sensors in one request (goal < 3 s); baseline the same
   GROUP BY over the instances as raw SQL on a psycopg connection (the server answers
   these whole-day buckets from the daily rollups the triggers keep during the ingest).

    python bench/temporal_bench.py [--sensors 100] [--days 365] [--requests 200]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    kizuna_server,
    percentile,
    pg_connect,
    pg_schema,
    rss_mb,
    schema_url,
)
from kizuna.app import build_services  # noqa: E402
from kizuna.auth.service import SYSTEM  # noqa: E402
from kizuna.settings import Settings  # noqa: E402

START = datetime(2025, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=10)
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
TEMPERATURE = "https://uri.etsi.org/ngsi-ld/default-context/temperature"


def sensor_id(n: int) -> str:
    return f"urn:ngsi-ld:TemperatureSensor:bench:{n:03d}"


def readings(n: int, days: int) -> list[tuple[datetime, float]]:
    rng = random.Random(n)
    out = []
    for step in range(days * 144):
        at = START + step * STEP
        daily = 8 * math.sin((step % 144) / 144 * 6.283)
        out.append((at, round(15 + daily + rng.gauss(0, 1.5), 2)))
    return out


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def month_chunks(items: list[tuple[datetime, float]]) -> list[list[tuple[datetime, float]]]:
    chunks: dict[tuple[int, int], list] = {}
    for at, value in items:
        chunks.setdefault((at.year, at.month), []).append((at, value))
    return list(chunks.values())


def ingest(url: str, sensors: int, days: int) -> tuple[float, int]:
    services = build_services(Settings(database_url=url))
    scope = services.tenants.scope(SYSTEM, None, write=True)
    core = services.broker.contexts.core
    total = 0
    elapsed = 0.0
    for n in range(sensors):
        for chunk in month_chunks(readings(n, days)):
            body = {
                "id": sensor_id(n),
                "type": "TemperatureSensor",
                "temperature": [
                    {"type": "Property", "value": v, "observedAt": iso(at), "unitCode": "CEL"}
                    for at, v in chunk
                ],
            }
            started = time.perf_counter()
            services.temporal.create_or_update(scope, core, body)
            elapsed += time.perf_counter() - started
            total += len(chunk)
        if n % 10 == 9:
            print(f"  {n + 1} sensors, {total:,} instances, {total / elapsed:,.0f}/s", flush=True)
            with services.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE temporal_instances")
    services.engine.dispose()
    return elapsed, total


def raw_copy(schema: str, sensors: int, days: int) -> tuple[float, int]:
    """The same rows COPYed into a same-shaped table; pre-built rows, only the COPY timed."""
    with pg_connect(schema) as conn:
        conn.execute("DROP TABLE IF EXISTS raw_instances")
        conn.execute("CREATE TABLE raw_instances (LIKE temporal_instances INCLUDING ALL)")
        conn.commit()
        total, elapsed = 0, 0.0
        now = datetime.now(UTC)
        for n in range(sensors):
            for chunk in month_chunks(readings(n, days)):
                rows = [
                    (
                        n + 1,
                        at,
                        now,
                        now,
                        None,
                        v,
                        orjson.dumps({"type": "Property", "value": v, "unitCode": "CEL"}).decode(),
                    )
                    for at, v in chunk
                ]
                started = time.perf_counter()
                with conn.cursor().copy(
                    "COPY raw_instances (series_pk, observed_at, created_at, modified_at, "
                    "deleted_at, num_value, instance) FROM STDIN"
                ) as copy:
                    for row in rows:
                        copy.write_row(row)
                conn.commit()
                elapsed += time.perf_counter() - started
                total += len(rows)
        conn.execute("DROP TABLE raw_instances")
        conn.commit()
    return elapsed, total


def timed(fn, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sensors", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--all-requests", type=int, default=10)
    parser.add_argument("--port", type=int, default=18092)
    parser.add_argument("--schema", help="reuse a schema an earlier run loaded; skips loading")
    parser.add_argument("--keep", action="store_true", help="load, then keep the schema")
    args = parser.parse_args()
    if args.keep and not args.schema:
        import uuid

        import psycopg

        from _harness import PG_DSN

        keep = f"kz_bench_temporal_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{keep}"')
        print(f"loading into schema {keep} (kept; drop it when done)")
    rng = random.Random(5)
    end = START + timedelta(days=args.days)
    window = {
        "timerel": "between",
        "timeAt": iso(START),
        "endTimeAt": iso(end),
        "options": "aggregatedValues",
        "aggrMethods": "avg,max",
        "aggrPeriodDuration": "P1D",
        "attrs": "temperature",
    }
    with pg_schema(args.schema or (keep if args.keep else None)) as schema:
        url = schema_url(schema)
        ingest_s = raw_s = None
        if not args.schema:
            print(f"ingesting {args.sensors} sensors x {args.days} days through the temporal API")
            ingest_s, ingested = ingest(url, args.sensors, args.days)
            print("raw COPY of the same rows (baseline) ...")
            raw_s, copied = raw_copy(schema, args.sensors, args.days)
        with pg_connect(schema) as conn:
            conn.autocommit = True
            # Autovacuum is off on this server: statistics and the visibility map
            # (index-only scans) come from an explicit VACUUM ANALYZE after a bulk load.
            conn.execute("VACUUM ANALYZE temporal_instances")
            conn.execute("VACUUM ANALYZE temporal_daily")
            conn.execute("ANALYZE")
            rows = conn.execute("SELECT count(*) FROM temporal_instances").fetchone()[0]
            size = conn.execute(
                "SELECT pg_size_pretty(pg_total_relation_size('temporal_instances')), "
                "pg_size_pretty(pg_relation_size('ix_temporal_instances_series_observed')), "
                "pg_size_pretty(pg_total_relation_size('temporal_daily'))"
            ).fetchone()
        with kizuna_server(url, args.port) as pids:
            client = httpx.Client(base_url=f"http://127.0.0.1:{args.port}/ngsi-ld/v1", timeout=60)

            def one() -> None:
                eid = sensor_id(rng.randrange(args.sensors))
                r = client.get(f"/temporal/entities/{eid}", params=window)
                assert r.status_code == 200, r.text[:300]
                assert len(r.json()["temperature"]["avg"]) == args.days

            def every() -> None:
                params = {**window, "type": "TemperatureSensor", "limit": 1000}
                r = client.get("/temporal/entities", params=params)
                assert r.status_code == 200, r.text[:300]
                body = r.json()
                assert len(body) == args.sensors
                assert all(len(e["temperature"]["max"]) == args.days for e in body)

            timed(one, 10)  # warm up
            one_ms = timed(one, args.requests)
            all_ms = timed(every, args.all_requests)
            rss = max(rss_mb(p) for p in pids)

        with pg_connect(schema) as conn:
            pks = [
                r[0]
                for r in conn.execute(
                    "SELECT pk FROM temporal_series WHERE attr = %s ORDER BY entity_id",
                    (TEMPERATURE,),
                )
            ]
            sql = (
                "SELECT series_pk, date_bin('1 day', observed_at, %s) AS b, avg(num_value), "
                "max(num_value) FROM temporal_instances WHERE series_pk = ANY(%s) "
                "AND observed_at >= %s AND observed_at < %s GROUP BY 1, 2"
            )

            def raw_one() -> None:
                pk = pks[rng.randrange(len(pks))]
                conn.execute(sql, (START, [pk], START, end)).fetchall()

            def raw_all() -> None:
                conn.execute(sql, (START, pks, START, end)).fetchall()

            timed(raw_one, 10)
            raw_one_ms = timed(raw_one, args.requests)
            raw_all_ms = timed(raw_all, args.all_requests)

    def line(name: str, samples: list[float]) -> str:
        return f"{name}: p50 {percentile(samples, 50):.1f} ms, p99 {percentile(samples, 99):.1f} ms"

    print(
        f"instances stored: {rows:,}; table+indexes {size[0]}, covering index {size[1]}, "
        f"daily rollups {size[2]}"
    )
    if ingest_s:
        kizuna_rate = ingested / ingest_s
        raw_rate = copied / raw_s
        print(
            f"ingest through the temporal API: {ingested:,} in {ingest_s:.0f} s = {kizuna_rate:,.0f}/s"
        )
        print(
            f"raw COPY of the same rows (baseline): {copied:,} in {raw_s:.0f} s = {raw_rate:,.0f}/s"
        )
        print(f"  ratio temporal API / raw COPY = {kizuna_rate / raw_rate:.2f}")
    print(line("one sensor, daily avg+max over the year, HTTP", one_ms) + "  (goal p99 < 300 ms)")
    print(line(f"all {args.sensors} sensors in one request, HTTP", all_ms) + "  (goal < 3 s)")
    print(line("one sensor, raw SQL (baseline)", raw_one_ms))
    print(line(f"all {args.sensors} sensors, raw SQL (baseline)", raw_all_ms))
    print(
        f"  ratio HTTP / raw, one sensor p50 = {percentile(one_ms, 50) / percentile(raw_one_ms, 50):.1f}"
    )
    print(
        f"  ratio HTTP / raw, all sensors p50 = {percentile(all_ms, 50) / percentile(raw_all_ms, 50):.1f}"
    )
    print(f"server RSS after the queries: {rss:.0f} MB")


if __name__ == "__main__":
    main()
