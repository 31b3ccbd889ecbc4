"""Broker write speed on PostgreSQL, each figure with a same-run baseline.

1. Batch upsert of N WeatherObserved entities over HTTP (batches of 1,000, 2 clients)
   vs. inserting the same rows straight into PostgreSQL with psycopg. Goal ratio ≥ 0.5.
   Then the same stations' next 10-minute report (an upsert of existing entities, what a
   city's sensors send all day) vs. updating the same rows straight with psycopg.
2. Single-attribute updates over HTTP at concurrency 16 (wrk) vs. a bare endpoint doing
   the same database write (a plain Starlette app + psycopg pool). Goal ≥ 3,500 updates/s.
3. Server RSS idle and during the runs. Goal < 150 MB idle, < 500 MB loaded.

    python bench/broker_write.py [--entities 100000] [--seconds 20] [--workers 2]
Needs PostgreSQL on 127.0.0.1:5432 and `wrk` (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    kizuna_server,
    pg_connect,
    pg_schema,
    rss_mb,
    schema_url,
    weather_entity,
)
from kizuna.broker.context import ContextStore  # noqa: E402
from kizuna.broker.ngsild import expand_entity  # noqa: E402
from kizuna.settings import Settings  # noqa: E402

BATCH = 1000


def batches(total: int) -> list[list[dict]]:
    rng = random.Random(7)
    entities = [weather_entity(n, rng) for n in range(total)]
    return [entities[i : i + BATCH] for i in range(0, total, BATCH)]


def next_report(chunks: list[list[dict]]) -> list[list[dict]]:
    """Every station's next observation: new values, observedAt ten minutes later."""
    rng = random.Random(8)
    later = []
    for chunk in chunks:
        out = []
        for entity in chunk:
            entity = json.loads(json.dumps(entity))
            for attr in entity.values():
                if isinstance(attr, dict) and "observedAt" in attr:
                    attr["observedAt"] = "2026-11-22T09:10:00Z"
                    attr["value"] = round(attr["value"] * rng.uniform(0.95, 1.05), 2)
            out.append(entity)
        later.append(out)
    return later


def http_upsert(port: int, chunks: list[list[dict]]) -> float:
    url = f"http://127.0.0.1:{port}/ngsi-ld/v1/entityOperations/upsert"
    bodies = [orjson.dumps(c) for c in chunks]

    def post(body: bytes) -> None:
        with httpx.Client(timeout=120) as client:
            r = client.post(url, content=body, headers={"Content-Type": "application/json"})
            r.raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(post, bodies))
    return time.perf_counter() - started


def _expanded(chunks: list[list[dict]]) -> list[list]:
    from sqlalchemy import create_engine

    tm = ContextStore(create_engine("sqlite://"), Settings()).core
    now = datetime.now(UTC).isoformat()
    return [[expand_entity(e, tm, now) for e in chunk] for chunk in chunks]


def _raw_write(schema: str, sql: str, batches_of_rows: list[list[tuple]]) -> float:
    started = time.perf_counter()

    def write(batch: list[tuple]) -> None:
        with pg_connect(schema) as conn, conn.cursor() as cur:
            cur.executemany(sql, batch)
            conn.commit()

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(write, batches_of_rows))
    return time.perf_counter() - started


def raw_insert(schema: str, chunks: list[list[dict]]) -> float:
    """The same entity rows, expanded the same way, written straight with psycopg."""
    now = datetime.now(UTC)
    rows = [
        [
            ("bench-raw", e.id, e.types[0], json.dumps(e.types), json.dumps(e.attrs), now, now)
            for e in x
        ]
        for x in _expanded(chunks)
    ]
    with pg_connect(schema) as conn:
        conn.execute("CREATE TABLE raw_entities (LIKE broker_entities INCLUDING ALL)")
        conn.commit()
    return _raw_write(
        schema,
        "INSERT INTO raw_entities (tenant, id, type, types, attrs, created_at, modified_at) "
        "VALUES (%s, %s, %s, %s::jsonb, %s::jsonb, %s, %s)",
        rows,
    )


def raw_update(schema: str, chunks: list[list[dict]]) -> float:
    """The next report's rows written over the raw table's, straight with psycopg."""
    now = datetime.now(UTC)
    rows = [[(json.dumps(e.attrs), now, e.id) for e in x] for x in _expanded(chunks)]
    return _raw_write(
        schema,
        "UPDATE raw_entities SET attrs = %s::jsonb, modified_at = %s"
        " WHERE tenant = 'bench-raw' AND id = %s",
        rows,
    )


