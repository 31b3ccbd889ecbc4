"""Subscriptions over HTTP on SQLite and PostgreSQL: CRUD, bad input, notifications."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from kizuna.broker.subscriptions.models import outbox, subscriptions
from tests.broker.receiver import Receiver

BASE = "/ngsi-ld/v1/subscriptions"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _sub(url: str, **extra) -> dict:
    return {
        "type": "Subscription",
        "entities": [{"type": "Sensor"}],
        "notification": {"endpoint": {"uri": url}},
        **extra,
    }


def _count(client, table) -> int:
    """Rows of this test's tenant (PostgreSQL tests share one schema per session)."""
    engine = client.app.state.services.engine
    tenant = client.headers["NGSILD-Tenant"]
    with engine.connect() as conn:
        stmt = select(func.count()).select_from(table).where(table.c.tenant == tenant)
        return conn.execute(stmt).scalar_one()


def test_create_retrieve_list_update_delete(client):
    body = _sub("http://127.0.0.1:9/notify", id="urn:ngsi-ld:Subscription:s1", q="temperature>20")
    created = client.post(BASE, json=body)
    assert created.status_code == 201
    assert created.headers["location"] == f"{BASE}/urn:ngsi-ld:Subscription:s1"
    assert client.post(BASE, json=body).status_code == 409

    got = client.get(f"{BASE}/urn:ngsi-ld:Subscription:s1").json()
    assert got["status"] == "active"
    assert got["entities"] == [{"type": "Sensor"}]
    assert got["q"] == "temperature>20"
    assert got["notificationTrigger"] == ["attributeCreated", "attributeUpdated"]

    patch = {"isActive": False, "watchedAttributes": ["temperature"]}
    assert client.patch(f"{BASE}/urn:ngsi-ld:Subscription:s1", json=patch).status_code == 204
    got = client.get(f"{BASE}/urn:ngsi-ld:Subscription:s1").json()
    assert got["status"] == "paused" and got["watchedAttributes"] == ["temperature"]
    assert got["q"] == "temperature>20"

    listed = client.get(BASE, params={"count": "true"})
    assert listed.headers["NGSILD-Results-Count"] == "1"
    assert [s["id"] for s in listed.json()] == ["urn:ngsi-ld:Subscription:s1"]

    assert client.delete(f"{BASE}/urn:ngsi-ld:Subscription:s1").status_code == 204
    assert client.get(f"{BASE}/urn:ngsi-ld:Subscription:s1").status_code == 404
    assert client.delete(f"{BASE}/urn:ngsi-ld:Subscription:s1").status_code == 404


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"q": "temperature>>20"}, "bad q"),
        (
            {"geoQ": {"georel": "near;maxDistance==10", "geometry": "Blob", "coordinates": [1, 2]}},
            "geometry",
        ),
        ({"notification": {"endpoint": {"uri": "ftp://example.org/x"}}}, "scheme"),
        ({"notification": {"endpoint": {"uri": "mqtt://127.0.0.1:1883"}}}, "mqtt topic"),
        ({"timeInterval": 10, "watchedAttributes": ["temperature"]}, "interval + watched"),
        ({"timeInterval": 10, "throttling": 5}, "interval + throttling"),
        ({"throttling": -1}, "negative throttling"),
        ({"timeInterval": 1e308}, "interval past the calendar"),
        ({"throttling": 4e9}, "throttling over a century"),
        ({"expiresAt": "2000-01-01T00:00:00Z"}, "expired"),
        ({"entities": [{"id": "urn:x:1"}]}, "selector without type"),
        ({"entities": [{"type": "Sensor", "idPattern": "("}]}, "bad idPattern"),
        ({"notificationTrigger": ["somethingHappened"]}, "trigger"),
        (
            {"notification": {"endpoint": {"uri": "http://h/n"}, "attributes": ["a"], "pick": "a"}},
            "attrs+pick",
        ),
        ({"notification": {"endpoint": {"uri": "http://h/n"}, "format": "fancy"}}, "format"),
        ({"type": "Other"}, "type"),
        ({"id": "not a uri"}, "id"),
    ],
)
def test_bad_subscriptions_are_refused_and_nothing_is_stored(client, change, why):
    body = {**_sub("http://127.0.0.1:9/notify"), **change}
    response = client.post(BASE, json=body)
    assert response.status_code == 400, why
    assert response.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    assert _count(client, subscriptions) == 0


def test_bad_update_leaves_the_subscription_as_it_was(client):
    client.post(BASE, json=_sub("http://127.0.0.1:9/n", id="urn:ngsi-ld:Subscription:u"))
    url = f"{BASE}/urn:ngsi-ld:Subscription:u"
    assert client.patch(url, json={"q": "((("}).status_code == 400
    assert client.patch(url, json={"notification": None}).status_code == 400
    assert client.patch(url, json={"expiresAt": "2001-01-01T00:00:00Z"}).status_code == 400
    assert "q" not in client.get(url).json()


