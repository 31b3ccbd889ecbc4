"""Shared bench plumbing: a fresh PostgreSQL schema, a `kizuna serve` process, RSS, percentiles.

Benchmarks print ratios against a baseline measured in the same run, because these
machines are shared and noisy; absolute numbers are printed too, for the record.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg

PG_DSN = "host=127.0.0.1 user=postgres dbname=test"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def pg_schema(existing: str | None = None) -> Iterator[str]:
    """A fresh schema, dropped afterwards; or ``existing``, left as it is."""
    if existing:
        yield existing
        return
    schema = f"kz_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def schema_url(schema: str) -> str:
    return f"{PG_URL}?options=-csearch_path%3D{schema}"


def pg_connect(schema: str) -> psycopg.Connection:
    return psycopg.connect(f"{PG_DSN} options=-csearch_path={schema}")


@contextlib.contextmanager
def kizuna_server(database_url: str, port: int, workers: int = 1) -> Iterator[list[int]]:
    """Run `kizuna serve`; yields the pids of its processes (master and workers)."""
    require_free_port(port)
    env = dict(os.environ)
    env.update(
        KIZUNA_DATABASE_URL=database_url,
        KIZUNA_OPEN_ACCESS="true",
        KIZUNA_PORT=str(port),
        KIZUNA_WORKERS=str(workers),
        KIZUNA_DATA_DIR=tempfile.mkdtemp(prefix="kizuna-bench-"),
    )
    log_path = Path(env["KIZUNA_DATA_DIR"]) / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kizuna.cli", "serve"], env=env, stdout=log, stderr=log
        )
        try:
            wait_healthy(f"http://127.0.0.1:{port}/health")
            time.sleep(1.0 if workers > 1 else 0.2)
            if proc.poll() is not None:
                raise SystemExit(f"kizuna serve exited; see {log_path}")
            yield process_tree(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def require_free_port(port: int) -> None:
    """Stop unless nothing listens on ``port``: on a shared machine another engineer's
    server may, and a bench would then measure (and write to) that server instead."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise SystemExit(f"port {port} is in use; pass another --port") from None


def wait_healthy(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"server at {url} did not become healthy")


def process_tree(pid: int) -> list[int]:
    children = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True
    ).stdout.split()
    return [pid, *(int(c) for c in children)]


def rss_mb(pid: int) -> float:
    with contextlib.suppress(FileNotFoundError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def weather_entity(n: int, rng: random.Random) -> dict:
    """A Smart Data Models WeatherObserved with a location and five properties."""
    lon = 134.70 + rng.random() * 0.3
    lat = 34.65 + rng.random() * 0.2
    observed = "2026-11-22T09:00:00Z"
    return {
        "id": f"urn:ngsi-ld:WeatherObserved:bench:{n:07d}",
        "type": "WeatherObserved",
        "location": {
            "type": "GeoProperty",
            "value": {"type": "Point", "coordinates": [round(lon, 6), round(lat, 6)]},
        },
        "temperature": {
            "type": "Property",
            "value": round(rng.uniform(-5, 38), 1),
            "unitCode": "CEL",
            "observedAt": observed,
        },
        "relativeHumidity": {
            "type": "Property",
            "value": round(rng.random(), 2),
            "unitCode": "P1",
            "observedAt": observed,
        },
        "windSpeed": {
            "type": "Property",
            "value": round(rng.uniform(0, 20), 1),
            "unitCode": "MTS",
            "observedAt": observed,
        },
        "atmosphericPressure": {
            "type": "Property",
            "value": round(rng.uniform(990, 1030), 1),
            "unitCode": "A97",
            "observedAt": observed,
        },
        "stationName": {"type": "Property", "value": f"観測点{n}"},
    }
