"""The temporal API over HTTP, on SQLite and PostgreSQL (the ``client`` fixture)."""

from __future__ import annotations

import math
import statistics
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from kizuna.app import create_app

BASE = "/ngsi-ld/v1"
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
LD = {"Content-Type": "application/ld+json"}


def _sensor(entity_id: str, readings: list[tuple[float, str]], attr: str = "temperature") -> dict:
    return {
        "id": entity_id,
        "type": "Sensor",
        attr: [{"type": "Property", "value": v, "observedAt": t} for v, t in readings],
        "@context": CORE,
    }


def _create(client: TestClient, body: dict) -> None:
    response = client.post(f"{BASE}/temporal/entities", json=body, headers=LD)
    assert response.status_code in (201, 204), response.text


def _get(client: TestClient, entity_id: str, **params: str) -> dict:
    response = client.get(f"{BASE}/temporal/entities/{entity_id}", params=params)
    assert response.status_code in (200, 206), response.text
    return response.json()


def _values(body: dict, attr: str = "temperature") -> list:
    return [i["value"] for i in body.get(attr, [])]


READINGS = [
    (2, "2024-01-01T00:10:00Z"),
    (4, "2024-01-01T00:40:00Z"),
    (4, "2024-01-01T01:10:00Z"),
    (4, "2024-01-01T01:20:00Z"),
    (5, "2024-01-02T03:00:00Z"),
    (5, "2024-01-02T04:00:00Z"),
    (7, "2024-01-02T05:00:00Z"),
    (9, "2024-02-03T00:00:00Z"),
]


# --- history from ordinary entity writes ------------------------------------------------


def test_ordinary_writes_record_history(client: TestClient) -> None:
    entity = {
        "id": "urn:ngsi-ld:Sensor:h1",
        "type": "Sensor",
        "temperature": {"type": "Property", "value": 10, "observedAt": "2024-01-01T00:00:00Z"},
    }
    assert client.post(f"{BASE}/entities", json=entity).status_code == 201
    for value, minute in ((11, 10), (12, 20)):
        patch = {"temperature": {"value": value, "observedAt": f"2024-01-01T00:{minute}:00Z"}}
        r = client.patch(f"{BASE}/entities/urn:ngsi-ld:Sensor:h1/attrs", json=patch)
        assert r.status_code == 204, r.text
    batch = [
        {
            "id": "urn:ngsi-ld:Sensor:h1",
            "type": "Sensor",
            "temperature": {"value": 13, "observedAt": "2024-01-01T00:30:00Z"},
        }
    ]
    r = client.post(f"{BASE}/entityOperations/upsert?options=update", json=batch)
    assert r.status_code == 204, r.text
    assert _values(_get(client, "urn:ngsi-ld:Sensor:h1")) == [10, 11, 12, 13]

    # Deleting the attribute leaves a deletion marker, visible through deletedAt.
    r = client.delete(f"{BASE}/entities/urn:ngsi-ld:Sensor:h1/attrs/temperature")
    assert r.status_code == 204
    deleted = _get(client, "urn:ngsi-ld:Sensor:h1", timeproperty="deletedAt")
    [marker] = deleted["temperature"]
    assert marker["value"] == "urn:ngsi-ld:null" and "deletedAt" in marker
    assert _values(_get(client, "urn:ngsi-ld:Sensor:h1")) == [10, 11, 12, 13]

    # Deleting the entity deletes its temporal representation.
    assert client.delete(f"{BASE}/entities/urn:ngsi-ld:Sensor:h1").status_code == 204
    r = client.get(f"{BASE}/temporal/entities/urn:ngsi-ld:Sensor:h1")
    assert r.status_code == 404