def test_notifications_follow_triggers_q_and_show_changes(client, receiver):
    sub = _sub(
        receiver.url,
        q="temperature>20",
        notification={
            "endpoint": {"uri": receiver.url, "receiverInfo": [{"key": "X-Token", "value": "t"}]},
            "showChanges": True,
        },
    )
    client.post(BASE, json=sub)
    entity = {"id": "urn:ngsi-ld:Sensor:1", "type": "Sensor", "temperature": 25, "name": "a"}
    client.post("/ngsi-ld/v1/entities", json=entity)
    attrs = "/ngsi-ld/v1/entities/urn:ngsi-ld:Sensor:1/attrs"
    client.patch(attrs, json={"temperature": 26})
    client.patch(attrs, json={"temperature": 10})  # q no longer holds: nothing sent
    first, second = sorted(receiver.wait_for(2), key=lambda b: b["triggerReason"])
    time.sleep(0.3)
    assert len(receiver.bodies) == 2
    assert first["type"] == "Notification" and first["triggerReason"] == "attributeCreated"
    assert first["data"][0]["temperature"] == {"type": "Property", "value": 25}
    assert second["data"][0]["temperature"]["previousValue"] == 25
    assert first["id"] != second["id"] and first["id"].startswith("urn:ngsi-ld:Notification:")
    headers = receiver.received[0][0]
    assert headers["X-Token"] == "t" and headers["Content-Type"] == "application/json"
    assert "NGSILD-Tenant" in headers
    status = client.get(f"{BASE}/{first['subscriptionId']}").json()["notification"]
    assert status["timesSent"] == 2 and status["status"] == "ok"


def test_watched_attributes_formats_and_entity_deletion(client, receiver):
    client.post(
        BASE,
        json=_sub(
            receiver.url,
            watchedAttributes=["temperature"],
            notificationTrigger=["attributeUpdated", "entityDeleted"],
            notification={
                "endpoint": {"uri": receiver.url},
                "format": "keyValues",
                "attributes": ["temperature"],
            },
        ),
    )
    client.post(
        "/ngsi-ld/v1/entities",
        json={"id": "urn:ngsi-ld:Sensor:2", "type": "Sensor", "temperature": 1, "name": "x"},
    )
    attrs = "/ngsi-ld/v1/entities/urn:ngsi-ld:Sensor:2/attrs"
    client.patch(attrs, json={"name": "y"})  # not watched
    client.patch(attrs, json={"temperature": 2})
    client.delete("/ngsi-ld/v1/entities/urn:ngsi-ld:Sensor:2")
    # Delivery is concurrent: notifications may arrive in any order.
    by_trigger = {b["triggerReason"]: b for b in receiver.wait_for(2)}
    updated, deleted = by_trigger["attributeUpdated"], by_trigger["entityDeleted"]
    assert updated["data"] == [{"id": "urn:ngsi-ld:Sensor:2", "type": "Sensor", "temperature": 2}]
    assert deleted["triggerReason"] == "entityDeleted"
    assert set(deleted["data"][0]) == {"id", "type", "deletedAt", "temperature"}


def test_geoq_and_id_pattern_filter_changes(client, receiver):
    client.post(
        BASE,
        json={
            "type": "Subscription",
            "entities": [{"type": "Gauge", "idPattern": "^urn:ngsi-ld:Gauge:A"}],
            "geoQ": {
                "georel": "near;maxDistance==1000",
                "geometry": "Point",
                "coordinates": [134.79, 34.77],
            },
            "notification": {"endpoint": {"uri": receiver.url}},
        },
    )
    near = {"type": "Point", "coordinates": [134.791, 34.771]}
    far = {"type": "Point", "coordinates": [135.5, 34.7]}
    for entity_id, where in (("A1", near), ("A2", far), ("B1", near)):
        client.post(
            "/ngsi-ld/v1/entities",
            json={
                "id": f"urn:ngsi-ld:Gauge:{entity_id}",
                "type": "Gauge",
                "location": {"type": "GeoProperty", "value": where},
                "level": 1,
            },
        )
    [only] = receiver.wait_for(1)
    time.sleep(0.3)
    assert len(receiver.bodies) == 1 and only["data"][0]["id"] == "urn:ngsi-ld:Gauge:A1"


def test_batch_writes_notify_once_per_subscription_and_failures_are_recorded(client):
    failing = Receiver(status=500)
    try:
        client.post(BASE, json=_sub(failing.url, id="urn:ngsi-ld:Subscription:f"))
        batch = [{"id": f"urn:ngsi-ld:Sensor:{i}", "type": "Sensor", "t": i} for i in range(5)]
        client.post("/ngsi-ld/v1/entityOperations/upsert", json=batch)
        [first] = failing.wait_for(1)
        assert len(first["data"]) == 5
        deadline = time.time() + 5
        while time.time() < deadline:
            status = client.get(f"{BASE}/urn:ngsi-ld:Subscription:f").json()["notification"]
            if status.get("status") == "failed":
                break
            time.sleep(0.05)
        assert status["status"] == "failed" and "lastFailure" in status
        assert _count(client, outbox) == 1  # kept for a retry
    finally:
        failing.close()


def test_a_rolled_back_write_leaves_no_notification(client, receiver):
    client.post(BASE, json=_sub(receiver.url))

    def refuse(_conn, _changes):
        raise RuntimeError("no")

    broker = client.app.state.services.broker
    broker.add_change_listener(refuse)
    with pytest.raises(RuntimeError):
        client.post(
            "/ngsi-ld/v1/entities", json={"id": "urn:ngsi-ld:Sensor:9", "type": "Sensor", "t": 1}
        )
    broker._listeners.remove(refuse)
    assert _count(client, outbox) == 0


def test_periodic_notifications(client, receiver):
    client.post(
        "/ngsi-ld/v1/entities", json={"id": "urn:ngsi-ld:Sensor:p", "type": "Sensor", "t": 1}
    )
    client.post(BASE, json=_sub(receiver.url, timeInterval=1))
    first, second = receiver.wait_for(2, timeout=8)
    assert first["triggerReason"] == "timeInterval"
    assert second["data"][0]["id"] == "urn:ngsi-ld:Sensor:p"
