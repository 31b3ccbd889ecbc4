"""The temporal API on both dialects: history from entity writes, queries, formats, writes."""

from __future__ import annotations

import math
import statistics

import pytest

E = "/ngsi-ld/v1/entities"
T = "/ngsi-ld/v1/temporal/entities"
SENSOR = "urn:ngsi-ld:Sensor:1"


def _reading(value, at):
    return {"temperature": {"type": "Property", "value": value, "observedAt": at}}


def _history(client, values, entity_id=SENSOR, day="2024-01-01"):
    """Create the entity, then update it once per value at 10-minute steps."""
    first, *rest = values
    body = {"id": entity_id, "type": "Sensor", **_reading(first, f"{day}T00:00:00Z")}
    assert client.post(E, json=body).status_code == 201
    for i, value in enumerate(rest, start=1):
        at = f"{day}T{i // 6:02d}:{(i % 6) * 10:02d}:00Z"
        r = client.patch(f"{E}/{entity_id}/attrs", json=_reading(value, at))
        assert r.status_code == 204, r.text


def test_entity_writes_record_history_and_unchanged_values_are_not_repeated(client):
    _history(client, [20, 21, 22])
    # the same instance again (same value, same observedAt): nothing new
    client.patch(f"{E}/{SENSOR}/attrs", json=_reading(22, "2024-01-01T00:20:00Z"))
    r = client.get(f"{T}/{SENSOR}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == SENSOR and body["type"] == "Sensor"
    values = [i["value"] for i in body["temperature"]]
    assert values == [20, 21, 22]
    assert all(
        i["instanceId"].startswith("urn:ngsi-ld:attribute:instance:") for i in body["temperature"]
    )


def test_timerel_and_last_n(client):
    _history(client, [1, 2, 3, 4, 5])
    get = lambda q: [i["value"] for i in client.get(f"{T}/{SENSOR}?{q}").json()["temperature"]]  # noqa: E731
    assert get("timerel=before&timeAt=2024-01-01T00:20:00Z") == [1, 2]
    assert get("timerel=after&timeAt=2024-01-01T00:20:00Z") == [4, 5]
    assert get("timerel=between&timeAt=2024-01-01T00:10:00Z&endTimeAt=2024-01-01T00:30:00Z") == [
        2,
        3,
    ]
    assert get("lastN=2") == [4, 5]
    assert get("timerel=before&timeAt=2024-01-01T00:40:00Z&lastN=2") == [3, 4]
    # modifiedAt: all recorded just now
    assert get("timeproperty=modifiedAt&timerel=before&timeAt=2999-01-01T00:00:00Z") == [
        1,
        2,
        3,
        4,
        5,
    ]


def test_temporal_values_format(client):
    _history(client, [7, 8])
    body = client.get(f"{T}/{SENSOR}?options=temporalValues").json()
    assert body["temperature"] == {
        "type": "Property",
        "values": [[7, "2024-01-01T00:00:00Z"], [8, "2024-01-01T00:10:00Z"]],
    }


def test_query_by_type_id_pattern_and_attrs(client):
    _history(client, [1, 2], "urn:ngsi-ld:Sensor:a")
    _history(client, [3], "urn:ngsi-ld:Sensor:b")
    r = client.get(f"{T}?type=Sensor&count=true")
    assert r.status_code == 200, r.text
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:Sensor:a", "urn:ngsi-ld:Sensor:b"]
    assert r.headers["NGSILD-Results-Count"] == "2"
    r = client.get(f"{T}?idPattern=.*:b$&attrs=temperature")
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:Sensor:b"]
    r = client.get(f"{T}?type=Sensor&timerel=after&timeAt=2024-01-01T00:05:00Z")
    assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:Sensor:a"]
    assert client.get(f"{T}?type=Other").json() == []


@pytest.mark.parametrize(
    "query",
    [
        "timerel=sometime&timeAt=2024-01-01T00:00:00Z",
        "timerel=before",
        "timerel=before&timeAt=yesterday",
        "timerel=between&timeAt=2024-01-01T00:00:00Z",
        "timeAt=2024-01-01T00:00:00Z",
        "lastN=0",
        "timeproperty=seenAt",
        "options=aggregatedValues",
        "options=aggregatedValues&aggrMethods=median",
        "options=aggregatedValues&aggrMethods=sum&aggrPeriodDuration=1D",
    ],
)
def test_bad_temporal_parameters_are_400(client, query):
    _history(client, [1])
    r = client.get(f"{T}/{SENSOR}?{query}")
    assert r.status_code == 400, (query, r.text)
    assert r.json()["type"].endswith("BadRequestData")


def test_unknown_entity_is_404(client):
    assert client.get(f"{T}/urn:ngsi-ld:Sensor:none").status_code == 404


VALUES = [3, 5, 5, 9, 2, 4, 10, 1, 1, 6]  # 10 readings, 10 minutes apart


def _sample_sd(xs):
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


@pytest.mark.parametrize(
    "method,expected",
    [
        ("totalCount", lambda xs: len(xs)),
        ("distinctCount", lambda xs: len(set(xs))),
        ("sum", sum),
        ("avg", lambda xs: sum(xs) / len(xs)),
        ("min", min),
        ("max", max),
        ("stddev", _sample_sd),
        ("sumsq", lambda xs: sum(x * x for x in xs)),
    ],
)
def test_each_aggregation_method_by_half_hour(client, method, expected):
    _history(client, VALUES)
    url = (
        f"{T}/{SENSOR}?options=aggregatedValues&aggrMethods={method}&aggrPeriodDuration=PT30M"
        "&timerel=after&timeAt=2023-12-31T23:59:59Z"
    )
    r = client.get(url)
    assert r.status_code == 200, r.text
    got = r.json()["temperature"]
    assert got["type"] == "Property"
    # periods start at timeAt (23:59:59): readings 0-2, 3-5, 6-8, 9
    groups = [VALUES[0:3], VALUES[3:6], VALUES[6:9], VALUES[9:]]
    assert [row[0] for row in got[method]] == pytest.approx([expected(g) for g in groups])
    assert got[method][0][1:] == ["2023-12-31T23:59:59Z", "2024-01-01T00:29:59Z"]


def test_aggregation_over_the_whole_range_and_several_methods(client):
    _history(client, VALUES)
    r = client.get(f"{T}/{SENSOR}?options=aggregatedValues&aggrMethods=sum,max,avg")
    got = r.json()["temperature"]
    assert got["sum"][0][0] == sum(VALUES)
    assert got["max"][0][0] == max(VALUES)
    assert math.isclose(got["avg"][0][0], sum(VALUES) / len(VALUES))
    assert got["sum"][0][1:] == ["2024-01-01T00:00:00Z", "2024-01-01T01:30:00Z"]


def test_temporal_create_append_and_instance_operations(client):
    body = {
        "id": "urn:ngsi-ld:Gauge:1",
        "type": "Gauge",
        "level": [
            {"type": "Property", "value": 1.5, "observedAt": "2024-05-01T00:00:00Z"},
            {"type": "Property", "value": 1.7, "observedAt": "2024-05-01T01:00:00Z"},
        ],
    }
    r = client.post(T, json=body)
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == "/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:Gauge:1"
    # temporal create does not create the current entity
    assert client.get(f"{E}/urn:ngsi-ld:Gauge:1").status_code == 404
    # again: adds instances, 204
    more = {
        "id": "urn:ngsi-ld:Gauge:1",
        "type": "Gauge",
        "level": [{"type": "Property", "value": 2.0, "observedAt": "2024-05-01T02:00:00Z"}],
    }
    assert client.post(T, json=more).status_code == 204
    r = client.post(
        f"{T}/urn:ngsi-ld:Gauge:1/attrs",
        json={"level": [{"type": "Property", "value": 2.4, "observedAt": "2024-05-01T03:00:00Z"}]},
    )
    assert r.status_code == 204, r.text
    got = client.get(f"{T}/urn:ngsi-ld:Gauge:1").json()["level"]
    assert [i["value"] for i in got] == [1.5, 1.7, 2.0, 2.4]
    first = got[0]["instanceId"]
    r = client.patch(
        f"{T}/urn:ngsi-ld:Gauge:1/attrs/level/{first}",
        json={"level": {"type": "Property", "value": 1.6, "observedAt": "2024-05-01T00:00:00Z"}},
    )
    assert r.status_code == 204, r.text
    assert client.get(f"{T}/urn:ngsi-ld:Gauge:1").json()["level"][0]["value"] == 1.6
    assert client.delete(f"{T}/urn:ngsi-ld:Gauge:1/attrs/level/{first}").status_code == 204
    assert client.delete(f"{T}/urn:ngsi-ld:Gauge:1/attrs/level/{first}").status_code == 404
    assert len(client.get(f"{T}/urn:ngsi-ld:Gauge:1").json()["level"]) == 3
    assert client.delete(f"{T}/urn:ngsi-ld:Gauge:1/attrs/level").status_code == 204
    assert "level" not in client.get(f"{T}/urn:ngsi-ld:Gauge:1").json()
    assert client.delete(f"{T}/urn:ngsi-ld:Gauge:1").status_code == 204
    assert client.get(f"{T}/urn:ngsi-ld:Gauge:1").status_code == 404


def test_temporal_create_needs_a_type_and_valid_instances(client):
    assert (
        client.post(T, json={"id": "urn:ngsi-ld:X:1", "level": [{"value": 1}]}).status_code == 400
    )
    bad = {
        "id": "urn:ngsi-ld:X:1",
        "type": "X",
        "level": [{"type": "Property", "value": 1, "observedAt": "nope"}],
    }
    assert client.post(T, json=bad).status_code == 400
    assert client.get(f"{T}/urn:ngsi-ld:X:1").status_code == 404


def test_history_rolls_back_with_a_failed_write(client):
    _history(client, [1])

    def refuse(_conn, _changes):
        raise RuntimeError("down")

    client.app.state.services.broker.add_change_listener(refuse)
    with pytest.raises(RuntimeError):
        client.patch(f"{E}/{SENSOR}/attrs", json=_reading(2, "2024-01-01T00:10:00Z"))
    client.app.state.services.broker._listeners.remove(refuse)
    assert [i["value"] for i in client.get(f"{T}/{SENSOR}").json()["temperature"]] == [1]
