"""Run the ETSI NGSI-LD conformance suite (Robot Framework) against a live `kizuna serve`.

    python scripts/conformance.py --suite /path/to/ngsi-ld-test-suite [--db postgresql] [TP dirs...]

The suite is not part of this repository: check out its `TP/` tree (commit 1d442dc of
marek-mraz/ngsi-ld-test-suite is the ETSI tree) anywhere and pass its path. The script
installs the suite's requirements into `<suite>/.venv` once, starts Kizuna on a fresh
database with the suite's @context documents preloaded from ../shared, overrides only the
suite's host/port variables, and prints pass/fail per test plus a total.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SHARED_CONTEXTS = ROOT.parent / "shared" / "ngsi-ld-test-contexts"
ETSI_CONTEXT_BASE = (
    "https://forge.etsi.org/rep/cim/ngsi-ld-test-suite/-/raw/develop/resources/jsonld-contexts/"
)
DEFAULT_SELECTION = [
    "TP/NGSI-LD/ContextInformation/Provision/Entities",
    "TP/NGSI-LD/ContextInformation/Provision/BatchEntities",
    "TP/NGSI-LD/ContextInformation/Consumption/Entity",
]
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def suite_python(suite: Path) -> Path:
    venv = suite / ".venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(suite / "requirements.txt")],
            check=True,
        )
    return python


def start_server(
    port: int, db: str, workdir: Path, extra: dict[str, str]
) -> tuple[subprocess.Popen, str | None]:
    env = dict(os.environ)
    env.update(
        KIZUNA_OPEN_ACCESS="true",
        KIZUNA_DATA_DIR=str(workdir),
        KIZUNA_PORT=str(port),
        KIZUNA_CONTEXT_PRELOAD=json.dumps({ETSI_CONTEXT_BASE: str(SHARED_CONTEXTS), **extra}),
    )
    schema = None
    if db == "postgresql":
        import psycopg

        schema = f"kz_conformance_{uuid.uuid4().hex[:8]}"
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        env["KIZUNA_DATABASE_URL"] = f"{PG_URL}?options=-csearch_path%3D{schema}"
    with open(workdir / "server.log", "w") as log:  # the child keeps its own descriptor
        server = subprocess.Popen(
            [sys.executable, "-m", "kizuna.cli", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    for _ in range(100):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server, schema
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit(f"kizuna did not start; see {workdir / 'server.log'}")


def start_mosquitto(port: int, workdir: Path) -> subprocess.Popen | None:
    """A second Mosquitto on a loopback port (the suite starts one in Docker)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        print("mosquitto not found: the non-default-port MQTT cases will fail")
        return None
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    return subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def summarise(output_xml: Path) -> tuple[int, int, list[tuple[str, str, str]]]:
    root = ET.parse(output_xml).getroot()
    rows = []
    for test in root.iter("test"):
        status = test.find("status")
        if status is None:
            continue
        source = test.get("name", "")
        rows.append((source, status.get("status", ""), (status.text or "").strip()[:300]))
    passed = sum(1 for r in rows if r[1] == "PASS")
    failed = sum(1 for r in rows if r[1] == "FAIL")
    return passed, failed, rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--suite", required=True, type=Path)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--out", type=Path, default=None, help="where Robot writes its reports")
    parser.add_argument(
        "--extra-context",
        action="append",
        default=[],
        metavar="URL_PREFIX=DIR",
        help="also preload @context documents (some suite data refers to contexts not in shared/)",
    )
    parser.add_argument(
        "--notify-port", type=int, default=9191, help="suite's notification receiver"
    )
    parser.add_argument("--mqtt-host", default="127.0.0.1")
    parser.add_argument(
        "--mqtt-alt-port",
        type=int,
        default=9192,
        help="a second Mosquitto for non-default-port cases",
    )
    parser.add_argument("selection", nargs="*", default=DEFAULT_SELECTION)
    args = parser.parse_args()
    suite = args.suite.resolve()
    python = suite_python(suite)
    workdir = Path(tempfile.mkdtemp(prefix="kizuna-conformance-"))
    out = (args.out or workdir / "robot").resolve()
    extra = dict(item.split("=", 1) for item in args.extra_context)
    server, schema = start_server(args.port, args.db, workdir, extra)
    mosquitto = start_mosquitto(args.mqtt_alt_port, workdir)
    try:
        base = f"http://127.0.0.1:{args.port}/ngsi-ld/v1"
        subprocess.run(
            [
                str(python),
                "-m",
                "robot",
                "--variable",
                f"url:{base}",
                "--variable",
                f"temporal_api_url:{base}",
                "--variable",
                "notification_server_host:127.0.0.1",
                "--variable",
                f"notification_server_port:{args.notify_port}",
                "--variable",
                f"mqtt_broker_host:{args.mqtt_host}",
                "--variable",
                f"mqtt_broker_non_default_port:{args.mqtt_alt_port}",
                "--outputdir",
                str(out),
                "--loglevel",
                "INFO",
                "--consolewidth",
                "120",
                *args.selection,
            ],
            cwd=suite,
            check=False,
        )
    finally:
        server.terminate()
        server.wait(timeout=20)
        if mosquitto is not None:
            mosquitto.terminate()
            mosquitto.wait(timeout=10)
        if schema:
            import psycopg

            with psycopg.connect(
                "host=127.0.0.1 user=postgres dbname=test", autocommit=True
            ) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    passed, failed, rows = summarise(out / "output.xml")
    for name, status, message in rows:
        if status != "PASS":
            print(f"{status}  {name}  {message}")
    total = passed + failed
    rate = 100 * passed / total if total else 0
    print(
        f"conformance: {passed} passed, {failed} failed ({rate:.1f}% of {total}); reports in {out}"
    )


if __name__ == "__main__":
    main()
