"""What a server process loads to start: libraries that only some requests, jobs or commands
need stay out until then (each costs megabytes of every worker; see docs/performance.md)."""

from __future__ import annotations

import os
import subprocess
import sys

# Loaded on first use: energy runs and charts (numpy, pandas, matplotlib), geo-queries
# (shapely), migrations (alembic), OIDC and checkpoint signing (jwt, cryptography), @context
# fetches and webhooks (httpx), the MQTT consumer (paho), QR codes (segno), PostgreSQL
# (psycopg, here on SQLite); and never in a server process: the CLI (typer, rich).
DEFERRED = (
    "numpy",
    "pandas",
    "matplotlib",
    "shapely",
    "alembic",
    "jwt",
    "cryptography",
    "httpx",
    "paho",
    "segno",
    "psycopg",
    "typer",
    "rich",
)

# A `kizuna serve` worker: uvicorn's command (serve execs it; multiprocessing imports it
# again in each worker), the app as the worker builds it, its lifespan started (jobs,
# delivery worker) and stopped.
WORKER = f"""
import asyncio, sys
import uvicorn.main
from kizuna.app import create_server_app

async def start_and_stop(app):
    async with app.router.lifespan_context(app):
        pass

asyncio.run(start_and_stop(create_server_app()))
print(" ".join(m for m in {DEFERRED!r} if m in sys.modules))
"""


def test_a_server_process_starts_without_what_only_some_requests_need(sqlite_engine, tmp_path):
    env = {
        **os.environ,
        "KIZUNA_DATA_DIR": str(tmp_path),  # sqlite_engine migrated tmp_path/kizuna.db
        "KIZUNA_MIGRATE_ON_START": "false",
    }
    env.pop("KIZUNA_DATABASE_URL", None)
    loaded = subprocess.run(
        [sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == []
