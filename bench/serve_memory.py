"""Idle memory of `kizuna serve`: VmRSS of each of its processes once /health answers.

Goal (broker issue): under 150 MB a process idle. Runs on SQLite (a fresh data folder) and
on PostgreSQL (a fresh schema), with 1 and with 2 workers; compare against the previous
code run the same way in the same window.

    python bench/serve_memory.py [--settle 2] [--workers 1,2] [--db sqlite,pg]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from _harness import kizuna_server, pg_schema, process_tree, rss_mb, schema_url


def role(pid: int, server: int) -> str:
    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    if pid == server:
        return "server"
    return "resource tracker" if "resource_tracker" in command else "worker"


def measure(database_url: str, workers: int, port: int, settle: float) -> list[str]:
    with kizuna_server(database_url, port, workers) as pids:
        time.sleep(settle)
        server = pids[0]
        return [f"{role(p, server)} {rss_mb(p):.1f} MB" for p in process_tree(server)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--db", default="sqlite,pg")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after /health")
    parser.add_argument("--port", type=int, default=18090)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}")
    # A port of its own for each server: a stopped server's workers may still hold the last.
    port = args.port
    for db in args.db.split(","):
        for workers in (int(w) for w in args.workers.split(",")):
            port += 1
            if db == "pg":
                with pg_schema() as schema:
                    figures = measure(schema_url(schema), workers, port, args.settle)
            else:
                folder = tempfile.mkdtemp(prefix="kizuna-bench-")
                url = f"sqlite:///{folder}/kizuna.db"
                figures = measure(url, workers, port, args.settle)
            print(f"{db}, {workers} worker(s): " + ", ".join(figures))


if __name__ == "__main__":
    main()