def test_unchanged_attributes_are_not_recorded_again(client: TestClient) -> None:
    entity = {
        "id": "urn:ngsi-ld:Sensor:h2",
        "type": "Sensor",
        "temperature": {"value": 1, "observedAt": "2024-01-01T00:00:00Z"},
        "humidity": {"value": 50, "observedAt": "2024-01-01T00:00:00Z"},
    }
    client.post(f"{BASE}/entities", json=entity)
    patch = {"temperature": {"value": 2, "observedAt": "2024-01-01T00:10:00Z"}}
    client.patch(f"{BASE}/entities/urn:ngsi-ld:Sensor:h2/attrs", json=patch)
    body = _get(client, "urn:ngsi-ld:Sensor:h2")
    assert _values(body) == [1, 2]
    assert _values(body, "humidity") == [50]


def test_history_is_per_tenant(client: TestClient) -> None:
    _create(client, _sensor("urn:ngsi-ld:Sensor:t1", READINGS[:2]))
    other = {"NGSILD-Tenant": f"t{uuid.uuid4().hex[:12]}"}
    client.post(f"{BASE}/entities", json={"id": "urn:ngsi-ld:X:1", "type": "X"}, headers=other)
    r = client.get(f"{BASE}/temporal/entities/urn:ngsi-ld:Sensor:t1", headers=other)
    assert r.status_code == 404


# --- temporal query ---------------------------------------------------------------------


def test_timerel_and_last_n(client: TestClient) -> None:
    _create(client, _sensor("urn:ngsi-ld:Sensor:q1", READINGS))
    eid = "urn:ngsi-ld:Sensor:q1"
    assert _values(_get(client, eid)) == [v for v, _ in READINGS]
    before = _get(client, eid, timerel="before", timeAt="2024-01-01T01:10:00Z")
    assert _values(before) == [2, 4]  # strictly before
    after = _get(client, eid, timerel="after", timeAt="2024-01-02T05:00:00Z")
    assert _values(after) == [7, 9]  # from timeAt on
    between = _get(
        client,
        eid,
        timerel="between",
        timeAt="2024-01-01T01:10:00Z",
        endTimeAt="2024-01-02T05:00:00Z",
    )
    assert _values(between) == [4, 4, 5, 5]
    assert _values(_get(client, eid, lastN="3")) == [5, 7, 9]
    last_before = _get(client, eid, lastN="2", timerel="before", timeAt="2024-01-02T00:00:00Z")
    assert _values(last_before) == [4, 4]


def test_formats(client: TestClient) -> None:
    _create(client, _sensor("urn:ngsi-ld:Sensor:f1", READINGS[:2]))
    normalized = _get(client, "urn:ngsi-ld:Sensor:f1")
    first = normalized["temperature"][0]
    assert first["observedAt"] == "2024-01-01T00:10:00Z"
    assert first["instanceId"].startswith("urn:ngsi-ld:Instance:")
    assert "createdAt" not in first
    with_sys = _get(client, "urn:ngsi-ld:Sensor:f1", options="sysAttrs")
    assert "createdAt" in with_sys["temperature"][0]
    simplified = _get(client, "urn:ngsi-ld:Sensor:f1", options="temporalValues")
    assert simplified["temperature"] == {
        "type": "Property",
        "values": [[2, "2024-01-01T00:10:00Z"], [4, "2024-01-01T00:40:00Z"]],
    }
    assert _get(client, "urn:ngsi-ld:Sensor:f1", format="temporalValues") == simplified


def test_relationship_and_language_simplified(client: TestClient) -> None:
    body = {
        "id": "urn:ngsi-ld:Car:1",
        "type": "Car",
        "parkedIn": [
            {
                "type": "Relationship",
                "object": "urn:ngsi-ld:P:1",
                "observedAt": "2024-01-01T00:00:00Z",
            }
        ],
        "label": [
            {
                "type": "LanguageProperty",
                "languageMap": {"ja": "車", "en": "car"},
                "observedAt": "2024-01-01T00:00:00Z",
            }
        ],
        "@context": CORE,
    }
    _create(client, body)
    out = _get(client, "urn:ngsi-ld:Car:1", options="temporalValues")
    assert out["parkedIn"]["objects"] == [["urn:ngsi-ld:P:1", "2024-01-01T00:00:00Z"]]
    assert out["label"]["languageMaps"] == [
        [{"languageMap": {"ja": "車", "en": "car"}}, "2024-01-01T00:00:00Z"]
    ]


