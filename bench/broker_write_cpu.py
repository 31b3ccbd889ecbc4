"""CPU per entity of the broker's batch upsert, in-process, split into Python and database.

Builds the full services (so every change listener — history, subscriptions — is
attached) on a fresh PostgreSQL schema (or a SQLite file) and calls
``Broker.batch_upsert`` with batches of 1,000 WeatherObserved entities, as
``bench/broker_write.py`` sends them over HTTP: first the entities' creation, then the
stations' next report (an upsert of every existing entity), with the garbage collector
set as ``kizuna serve`` sets it. Prints, per entity and
phase, the Python process's CPU time and (PostgreSQL) the CPU time of the backends this
process connected, read from /proc. CPU time, unlike wall time, is not inflated by other
work on a shared machine.

    python bench/broker_write_cpu.py [--entities 20000] [--db postgresql|sqlite] [--reports 1]
                                     [--profile insert|update] [--top 30]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import PG_DSN, pg_schema, schema_url  # noqa: E402
from broker_write import batches, next_report  # noqa: E402
from kizuna.app import build_services  # noqa: E402
from kizuna.auth.service import Principal, Role  # noqa: E402
from kizuna.settings import Settings  # noqa: E402
from kizuna.tenancy.service import TenantScope  # noqa: E402

APP_NAME = "kizuna-write-cpu"


class BackendCpu:
    """CPU seconds of the PostgreSQL backends whose application_name is ours."""

    def __init__(self) -> None:
        self._conn = psycopg.connect(PG_DSN, autocommit=True)
        self._seen: dict[int, float] = {}

    def _pids(self) -> list[int]:
        rows = self._conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (APP_NAME,)
        ).fetchall()
        return [pid for (pid,) in rows]

    @staticmethod
    def _cpu(pid: int) -> float | None:
        try:  # the scheduler's run time in ns: exact, where /proc/<pid>/stat counts ticks
            return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
        except FileNotFoundError:
            return None

    def sample(self) -> float:
        """Total CPU of every backend seen so far (a backend that ended keeps its last)."""
        for pid in self._pids():
            cpu = self._cpu(pid)
            if cpu is not None:
                self._seen[pid] = cpu
        return sum(self._seen.values())


def run_phase(services, scope, chunks, backends, profile: cProfile.Profile | None):  # noqa: ANN001
    broker = services.broker
    core = broker.contexts.core
    wall = time.perf_counter()
    py = time.process_time()
    db = backends.sample() if backends else 0.0
    for chunk in chunks:
        if profile:
            profile.enable()
        result = broker.batch_upsert(scope, lambda item: core, chunk, replace=True)
        if profile:
            profile.disable()
        if result.errors:
            raise SystemExit(result.errors[:3])
        if backends:
            backends.sample()  # before a pooled connection could be closed
    py = time.process_time() - py
    db = (backends.sample() - db) if backends else None
    return time.perf_counter() - wall, py, db


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--reports", type=int, default=1, help="next reports after the creation")
    parser.add_argument("--profile", choices=("insert", "update"))
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    chunks = batches(args.entities)
    phases = [("insert", chunks)]
    for n in range(args.reports):
        phases.append(("update" if n == 0 else f"update {n + 1}", next_report(phases[-1][1])))
    scope = TenantScope(
        "default", Principal("system", "bench", Role.PLATFORM_ADMIN, None, True), True
    )
    with pg_schema() as schema, tempfile.TemporaryDirectory() as tmp:
        if args.db == "postgresql":
            os.environ["KIZUNA_DATABASE_URL"] = f"{schema_url(schema)}&application_name={APP_NAME}"
            backends = BackendCpu()
        else:
            os.environ.pop("KIZUNA_DATABASE_URL", None)
            backends = None
        services = build_services(Settings(data_dir=Path(tmp)))
        # The collector as `kizuna serve` sets it (app.create_server_app).
        gc.collect()
        gc.freeze()
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, 1000)
        n = args.entities
        print(f"{args.db}, {n:,} entities in batches of {len(chunks[0]):,}; per entity:")
        for name, data in phases:
            profile = cProfile.Profile() if args.profile == name else None
            wall, py, db = run_phase(services, scope, data, backends, profile)
            db_text = f", database CPU {db / n * 1e6:6.1f} µs" if db is not None else ""
            print(
                f"  {name}: Python CPU {py / n * 1e6:6.1f} µs{db_text}, wall {wall / n * 1e6:6.1f} µs"
            )
            if profile:
                pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)
                pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
        services.broker.engine.dispose()


if __name__ == "__main__":
    main()
