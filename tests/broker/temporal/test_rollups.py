"""Daily rollups (PostgreSQL): aggregations read from them equal those read from the
instances, on random data and after every kind of change to the history."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from kizuna.app import create_app

BASE = "/ngsi-ld/v1"
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
LD = {"Content-Type": "application/ld+json"}
START = datetime(2024, 3, 1, tzinfo=UTC)
DAYS = 9
METHODS = "totalCount,sum,avg,min,max,stddev,sumsq"
SENSORS = [f"urn:ngsi-ld:Sensor:roll{n}" for n in range(3)]


@pytest.fixture
def pg_client(pg_engine, settings) -> Iterator[TestClient]:
    app = create_app(settings, pg_engine)
    with TestClient(app, headers={"NGSILD-Tenant": f"t{uuid.uuid4().hex[:12]}"}) as client:
        yield client


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _reading(rng: random.Random, dataset: str | None = None) -> dict:
    at = START + timedelta(seconds=rng.randrange(DAYS * 86_400), microseconds=rng.randrange(10**6))
    roll = rng.random()
    # Sums that depend on the order of float additions, whole numbers, and non-numbers
    # (counted by totalCount only).
    if roll < 0.1:
        value: object = "offline"
    elif roll < 0.3:
        value = rng.randrange(-50, 50)
    else:
        value = rng.uniform(-1e3, 1e3) * 10 ** rng.randrange(-3, 4)
    item = {"type": "Property", "value": value, "observedAt": _iso(at)}
    if dataset:
        item["datasetId"] = dataset
    return item


def _load(client: TestClient, rng: random.Random) -> None:
    for eid in SENSORS:
        readings = [_reading(rng) for _ in range(rng.randrange(150, 300))]
        readings += [_reading(rng, "urn:ngsi-ld:Dataset:b") for _ in range(40)]
        body = {"id": eid, "type": "Sensor", "temperature": readings, "@context": CORE}
        r = client.post(f"{BASE}/temporal/entities", json=body, headers=LD)
        assert r.status_code in (201, 204), r.text


def _windows() -> list[dict[str, str]]:
    midnight = _iso(START + timedelta(days=1))
    out = []
    for period in ("P1D", "P2D", "P3D", "P1W"):
        out.append({"timerel": "after", "timeAt": midnight, "aggrPeriodDuration": period})
        for end in (START + timedelta(days=8), START + timedelta(days=7, hours=5, seconds=3)):
            out.append(
                {
                    "timerel": "between",
                    "timeAt": midnight,
                    "endTimeAt": _iso(end),
                    "aggrPeriodDuration": period,
                }
            )
    return out


def _aggregations(client: TestClient) -> list[object]:
    out = []
    for window in _windows():
        params = {"type": "Sensor", "options": "aggregatedValues", "aggrMethods": METHODS}
        r = client.get(f"{BASE}/temporal/entities", params={**params, **window})
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


def _check(client: TestClient) -> None:
    """Rollups equal a recount from the instances, and the answers equal the raw path's."""
    temporal = client.app.state.services.temporal
    with temporal.engine.connect() as conn:
        stored = set(conn.execute(text("SELECT * FROM temporal_daily")))
        recount = set(
            conn.execute(
                text(
                    "SELECT series_pk, date_bin('1 day', observed_at, "
                    "TIMESTAMPTZ '1970-01-01 00:00:00+00'), count(*), count(num_value), "
                    "sum(num_value::numeric), min(num_value), max(num_value), "
                    "sum(num_value::numeric * num_value::numeric) FROM temporal_instances "
                    "WHERE observed_at IS NOT NULL GROUP BY 1, 2"
                )
            )
        )
    assert stored == recount
    temporal.use_rollups = True
    with_rollups = _aggregations(client)
    temporal.use_rollups = False
    try:
        from_instances = _aggregations(client)
    finally:
        temporal.use_rollups = True
    assert with_rollups == from_instances
    assert any(e.get("temperature") for body in with_rollups for e in body)


def _instance_ids(client: TestClient, eid: str) -> list[str]:
    r = client.get(f"{BASE}/temporal/entities/{eid}", params={"lastN": "50"})
    assert r.status_code in (200, 206), r.text
    items = r.json()["temperature"]
    return [i["instanceId"] for i in (items if isinstance(items, list) else [items])]


def test_rollups_match_the_instances_through_every_change(pg_client: TestClient) -> None:
    client = pg_client
    rng = random.Random(20261123)
    _load(client, rng)
    _check(client)

    # More readings, one replacing a stored reading (same observedAt).
    eid = SENSORS[0]
    stored = client.get(f"{BASE}/temporal/entities/{eid}", params={"lastN": "1"}).json()
    same_time = {**_reading(rng), "observedAt": stored["temperature"][0]["observedAt"]}
    body = {"temperature": [_reading(rng) for _ in range(30)] + [same_time], "@context": CORE}
    r = client.post(f"{BASE}/temporal/entities/{eid}/attrs", json=body, headers=LD)
    assert r.status_code == 204, r.text
    _check(client)

    # Ordinary entity updates record history through the change listener.
    for _ in range(5):
        patch = {"temperature": _reading(rng)}
        r = client.patch(f"{BASE}/entities/{SENSORS[1]}/attrs", json=patch)
        assert r.status_code == 204, r.text
    _check(client)

    # Modify an instance onto another day, and delete one.
    first, second = _instance_ids(client, SENSORS[2])[:2]
    moved = {"type": "Property", "value": 1e6, "observedAt": _iso(START + timedelta(days=4))}
    r = client.patch(f"{BASE}/temporal/entities/{SENSORS[2]}/attrs/temperature/{first}", json=moved)
    assert r.status_code == 204, r.text
    r = client.delete(f"{BASE}/temporal/entities/{SENSORS[2]}/attrs/temperature/{second}")
    assert r.status_code == 204, r.text
    _check(client)

    # Delete one dataset's history.
    r = client.delete(
        f"{BASE}/temporal/entities/{SENSORS[1]}/attrs/temperature",
        params={"datasetId": "urn:ngsi-ld:Dataset:b"},
    )
    assert r.status_code == 204, r.text
    _check(client)

    # Retention cuts through the middle of a day.
    tenant = client.headers["NGSILD-Tenant"]
    now = START + timedelta(days=30 + 3, hours=13, minutes=7)
    assert client.app.state.services.temporal.purge(0, {tenant: 30}, now=now) > 0
    _check(client)

    # Deleting an entity takes its rollups with it.
    assert client.delete(f"{BASE}/temporal/entities/{SENSORS[0]}").status_code == 204
    _check(client)
