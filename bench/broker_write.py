"""Broker write speed on PostgreSQL, each figure with a same-run baseline.

1. Batch upsert of N WeatherObserved entities over HTTP (batches of 1,000, 2 clients)
   vs. inserting the same rows straight into PostgreSQL with psycopg. Goal ratio ≥ 0.5.
   Then the same stations' next 10-minute report (an upsert of existing entities, what a
   city's sensors send all day) vs. updating the same rows straight with psycopg.
   A second baseline, printed beside it, writes every row Kizuna stores for these
   entities (entity, geo, history series and instances) straight with psycopg.
2. Single-attribute updates over HTTP at concurrency 16 (wrk) vs. a bare endpoint doing
   the same database write (a plain Starlette app + psycopg pool). Goal ≥ 3,500 updates/s.
3. Server RSS idle and during the runs. Goal < 150 MB idle, < 500 MB loaded.

    python bench/broker_write.py [--entities 100000] [--seconds 20] [--workers 2]
Needs PostgreSQL on 127.0.0.1:5432 and `wrk` (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from psycopg.types.json import set_json_dumps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    kizuna_server,
    pg_connect,
    pg_schema,
    require_free_port,
    rss_mb,
    schema_url,
    weather_entity,
)
from kizuna.broker.context import ContextStore  # noqa: E402
from kizuna.broker.geo import bbox as geo_bbox  # noqa: E402
from kizuna.broker.ngsild import expand_entity  # noqa: E402
from kizuna.broker.temporal.history import instance_row  # noqa: E402
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
    # One client for both threads, its connections kept alive, as a gateway keeps its
    # own: a client per batch spent ~20 ms of CPU on its SSL context, on the two cores
    # the server and PostgreSQL run on.
    with httpx.Client(timeout=120) as client:

        def post(body: bytes) -> None:
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


def _raw_write(schema: str, write: Callable[[Any, Any], None], batches_of_rows: list) -> float:
    """``write(cursor, batch)`` for each batch in its own transaction, 2 threads, each
    on a connection opened beforehand (as the HTTP clients keep theirs)."""
    idle: queue.SimpleQueue = queue.SimpleQueue()
    connections = [pg_connect(schema) for _ in range(2)]
    for conn in connections:
        set_json_dumps(orjson.dumps, context=conn)  # as Kizuna's connections
        idle.put(conn)

    def run(batch: Any) -> None:
        conn = idle.get()
        try:
            with conn.cursor() as cur:
                write(cur, batch)
            conn.commit()
        finally:
            idle.put(conn)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(run, batches_of_rows))
    elapsed = time.perf_counter() - started
    for conn in connections:
        conn.close()
    return elapsed


def _executemany(sql: str) -> Callable[[Any, list[tuple]], None]:
    return lambda cur, rows: cur.executemany(sql, rows)


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
        _executemany(
            "INSERT INTO raw_entities (tenant, id, type, types, attrs, created_at, modified_at) "
            "VALUES (%s, %s, %s, %s::jsonb, %s::jsonb, %s, %s)"
        ),
        rows,
    )


def raw_update(schema: str, chunks: list[list[dict]]) -> float:
    """The next report's rows written over the raw table's, straight with psycopg."""
    now = datetime.now(UTC)
    rows = [[(json.dumps(e.attrs), now, e.id) for e in x] for x in _expanded(chunks)]
    return _raw_write(
        schema,
        _executemany(
            "UPDATE raw_entities SET attrs = %s::jsonb, modified_at = %s"
            " WHERE tenant = 'bench-raw' AND id = %s"
        ),
        rows,
    )


# --- a second baseline: every row Kizuna stores --------------------------------------
#
# Kizuna stores 14 rows for a created WeatherObserved (entity, geo, 6 series, 6 history
# instances) and writes 7 for a report (entity, 6 instances), where the baseline above
# writes one. This one writes all of them straight with psycopg, the fastest way it
# offers (binary COPY, keys taken from the sequences up front; the report's entity rows
# by executemany as above), into tables of the same shape, indexes and foreign key, the
# instances with the same daily-rollup trigger (which adds to temporal_daily itself). The
# series' keys of the report are remembered from the creation; nothing is looked up or
# compared, and no JSON is parsed or validated.

_ALL_TABLES = {
    "raw_all_entities": "broker_entities",
    "raw_all_geo": "broker_geo",
    "raw_all_series": "temporal_series",
    "raw_all_instances": "temporal_instances",
}
_COPIES = {
    "raw_all_entities": (
        "pk, tenant, id, type, types, attrs, created_at, modified_at",
        ["int8", "varchar", "varchar", "varchar", "jsonb", "jsonb", "timestamptz", "timestamptz"],
    ),
    "raw_all_geo": (
        "entity_pk, tenant, attr, min_lon, min_lat, max_lon, max_lat, geometry",
        ["int8", "varchar", "varchar", "float8", "float8", "float8", "float8", "jsonb"],
    ),
    "raw_all_series": (
        "pk, tenant, entity_id, attr, dataset_id",
        ["int8", "varchar", "varchar", "varchar", "varchar"],
    ),
    "raw_all_instances": (
        "series_pk, observed_at, created_at, modified_at, num_value, instance",
        ["int8", "timestamptz", "timestamptz", "timestamptz", "float8", "json"],
    ),
}


_INSTANCE_COLUMNS = ("observed_at", "created_at", "modified_at", "num_value", "instance")


def _copy(cur: Any, table: str, rows: list[tuple]) -> None:
    columns, types = _COPIES[table]
    with cur.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def _keys(cur: Any, table: str, count: int) -> list[int]:
    """Keys for new rows of ``table`` from the sequence of the table it copies (LIKE
    copies the default, not the sequence's ownership)."""
    cur.execute(
        "SELECT nextval(seq) FROM (SELECT pg_get_serial_sequence(%s, 'pk')::regclass AS seq"
        " OFFSET 0) s, generate_series(1, %s)",
        (_ALL_TABLES[table], count),
    )
    return [pk for (pk,) in cur.fetchall()]


def _instances_of(entity: Any, now: datetime) -> list[tuple[tuple[str, str, str], tuple]]:
    """(series key, instance row without its series) of each attribute instance."""
    out = []
    for iri, instances in entity.attrs.items():
        for inst in instances:
            row = instance_row(0, inst, now)
            values = tuple(row[c] for c in _INSTANCE_COLUMNS)
            out.append(((entity.id, iri, inst.get("datasetId", "")), values))
    return out


def raw_insert_all(schema: str, chunks: list[list[dict]]) -> tuple[float, dict]:
    """Every row Kizuna stores for the created entities; returns the time and the series keys."""
    now = datetime.now(UTC)
    prepared = []
    for x in _expanded(chunks):
        entity_rows, geo_rows, series_keys, instance_rows = [], [], [], []
        for n, e in enumerate(x):
            entity_rows.append(("bench-raw", e.id, e.types[0], e.types, e.attrs, now, now))
            for iri, instances in e.attrs.items():
                for inst in instances:
                    if inst["type"] == "GeoProperty":
                        box = geo_bbox(inst["value"])
                        geo_rows.append((n, "bench-raw", iri, *box, inst["value"]))
            for key, values in _instances_of(e, now):
                series_keys.append(key)
                instance_rows.append(values)
        prepared.append((entity_rows, geo_rows, series_keys, instance_rows))
    with pg_connect(schema) as conn:
        for raw, real in _ALL_TABLES.items():
            conn.execute(f"CREATE TABLE {raw} (LIKE {real} INCLUDING ALL)")
        conn.execute(
            "ALTER TABLE raw_all_geo ADD FOREIGN KEY (entity_pk)"
            " REFERENCES raw_all_entities (pk) ON DELETE CASCADE"
        )
        conn.execute(
            "CREATE TRIGGER raw_all_daily AFTER INSERT ON raw_all_instances"
            " REFERENCING NEW TABLE AS added FOR EACH STATEMENT"
            " EXECUTE FUNCTION temporal_daily_add()"
        )
        conn.commit()
    series: dict = {}

    def write(cur: Any, batch: tuple) -> None:
        entity_rows, geo_rows, series_keys, instance_rows = batch
        entity_pks = _keys(cur, "raw_all_entities", len(entity_rows))
        series_pks = _keys(cur, "raw_all_series", len(series_keys))
        _copy(
            cur,
            "raw_all_entities",
            [(pk, *row) for pk, row in zip(entity_pks, entity_rows, strict=True)],
        )
        _copy(cur, "raw_all_geo", [(entity_pks[n], *rest) for n, *rest in geo_rows])
        _copy(
            cur,
            "raw_all_series",
            [(pk, "bench-raw", *key) for pk, key in zip(series_pks, series_keys, strict=True)],
        )
        _copy(
            cur,
            "raw_all_instances",
            [(pk, *values) for pk, values in zip(series_pks, instance_rows, strict=True)],
        )
        series.update(zip(series_keys, series_pks, strict=True))

    return _raw_write(schema, write, prepared), series


def raw_update_all(schema: str, chunks: list[list[dict]], series: dict) -> float:
    """The next report's entity rows and history instances, straight with psycopg."""
    now = datetime.now(UTC)
    prepared = [
        (
            [(json.dumps(e.attrs), now, e.id) for e in x],
            [(series[key], *values) for e in x for key, values in _instances_of(e, now)],
        )
        for x in _expanded(chunks)
    ]

    def write(cur: Any, batch: tuple) -> None:
        entity_rows, instance_rows = batch
        cur.executemany(
            "UPDATE raw_all_entities SET attrs = %s::jsonb, modified_at = %s"
            " WHERE tenant = 'bench-raw' AND id = %s",
            entity_rows,
        )
        _copy(cur, "raw_all_instances", instance_rows)

    return _raw_write(schema, write, prepared)


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
    require_free_port(port)
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
        all_seconds, series = raw_insert_all(schema, chunks)
        all_report_seconds = raw_update_all(schema, later, series)
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
    all_rate = args.entities / all_seconds
    print(
        f"raw psycopg insert of every row Kizuna stores (entity, geo, 6 series, 6 instances):"
        f" {all_rate:,.0f} entities/s"
    )
    print(f"  ratio HTTP / raw, all rows = {http_rate / all_rate:.2f}")
    report_rate = args.entities / report_seconds
    raw_report_rate = args.entities / raw_report_seconds
    print(f"next report (upsert of existing entities) over HTTP: {report_rate:,.0f} entities/s")
    print(f"raw psycopg UPDATE of the same rows: {raw_report_rate:,.0f} rows/s")
    print(f"  ratio HTTP / raw = {report_rate / raw_report_rate:.2f}")
    all_report_rate = args.entities / all_report_seconds
    print(
        f"raw psycopg UPDATE and insert of every row Kizuna writes (entity, 6 instances):"
        f" {all_report_rate:,.0f} entities/s"
    )
    print(f"  ratio HTTP / raw, all rows = {report_rate / all_report_rate:.2f}")
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