WRK_SCRIPT = """
math.randomseed(os.time())
request = function()
  local n = math.random(0, {count} - 1)
  local path = string.format("/ngsi-ld/v1/entities/urn:ngsi-ld:WeatherObserved:bench:%07d/attrs/temperature", n)
  local body = string.format('{{"value": %.1f}}', math.random() * 40)
  return wrk.format("PATCH", path, {{["Content-Type"] = "application/json"}}, body)
end
"""

BARE_APP = """
import os, random
from psycopg_pool import ConnectionPool
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

pool = ConnectionPool(os.environ["BARE_DSN"], min_size=4, max_size=20, open=True)

def patch(request):
    entity_id = "urn:ngsi-ld:WeatherObserved:bench:" + request.path_params["n"]
    with pool.connection() as conn:
        conn.execute(
            "UPDATE broker_entities SET attrs = jsonb_set(attrs, "
            "'{https://uri.etsi.org/ngsi-ld/default-context/temperature,0,value}', %s::jsonb), "
            "modified_at = now() WHERE tenant = 'default' AND id = %s",
            (str(round(random.random() * 40, 1)), entity_id),
        )
    return Response(status_code=204)

app = Starlette(routes=[Route("/ngsi-ld/v1/entities/urn:ngsi-ld:WeatherObserved:bench:{n}/attrs/temperature", patch, methods=["PATCH"])])
"""


def run_wrk(port: int, count: int, seconds: int) -> float:
    script = Path(tempfile.mkdtemp()) / "patch.lua"
    script.write_text(WRK_SCRIPT.format(count=count))
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", "-s", str(script), f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    errors = [line for line in out.splitlines() if "Non-2xx" in line or "errors" in line.lower()]
    if errors:
        print(textwrap.indent("\n".join(errors), "  wrk: "))
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise SystemExit(out)


def bare_endpoint_rate(schema: str, port: int, count: int, seconds: int, workers: int) -> float:
    folder = Path(tempfile.mkdtemp())
    (folder / "bare_app.py").write_text(BARE_APP)
    env = {
        "BARE_DSN": f"host=127.0.0.1 user=postgres dbname=test options=-csearch_path={schema}",
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_app:app",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=folder,
        env=env,
    )
    try:
        time.sleep(2)
        wait_healthy_bare(port)
        return run_wrk(port, count, seconds)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_healthy_bare(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.patch(
                f"http://127.0.0.1:{port}/ngsi-ld/v1/entities/urn:ngsi-ld:WeatherObserved:bench:0000000/attrs/temperature",
                timeout=1,
            )
            return
        except httpx.HTTPError:
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=18080)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed for the update benchmark: apt-get install wrk")
    chunks = batches(args.entities)
    with pg_schema() as schema:
        peak = 0.0
        with kizuna_server(schema_url(schema), args.port, args.workers) as pids:
            idle = max(rss_mb(p) for p in pids)
            stop = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not stop.is_set():
                    peak = max(peak, *(rss_mb(p) for p in pids))
                    time.sleep(0.2)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            http_seconds = http_upsert(args.port, chunks)
            later = next_report(chunks)
            report_seconds = http_upsert(args.port, later)
            update_rate = run_wrk(args.port, args.entities, args.seconds)
            stop.set()
            sampler.join()
        raw_seconds = raw_insert(schema, chunks)
        raw_report_seconds = raw_update(schema, later)
        bare_rate = bare_endpoint_rate(
            schema, args.port + 1, args.entities, args.seconds, args.workers
        )

    http_rate = args.entities / http_seconds
    raw_rate = args.entities / raw_seconds
    print(
        f"batch upsert over HTTP: {http_rate:,.0f} entities/s ({http_seconds:.1f} s for {args.entities:,})"
    )
    print(f"raw psycopg insert of the same rows: {raw_rate:,.0f} rows/s")
    print(f"  ratio HTTP / raw = {http_rate / raw_rate:.2f}  (goal ≥ 0.5)")
    report_rate = args.entities / report_seconds
    raw_report_rate = args.entities / raw_report_seconds
    print(f"next report (upsert of existing entities) over HTTP: {report_rate:,.0f} entities/s")
    print(f"raw psycopg UPDATE of the same rows: {raw_report_rate:,.0f} rows/s")
    print(f"  ratio HTTP / raw = {report_rate / raw_report_rate:.2f}")
    print(
        f"attribute updates over HTTP, concurrency 16: {update_rate:,.0f} updates/s (goal ≥ 3,500)"
    )
    print(f"bare endpoint doing the same UPDATE: {bare_rate:,.0f} updates/s")
    print(f"  ratio Kizuna / bare = {update_rate / bare_rate:.2f}")
    print(
        f"RSS per process: idle {idle:.0f} MB, peak during the runs {peak:.0f} MB (goals < 150 / < 500)"
    )


if __name__ == "__main__":
    main()
