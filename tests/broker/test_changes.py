"""Every entity write reaches the change listeners inside its own transaction."""

from __future__ import annotations

import pytest

from kizuna.broker.changes import EntityChange

TEMPERATURE = "https://uri.etsi.org/ngsi-ld/default-context/temperature"


def _listen(client) -> list[EntityChange]:
    seen: list[EntityChange] = []
    client.app.state.services.broker.add_change_listener(
        lambda _conn, changes: seen.extend(changes)
    )
    return seen


def test_create_update_and_delete_are_announced_with_before_and_after(client):
    seen = _listen(client)
    entity = {"id": "urn:ngsi-ld:Sensor:1", "type": "Sensor", "temperature": 20}
    assert client.post("/ngsi-ld/v1/entities", json=entity).status_code == 201
    patch = {"temperature": 21}
    url = "/ngsi-ld/v1/entities/urn:ngsi-ld:Sensor:1/attrs"
    assert client.patch(url, json=patch).status_code == 204
    assert client.delete("/ngsi-ld/v1/entities/urn:ngsi-ld:Sensor:1").status_code == 204

    created, updated, deleted = seen
    assert created.before is None and created.after.attrs[TEMPERATURE][0]["value"] == 20
    assert updated.before.attrs[TEMPERATURE][0]["value"] == 20
    assert updated.after.attrs[TEMPERATURE][0]["value"] == 21
    assert deleted.after is None and deleted.entity_id == "urn:ngsi-ld:Sensor:1"
    assert {c.tenant for c in seen} == {client.headers["NGSILD-Tenant"]}
    assert created.types == ["https://uri.etsi.org/ngsi-ld/default-context/Sensor"]


def test_batch_writes_announce_every_entity(client):
    seen = _listen(client)
    batch = [
        {"id": f"urn:ngsi-ld:Sensor:{i}", "type": "Sensor", "temperature": i} for i in range(5)
    ]
    assert client.post("/ngsi-ld/v1/entityOperations/upsert", json=batch).status_code == 201
    ids = [e["id"] for e in batch]
    assert client.post("/ngsi-ld/v1/entityOperations/delete", json=ids).status_code == 204
    assert [c.entity_id for c in seen] == ids + ids
    assert [c.after is None for c in seen] == [False] * 5 + [True] * 5


def test_a_failing_listener_rolls_the_write_back(client):
    def refuse(_conn, _changes):
        raise RuntimeError("listener down")

    client.app.state.services.broker.add_change_listener(refuse)
    entity = {"id": "urn:ngsi-ld:Sensor:9", "type": "Sensor", "temperature": 1}
    with pytest.raises(RuntimeError, match="listener down"):
        client.post("/ngsi-ld/v1/entities", json=entity)
    client.app.state.services.broker._listeners.clear()
    assert client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Sensor:9").status_code == 404
