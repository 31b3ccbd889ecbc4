"""Temporal API on PostgreSQL: ingest rate vs raw COPY, daily avg/max aggregation latency.

N sensors x 10-minute readings (default 100 x 365 days = 5.3 M instances) go in through
the temporal service's own write path (``Temporal.create_or_add``: validation, expansion,
one INSERT per call of a week of readings), timed against COPY of the same rows into a
copy of the table in the same run. Then daily avg/max over the whole period is asked for
one sensor (p50/p99 over many requests) and for all sensors at once.

    .venv/bin/python bench/temporal_bench.py --days 30
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import percentile, pg_connect, pg_schema, schema_url  # noqa: E402
from kizuna.app import build_services  # noqa: E402
from kizuna.auth.service import SYSTEM  # noqa: E402
from kizuna.broker.temporal.service import _row, make_query  # noqa: E402
from kizuna.settings import Settings  # noqa: E402

START = datetime(2024, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=10)
PER_CALL = 7 * 144  # a week of readings per temporal write
SENSOR_TYPE = "https://uri.etsi.org/ngsi-ld/default-context/Sensor"
TEMPERATURE = "https://uri.etsi.org/ngsi-ld/default-context/temperature"


def readings(sensor: int, days: int) -> list[tuple[datetime, float]]:
    rng = random.Random(sensor)
    out = []
    for i in range(days * 144):
        at = START + i * STEP
        out.append((at, round(15 + 10 * rng.random() + (i % 144) / 144 * 5, 2)))
    return out


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sensors", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    total = args.sensors * args.days * 144
    with pg_schema() as schema:
        services = build_services(Settings(database_url=schema_url(schema)))
        scope = services.tenants.scope(SYSTEM, None, write=True)
        tm = services.broker.contexts.core
        temporal = services.temporal

        print(f"ingesting {total:,} instances ({args.sensors} sensors x {args.days} days) ...")
        started = time.perf_counter()
        for s in range(args.sensors):
            data = readings(s, args.days)
            for c in range(0, len(data), PER_CALL):
                body = {
                    "id": f"urn:ngsi-ld:Sensor:{s:03d}",
                    "type": "Sensor",
                    "temperature": [
                        {"type": "Property", "value": v, "observedAt": iso(at)}
                        for at, v in data[c : c + PER_CALL]
                    ],
                }
                temporal.create_or_add(scope, tm, body)
            if s % 10 == 9:
                print(f"  {s + 1} sensors", flush=True)
        ours = time.perf_counter() - started

        # Baseline: COPY of the same rows (as the service would store them) into a copy.
        with pg_connect(schema) as conn:
            conn.execute("CREATE TABLE raw_instances (LIKE temporal_instances INCLUDING ALL)")
            conn.commit()
            cols = [
                "tenant",
                "entity_id",
                "entity_type",
                "attr",
                "dataset_id",
                "instance_id",
                "observed_at",
                "created_at",
                "modified_at",
                "value_num",
                "instance",
            ]
            now = datetime.now(UTC)
            started = time.perf_counter()
            copy_sql = f"COPY raw_instances ({', '.join(cols)}) FROM STDIN"
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                for s in range(args.sensors):
                    for at, v in readings(s, args.days):
                        inst = {"type": "Property", "value": v, "observedAt": iso(at)}
                        row = _row(
                            scope.tenant,
                            f"urn:ngsi-ld:Sensor:{s:03d}",
                            [SENSOR_TYPE],
                            TEMPERATURE,
                            inst,
                            now,
                        )
                        row["instance"] = _json(row["instance"])
                        copy.write_row([row[c] for c in cols])
            conn.commit()
            raw = time.perf_counter() - started
            conn.execute("DROP TABLE raw_instances")
            conn.execute("ANALYZE temporal_instances")
            conn.execute("ANALYZE temporal_entities")
            conn.commit()
        print(
            f"ingest: {total / ours:,.0f} instances/s through Temporal.create_or_add "
            f"({ours:.1f} s); raw COPY {total / raw:,.0f}/s ({raw:.1f} s); "
            f"ratio {raw / ours:.2f} of COPY speed"
        )

        end = START + timedelta(days=args.days)
        query = dict(
            timerel="between",
            time_at=iso(START),
            end_time_at=iso(end),
            timeproperty=None,
            last_n=None,
            aggr_methods="avg,max",
            aggr_period="P1D",
            aggregated=True,
        )
        rng = random.Random(5)
        samples = []
        for _ in range(args.requests):
            q = make_query(**query)
            q.attrs = [TEMPERATURE]
            sensor = f"urn:ngsi-ld:Sensor:{rng.randrange(args.sensors):03d}"
            t0 = time.perf_counter()
            body = temporal.retrieve(scope, tm, sensor, q)
            samples.append((time.perf_counter() - t0) * 1000)
        assert len(body["temperature"]["avg"]) == args.days, len(body["temperature"]["avg"])
        print(
            f"one sensor, daily avg+max over {args.days} days: p50 {percentile(samples, 50):.1f} ms, "
            f"p99 {percentile(samples, 99):.1f} ms ({args.requests} requests)"
        )
        all_samples = []
        for _ in range(5):
            q = make_query(**query)
            q.types = [SENSOR_TYPE]
            q.attrs = [TEMPERATURE]
            q.limit = args.sensors
            t0 = time.perf_counter()
            entities, _ = temporal.query(scope, tm, q)
            all_samples.append((time.perf_counter() - t0) * 1000)
        assert len(entities) == args.sensors
        print(
            f"all {args.sensors} sensors, daily avg+max: best {min(all_samples):.0f} ms, "
            f"worst {max(all_samples):.0f} ms (5 requests)"
        )
        services.engine.dispose()


def _json(value: object) -> str:
    import orjson

    return orjson.dumps(value).decode()


if __name__ == "__main__":
    main()