def test_query_endpoint_filters_and_pages(client: TestClient) -> None:
    _create(client, _sensor("urn:ngsi-ld:Sensor:a", READINGS[:3]))
    _create(client, _sensor("urn:ngsi-ld:Sensor:b", READINGS[5:]))
    _create(client, _sensor("urn:ngsi-ld:Sensor:c", READINGS[:1], attr="humidity"))
    params = {"type": "Sensor", "timerel": "after", "timeAt": "2024-01-02T00:00:00Z"}
    r = client.get(f"{BASE}/temporal/entities", params={**params, "count": "true"})
    assert r.status_code == 200, r.text
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:Sensor:b"]  # only in-range history
    assert r.headers["NGSILD-Results-Count"] == "1"
    every = {"type": "Sensor", "timerel": "after", "timeAt": "2000-01-01T00:00:00Z"}
    r = client.get(f"{BASE}/temporal/entities", params={**every, "limit": "2"})
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:Sensor:a", "urn:ngsi-ld:Sensor:b"]
    assert 'rel="next"' in r.headers["Link"]
    r = client.get(f"{BASE}/temporal/entities", params={**every, "attrs": "humidity"})
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:Sensor:c"]
    r = client.get(f"{BASE}/temporal/entities", params={**every, "q": "temperature>5"})
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:Sensor:b"]
    query = {
        "type": "Query",
        "entities": [{"type": "Sensor"}],
        "temporalQ": {"timerel": "before", "timeAt": "2024-01-01T01:00:00Z"},
    }
    r = client.post(f"{BASE}/temporal/entityOperations/query", json=query)
    assert r.status_code == 200, r.text
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:Sensor:a", "urn:ngsi-ld:Sensor:c"]


@pytest.fixture
def small_page_client(engine, settings):
    settings.temporal_instance_limit = 3
    app = create_app(settings, engine)
    with TestClient(app, headers={"NGSILD-Tenant": f"t{uuid.uuid4().hex[:12]}"}) as test_client:
        yield test_client


def test_instance_limit_gives_content_range(small_page_client: TestClient) -> None:
    client = small_page_client
    _create(client, _sensor("urn:ngsi-ld:Sensor:p", READINGS))
    r = client.get(f"{BASE}/temporal/entities/urn:ngsi-ld:Sensor:p")
    assert r.status_code == 206
    assert r.headers["Content-Range"] == "date-time 2024-01-01T00:10:00Z-2024-01-01T01:10:00Z/*"
    assert _values(r.json()) == [2, 4, 4]
    r = client.get(f"{BASE}/temporal/entities/urn:ngsi-ld:Sensor:p", params={"lastN": "10"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == "date-time 2024-02-03T00:00:00Z-2024-01-02T04:00:00Z/10"
    assert _values(r.json()) == [5, 7, 9]
    r = client.get(f"{BASE}/temporal/entities/urn:ngsi-ld:Sensor:p", params={"lastN": "2"})
    assert r.status_code == 200 and _values(r.json()) == [7, 9]


# --- aggregation ------------------------------------------------------------------------


def _by_hand(values: list[float]) -> dict[str, float]:
    return {
        "totalCount": len(values),
        "distinctCount": len(set(values)),
        "sum": sum(values),
        "avg": sum(values) / len(values),
        "min": min(values),
        "max": max(values),
        "stddev": statistics.stdev(values) if len(values) > 1 else None,
        "sumsq": sum(v * v for v in values),
    }


METHODS = "totalCount,distinctCount,sum,avg,min,max,stddev,sumsq"


def test_every_aggregation_method_daily(client: TestClient) -> None:
    _create(client, _sensor("urn:ngsi-ld:Sensor:g", READINGS))
    out = _get(
        client,
        "urn:ngsi-ld:Sensor:g",
        options="aggregatedValues",
        aggrMethods=METHODS,
        aggrPeriodDuration="P1D",
        timerel="between",
        timeAt="2024-01-01T00:00:00Z",
        endTimeAt="2024-03-01T00:00:00Z",
    )
    block = out["temperature"]
    days = {
        "2024-01-01T00:00:00Z": [2, 4, 4, 4],
        "2024-01-02T00:00:00Z": [5, 5, 7],
        "2024-02-03T00:00:00Z": [9],
    }
    for method in METHODS.split(","):
        got = {start: value for value, start, _end in block[method]}
        for start, values in days.items():
            expected = _by_hand(values)[method]
            if expected is None:
                assert start not in got
            else:
                assert math.isclose(got[start], expected, rel_tol=1e-9), (method, start)
    [_value, start, end] = block["sum"][0]
    assert (start, end) == ("2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z")


def test_aggregation_hourly_origin_is_first_instance(client: TestClient) -> None:
    _create(client, _sensor("urn:ngsi-ld:Sensor:h", READINGS[:4]))
    out = _get(
        client,
        "urn:ngsi-ld:Sensor:h",
        options="aggregatedValues",
        aggrMethods="avg",
        aggrPeriodDuration="PT1H",
    )
    # Buckets start at the first instance (00:10): [00:10, 01:10) holds 2 and 4.
    assert out["temperature"]["avg"] == [
        [3.0, "2024-01-01T00:10:00Z", "2024-01-01T01:10:00Z"],
        [4.0, "2024-01-01T01:10:00Z", "2024-01-01T02:10:00Z"],
    ]


def test_aggregation_monthly_and_whole_range(client: TestClient) -> None:
    _create(client, _sensor("urn:ngsi-ld:Sensor:m", READINGS))
    common = {
        "options": "aggregatedValues",
        "timerel": "after",
        "timeAt": "2024-01-01T00:00:00Z",
    }
    monthly = _get(
        client, "urn:ngsi-ld:Sensor:m", aggrMethods="sum", aggrPeriodDuration="P1M", **common
    )
    assert monthly["temperature"]["sum"] == [
        [31.0, "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"],
        [9.0, "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"],
    ]
    whole = _get(client, "urn:ngsi-ld:Sensor:m", aggrMethods="max,totalCount", **common)
    assert whole["temperature"]["max"][0][0] == 9.0
    assert whole["temperature"]["totalCount"][0][:2] == [8, "2024-01-01T00:00:00Z"]


@pytest.mark.parametrize("period", ["P9000Y", "P3000000D"])
def test_a_period_reaching_past_year_9999_ends_there(client: TestClient, period: str) -> None:
    _create(client, _sensor("urn:ngsi-ld:Sensor:long", READINGS))
    body = _get(
        client,
        "urn:ngsi-ld:Sensor:long",
        options="aggregatedValues",
        aggrMethods="sum",
        aggrPeriodDuration=period,
        timerel="after",
        timeAt="2024-01-01T00:00:00Z",
    )
    [[total, start, end]] = body["temperature"]["sum"]
    assert total == 40.0 and start.startswith("2024-01-01")
    assert end.startswith("9999-12-31T23:59:59")


# --- temporal writes --------------------------------------------------------------------


def test_temporal_create_update_and_current_entity(client: TestClient) -> None:
    eid = "urn:ngsi-ld:Sensor:w"
    r = client.post(f"{BASE}/temporal/entities", json=_sensor(eid, READINGS[:3]), headers=LD)
    assert r.status_code == 201
    assert r.headers["Location"] == f"{BASE}/temporal/entities/{eid}"
    current = client.get(f"{BASE}/entities/{eid}").json()
    assert current["temperature"]["value"] == 4  # the latest by observedAt
    # The same observedAt again replaces the stored instance; a new one adds.
    update = _sensor(eid, [(40, READINGS[2][1]), (6, "2024-01-01T02:00:00Z")])
    r = client.post(f"{BASE}/temporal/entities", json=update, headers=LD)
    assert r.status_code == 204
    assert _values(_get(client, eid)) == [2, 4, 40, 6]
    fragment = {
        "humidity": [{"type": "Property", "value": 70, "observedAt": "2024-01-01T00:00:00Z"}],
        "@context": CORE,
    }
    r = client.post(f"{BASE}/temporal/entities/{eid}/attrs", json=fragment, headers=LD)
    assert r.status_code == 204, r.text
    assert _values(_get(client, eid), "humidity") == [70]
    r = client.post(
        f"{BASE}/temporal/entities/urn:ngsi-ld:Sensor:none/attrs", json=fragment, headers=LD
    )
    assert r.status_code == 404


def test_instance_modify_and_delete(client: TestClient) -> None:
    eid = "urn:ngsi-ld:Sensor:i"
    _create(client, _sensor(eid, READINGS[:3]))
    first = _get(client, eid)["temperature"][0]["instanceId"]
    body = {"type": "Property", "value": 99, "observedAt": "2024-01-01T00:10:00Z"}
    r = client.patch(f"{BASE}/temporal/entities/{eid}/attrs/temperature/{first}", json=body)
    assert r.status_code == 204, r.text
    after = _get(client, eid)["temperature"]
    assert after[0]["value"] == 99 and after[0]["instanceId"] == first
    r = client.delete(f"{BASE}/temporal/entities/{eid}/attrs/temperature/{first}")
    assert r.status_code == 204
    assert _values(_get(client, eid)) == [4, 4]
    r = client.delete(f"{BASE}/temporal/entities/{eid}/attrs/temperature/{first}")
    assert r.status_code == 404
    r = client.delete(f"{BASE}/temporal/entities/{eid}/attrs/temperature/notAUri")
    assert r.status_code == 400


def test_delete_attribute_and_entity(client: TestClient) -> None:
    eid = "urn:ngsi-ld:Sensor:d"
    body = _sensor(eid, READINGS[:2])
    body["temperature"].append(
        {
            "type": "Property",
            "value": 1,
            "observedAt": "2024-01-01T00:00:00Z",
            "datasetId": "urn:ngsi-ld:Dataset:b",
        }
    )
    _create(client, body)
    r = client.delete(f"{BASE}/temporal/entities/{eid}/attrs/temperature")
    assert r.status_code == 204
    left = _get(client, eid)["temperature"]
    assert [i.get("datasetId") for i in left] == ["urn:ngsi-ld:Dataset:b"]
    current = client.get(f"{BASE}/entities/{eid}").json()
    assert current["temperature"]["datasetId"] == "urn:ngsi-ld:Dataset:b"
    r = client.delete(f"{BASE}/temporal/entities/{eid}/attrs/temperature?deleteAll=true")
    assert r.status_code == 204
    assert "temperature" not in _get(client, eid)
    assert client.delete(f"{BASE}/temporal/entities/{eid}/attrs/temperature").status_code == 404
    assert client.delete(f"{BASE}/temporal/entities/{eid}").status_code == 204
    assert client.get(f"{BASE}/entities/{eid}").status_code == 404
    assert client.delete(f"{BASE}/temporal/entities/{eid}").status_code == 404


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"timerel": "during", "timeAt": "2024-01-01T00:00:00Z"},
        {"timerel": "after"},
        {"timerel": "between", "timeAt": "2024-01-01T00:00:00Z"},
        {"timerel": "after", "timeAt": "yesterday"},
        {"timeproperty": "seenAt"},
        {"lastN": "0"},
        {"lastN": "²"},
        {"options": "aggregatedValues", "aggrMethods": "avg", "aggrPeriodDuration": "P20000Y"},
        {
            "options": "aggregatedValues",
            "aggrMethods": "avg",
            "aggrPeriodDuration": "P99999999999D",
        },
        {"options": "aggregatedValues", "aggrMethods": "avg", "aggrPeriodDuration": "P1X"},
        {"options": "aggregatedValues", "aggrMethods": "avg", "aggrPeriodDuration": "1D"},
        {"options": "aggregatedValues", "aggrMethods": "median"},
        {"options": "aggregatedValues"},
    ],
)
def test_bad_query_is_400_problem(client: TestClient, params: dict) -> None:
    _create(client, _sensor("urn:ngsi-ld:Sensor:bad", READINGS[:1]))
    r = client.get(f"{BASE}/temporal/entities/urn:ngsi-ld:Sensor:bad", params=params)
    assert r.status_code == 400, r.text
    problem = r.json()
    assert problem["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    assert problem["title"]


@pytest.mark.parametrize(
    "params, kind",
    [
        ({"options": "sometimes"}, "InvalidRequest"),
        ({"format": "fancy"}, "InvalidRequest"),
        ({"timerel": "after", "timeAt": "2024-01-01T00:00:00Z"}, "BadRequestData"),  # no type
    ],
)
def test_bad_query_on_collection(client: TestClient, params: dict, kind: str) -> None:
    _create(client, _sensor("urn:ngsi-ld:Sensor:bad", READINGS[:1]))
    if "options" in params or "format" in params:
        params = {**params, "type": "Sensor"}
    r = client.get(f"{BASE}/temporal/entities", params=params)
    assert r.status_code == 400
    assert r.json()["type"].endswith(kind)


def test_bad_writes_change_nothing(client: TestClient) -> None:
    bad = _sensor("urn:ngsi-ld:Sensor:x", [(1, "not a time")])
    r = client.post(f"{BASE}/temporal/entities", json=bad, headers=LD)
    assert r.status_code == 400
    assert client.get(f"{BASE}/entities/urn:ngsi-ld:Sensor:x").status_code == 404
    r = client.post(f"{BASE}/temporal/entities", json={**bad, "id": "notAUri"}, headers=LD)
    assert r.status_code == 400
    r = client.post(
        f"{BASE}/temporal/entities", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["type"].endswith("InvalidRequest")


# --- retention --------------------------------------------------------------------------


def test_retention_purges_old_instances(client: TestClient) -> None:
    now = datetime.now(UTC)
    old = (now - timedelta(days=40)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = (now - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    _create(client, _sensor("urn:ngsi-ld:Sensor:r", [(1, old), (2, recent)]))
    tenant = client.headers["NGSILD-Tenant"]
    temporal = client.app.state.services.temporal
    assert temporal.purge(0) == 0  # 0 days: keep forever
    assert temporal.purge(0, {tenant: 30}) == 1
    assert _values(_get(client, "urn:ngsi-ld:Sensor:r")) == [2]
    assert temporal.purge(0, {tenant: 30}) == 0


# --- scope ------------------------------------------------------------------------------


def test_scope_history_and_its_deletion(client: TestClient) -> None:
    eid = "urn:ngsi-ld:Sensor:s"
    body = _sensor(eid, READINGS[:2])
    body["scope"] = ["/Takasago/Park", "/Kakogawa"]
    _create(client, body)
    again = _sensor(eid, READINGS[2:3])
    again["scope"] = "/Takasago/River"
    _create(client, again)
    history = _get(client, eid)["scope"]
    assert [i["value"] for i in history] == [["/Takasago/Park", "/Kakogawa"], ["/Takasago/River"]]
    assert client.delete(f"{BASE}/entities/{eid}/attrs/scope").status_code == 204
    assert "scope" not in client.get(f"{BASE}/entities/{eid}").json()
    assert client.delete(f"{BASE}/entities/{eid}/attrs/scope").status_code == 404
    deleted = _get(client, eid, timeproperty="deletedAt")
    assert set(deleted) == {"id", "type", "scope"}
    [marker] = deleted["scope"]
    assert marker["value"] == [] and marker["deletedAt"]
    simplified = _get(client, eid, timeproperty="deletedAt", options="temporalValues")
    assert simplified["scope"]["values"] == [[[], marker["deletedAt"]]]
